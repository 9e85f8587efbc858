"""Tags: stored in order without duplicates; list_jobs with tag_mode any/all/exact/none."""

from __future__ import annotations

import pytest

import conveyor

TAGGED = {
    "a": ["x"],
    "ab": ["x", "y"],
    "abc": ["x", "y", "z"],
    "c": ["z"],
    "none": [],
    "ba": ["y", "x"],
}


async def _tagged(queue: conveyor.Queue) -> dict[int, str]:
    return {await queue.enqueue("tagged", key, tags=tags): key for key, tags in TAGGED.items()}


@pytest.mark.parametrize(
    ("tags", "mode", "expected"),
    [
        (["x"], "any", {"a", "ab", "abc", "ba"}),
        (["x", "z"], "any", {"a", "ab", "abc", "ba", "c"}),
        (["x", "y"], "all", {"ab", "abc", "ba"}),
        (["x", "x"], "all", {"a", "ab", "abc", "ba"}),
        (["z", "y", "x"], "all", {"abc"}),
        (["x", "y"], "exact", {"ab", "ba"}),
        (["y", "x", "y"], "exact", {"ab", "ba"}),
        (["x"], "exact", {"a"}),
        (["x"], "none", {"c", "none"}),
        (["x", "z"], "none", {"none"}),
        (["missing"], "any", set()),
        (["missing"], "none", set(TAGGED)),
    ],
)
async def test_list_jobs_by_tags(
    queue: conveyor.Queue, tags: list[str], mode: str, expected: set[str]
) -> None:
    by_id = await _tagged(queue)
    found = {by_id[j.id] for j in await queue.list_jobs(tags=tags, tag_mode=mode)}
    assert found == expected


async def test_default_tag_mode_is_any(queue: conveyor.Queue) -> None:
    by_id = await _tagged(queue)
    assert {by_id[j.id] for j in await queue.list_jobs(tags=["z"])} == {"abc", "c"}


async def test_tags_combine_with_other_filters(queue: conveyor.Queue) -> None:
    a = await queue.enqueue("n1", None, tags=["t"], tenant="ten")
    await queue.enqueue("n2", None, tags=["t"], tenant="ten")
    await queue.enqueue("n1", None, tags=["t"], tenant="other")
    await queue.enqueue("n1", None, tags=["u"], tenant="ten")
    assert [j.id for j in await queue.list_jobs(name="n1", tags=["t"], tenant="ten")] == [a]


async def test_tags_round_trip_in_order_without_duplicates(queue: conveyor.Queue) -> None:
    job = await queue.get_job(await queue.enqueue("t", None, tags=["z", "a", "z", "m", "a"]))
    assert job is not None and job.tags == ("z", "a", "m")
    job = await queue.get_job(await queue.enqueue("t", None, tags=("tuple", "ok")))
    assert job is not None and job.tags == ("tuple", "ok")


async def test_tags_are_case_and_space_sensitive(queue: conveyor.Queue) -> None:
    by_id = {
        await queue.enqueue("t", None, tags=[tag]): tag for tag in ["Tag", "tag", "tag ", " tag"]
    }
    for tag in by_id.values():
        assert [by_id[j.id] for j in await queue.list_jobs(tags=[tag])] == [tag]


async def test_tags_are_visible_to_the_handler(queue: conveyor.Queue) -> None:
    seen: list[tuple[str, ...]] = []

    @queue.job("tagged-run")
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        seen.append(ctx.tags)

    await handler.enqueue(tags=["one", "two"])
    await queue.worker().run_once()
    assert seen == [("one", "two")]
