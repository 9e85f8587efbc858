"""``conveyor install-skills``: teach a coding agent conveyor's API and rules.

The text is one package data file, ``skills.md`` beside this module; each format wraps
it for its agent:

- ``agents``: a section of ``AGENTS.md`` between ``<!-- conveyor:begin -->`` and
  ``<!-- conveyor:end -->`` markers, appended to the file's own content;
- ``claude``: the skill ``.claude/skills/conveyor/SKILL.md``;
- ``cursor``: the rule ``.cursor/rules/conveyor.mdc``.

Content that is not conveyor's (a file of another origin, a section someone edited) is
never overwritten without ``--force``; writing the same text again changes nothing.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import click

from conveyor.cli.app import fail

__all__ = ["FORMATS", "install_skills", "render", "skills_text"]

FORMATS = ("agents", "claude", "cursor")
TARGETS = {
    "agents": Path("AGENTS.md"),
    "claude": Path(".claude", "skills", "conveyor", "SKILL.md"),
    "cursor": Path(".cursor", "rules", "conveyor.mdc"),
}
BEGIN = "<!-- conveyor:begin (written by `conveyor install-skills`; edit outside these markers) -->"
END = "<!-- conveyor:end -->"
_BEGIN_PREFIX = "<!-- conveyor:begin"
SUMMARY = (
    "Use when writing, enqueueing, testing or running background jobs with conveyor "
    "(durable jobs on SQLite, PostgreSQL or Redis): its API, the rules its handlers must "
    "follow (JSON payloads, idempotency, stable step names, positional waits, "
    "transactional enqueue), workers and tests."
)


def skills_text() -> str:
    """The rules file's body (``conveyor/cli/skills.md``)."""
    return resources.files("conveyor.cli").joinpath("skills.md").read_text(encoding="utf-8")


def _demote(markdown: str) -> str:
    """Every heading one level down (outside code fences): a section of AGENTS.md must
    not bring a second top-level title."""
    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            line = "#" + line
        out.append(line)
    return "".join(out)


def render(fmt: str) -> str:
    """What ``fmt`` writes: the whole file (claude, cursor) or the marked section (agents)."""
    body = skills_text().strip() + "\n"
    summary = json.dumps(SUMMARY)  # a double-quoted YAML scalar: the text holds ": "
    if fmt == "agents":
        return f"{BEGIN}\n{_demote(body)}{END}\n"
    if fmt == "claude":
        return f"---\nname: conveyor\ndescription: {summary}\n---\n\n{body}"
    if fmt == "cursor":
        return f"---\ndescription: {summary}\nglobs:\nalwaysApply: false\n---\n\n{body}"
    raise ValueError(f"unknown format {fmt!r}")


def _section(text: str) -> tuple[int, int] | None:
    """Where the marked conveyor section is in ``text`` (start, end past its END line), or
    None when there is none; exit 1 when the markers are broken."""
    start = text.find(_BEGIN_PREFIX)
    if start < 0:
        return None
    end = text.find(END, start)
    if end < 0 or text.count(_BEGIN_PREFIX) > 1:
        fail("AGENTS.md has broken conveyor:begin / conveyor:end markers: fix them by hand")
    end += len(END)
    if text.startswith("\n", end):
        end += 1
    return start, end


def _install_agents(target: Path, force: bool) -> str:
    section = render("agents")
    if not target.exists():
        target.write_text(section, encoding="utf-8")
        return "created"
    text = target.read_text(encoding="utf-8")
    where = _section(text)
    if where is None:
        if not text or text.endswith("\n\n"):
            separator = ""
        else:  # one blank line between the file's own content and the section
            separator = "\n" if text.endswith("\n") else "\n\n"
        target.write_text(text + separator + section, encoding="utf-8")
        return "added a conveyor section to"
    start, end = where
    if text[start:end] == section:
        return "up to date:"
    if not force:
        fail(
            f"{target} has a conveyor section that differs from this version's "
            "(edited, or from another version): use --force to replace it"
        )
    target.write_text(text[:start] + section + text[end:], encoding="utf-8")
    return "replaced the conveyor section of"


def _install_file(target: Path, fmt: str, force: bool) -> str:
    content = render(fmt)
    if target.exists():
        if target.read_text(encoding="utf-8", errors="replace") == content:
            return "up to date:"
        if not force:
            fail(f"{target} already exists and differs: use --force to overwrite it")
        target.write_text(content, encoding="utf-8")
        return "overwrote"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")
    return "created"


@click.command("install-skills")
@click.option(
    "--path",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The project's root directory.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="agents",
    show_default=True,
    help="agents: a section of AGENTS.md; claude: .claude/skills/conveyor/SKILL.md; "
    "cursor: .cursor/rules/conveyor.mdc.",
)
@click.option("--force", is_flag=True, help="Replace a file or section that differs.")
def install_skills(directory: Path, fmt: str, force: bool) -> None:
    """Write a rules file that teaches a coding agent conveyor's API and rules."""
    if not directory.is_dir():
        fail(f"{directory} is not a directory")
    target = directory / TARGETS[fmt]
    try:
        if fmt == "agents":
            done = _install_agents(target, force)
        else:
            done = _install_file(target, fmt, force)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot write {target}: {getattr(exc, 'strerror', None) or exc}")
    click.echo(f"{done} {target}")
