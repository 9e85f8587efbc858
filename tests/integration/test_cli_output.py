"""What the ``conveyor`` command prints (values shown as they are, never as rich markup),
and read commands that must not create a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("NO_COLOR", None)
    return {**env, **extra}


def conveyor_cmd(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=_env(**(env or {})),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- square brackets and other markup-looking text ---------------------------------------------


@pytest.fixture
def marked_store(tmp_path: Path) -> str:
    """A SQLite store with a job named ``reindex[users]`` that failed with bracketed text."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    code = textwrap.dedent(
        """
        import asyncio, conveyor
        q = conveyor.Queue()

        @q.job("reindex[users]")
        async def reindex(payload, ctx):
            ctx.log.info("log [red]line[/red]")
            raise ValueError("bad [bold]row[/bold] :smile:")

        async def main():
            await q.enqueue("reindex[users]", {"text": "[bold]x[/bold] :smile:"})
            await q.worker().run_once()
            await q.close()
        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", code], env=_env(CONVEYOR_URL=url), check=True)
    return url


def test_tables_and_messages_show_values_as_they_are(tmp_path: Path, marked_store: str) -> None:
    env = {"CONVEYOR_URL": marked_store}
    r = conveyor_cmd("jobs", "list", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "reindex[users]" in r.stdout
    assert "ValueError: bad [bold]row[/bold] :smile:" in r.stdout

    r = conveyor_cmd("jobs", "show", "1", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "reindex[users]" in r.stdout
    assert '{"text": "[bold]x[/bold] :smile:"}' in r.stdout  # the payload, not rewritten
    assert "attempt 1 ValueError: bad [bold]row[/bold] :smile:" in r.stdout
    assert "info: log [red]line[/red]" in r.stdout

    r = conveyor_cmd("cron", "remove", "nightly[eu]", cwd=tmp_path, env=env)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: no schedule named 'nightly[eu]'"


def test_a_missing_extra_is_named_with_its_brackets(tmp_path: Path) -> None:
    """``pip install 'conveyor[redis]'`` when the driver cannot be imported."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None  # as if conveyor[redis] were not installed
        from conveyor.cli import main
        main(["--url", "redis://127.0.0.1:6379/0", "stats"])
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 1
    assert "pip install 'conveyor[redis]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_quickstart_writes_no_colour_codes_when_piped(tmp_path: Path) -> None:
    env = _env(CONVEYOR_URL=f"sqlite:///{tmp_path / 'quickstart.db'}")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stdout
    assert "\x1b" not in proc.stdout


# -- read commands never create a store ----------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("jobs", "list"),
        ("jobs", "list", "--json"),
        ("jobs", "show", "1"),
        ("jobs", "retry", "1"),
        ("jobs", "cancel", "1"),
        ("stats",),
        ("cron", "list"),
        ("cron", "pause", "digest"),
    ],
)
def test_read_commands_on_a_missing_sqlite_file_fail_and_create_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    r = conveyor_cmd(*command, cwd=tmp_path)  # no CONVEYOR_URL: ./conveyor.db
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(tmp_path / "conveyor.db") in line
    assert os.listdir(tmp_path) == []


def test_read_commands_name_the_missing_file_of_an_app_or_url(tmp_path: Path) -> None:
    (tmp_path / "readapp.py").write_text(
        "import conveyor\nqueue = conveyor.Queue('sqlite:///data/app.db')\n"
    )
    r = conveyor_cmd("--app", "readapp:queue", "stats", cwd=tmp_path)
    assert r.returncode == 1 and str(tmp_path / "data" / "app.db") in r.stderr
    r = conveyor_cmd("--url", "sqlite:///elsewhere.db", "jobs", "list", cwd=tmp_path)
    assert r.returncode == 1 and str(tmp_path / "elsewhere.db") in r.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "elsewhere.db").exists()


def test_migrate_and_worker_still_create_the_store(tmp_path: Path) -> None:
    r = conveyor_cmd("migrate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "conveyor.db").exists()
    r = conveyor_cmd("stats", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["queued"] == 0

    (tmp_path / "workerapp.py").write_text(
        "import conveyor\nqueue = conveyor.Queue('sqlite:///fresh.db')\n"
    )
    r = conveyor_cmd("worker", "workerapp:queue", "--once", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fresh.db").exists()
