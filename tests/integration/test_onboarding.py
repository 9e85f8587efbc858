"""``conveyor init`` and ``conveyor install-skills`` as real commands: the scaffold runs
a job end to end on SQLite, and neither command overwrites what it did not write
without ``--force`` (each refusal one line on stderr, exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.cli.skills import BEGIN, END, render, skills_text


def conveyor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1 with one clear line on stderr, no traceback."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], proc.stderr


# -- conveyor init ---------------------------------------------------------------------------


def test_init_scaffold_runs_a_job_with_a_real_worker(tmp_path: Path) -> None:
    out = ok(conveyor("init", "--path", "proj", cwd=tmp_path))
    proj = tmp_path / "proj"
    assert "created proj/jobs.py" in out and "created proj/.env.example" in out
    assert "conveyor worker jobs:queue" in out  # the worker command is printed
    assert "CONVEYOR_URL=sqlite:///conveyor.db" in (proj / ".env.example").read_text()

    # The printed steps, in the scaffold's directory, on its default store.
    ok(conveyor("--app", "jobs:queue", "migrate", cwd=proj))
    payload = json.dumps({"email": "ada@example.com"})
    enqueued = ok(
        conveyor("--app", "jobs:queue", "enqueue", "send-welcome", "--payload", payload, cwd=proj)
    )
    job_id = enqueued.strip()
    worker = conveyor("worker", "jobs:queue", "--once", cwd=proj)
    assert worker.returncode == 0, worker.stderr
    assert "processed 1 job(s)" in worker.stderr

    job = json.loads(
        ok(conveyor("--app", "jobs:queue", "jobs", "show", job_id, "--json", cwd=proj))
    )
    assert job["state"] == "completed"
    assert job["result"] == {"welcomed": "ada@example.com"}
    assert (proj / "conveyor.db").exists()


@pytest.mark.parametrize(
    ("backend", "url"),
    [("postgres", "postgresql://"), ("redis", "redis://")],
)
def test_init_sets_up_the_chosen_backend_in_a_package(
    tmp_path: Path, backend: str, url: str
) -> None:
    out = ok(conveyor("init", "--backend", backend, "--module", "app.jobs", cwd=tmp_path))
    assert f"pip install 'conveyor[{backend}]'" in out
    assert "conveyor worker app.jobs:queue" in out
    module = (tmp_path / "app" / "jobs.py").read_text()
    assert f'DEFAULT_URL = "{url}' in module
    assert (tmp_path / "app" / "__init__.py").exists()
    env = (tmp_path / ".env.example").read_text()
    assert f"CONVEYOR_URL={url}" in env
    compile(module, "jobs.py", "exec")


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text("# mine\n")
    refused(conveyor("init", cwd=tmp_path), "jobs.py already exists", "--force")
    assert (tmp_path / "jobs.py").read_text() == "# mine\n"
    assert not (tmp_path / ".env.example").exists()  # nothing written at all

    ok(conveyor("init", "--force", cwd=tmp_path))
    assert "send-welcome" in (tmp_path / "jobs.py").read_text()


def test_init_refuses_a_module_name_python_cannot_import(tmp_path: Path) -> None:
    proc = conveyor("init", "--module", "my-jobs", cwd=tmp_path)
    assert proc.returncode == 2
    assert "not a Python module name" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


# -- conveyor install-skills -----------------------------------------------------------------


def test_skills_text_is_one_source_and_covers_the_rules() -> None:
    text = skills_text()
    for rule in (
        "JSON",
        "idempotent",
        "ctx.step",
        "positional",
        "ctx.wait_for_token",
        "connection=",
        "idempotency_key=",
        "conveyor worker",
        "sqlite:///:memory:",
        "conveyor.testing",
    ):
        assert rule in text, rule
    for fmt in ("agents", "claude", "cursor"):
        assert text.strip().splitlines()[-1] in render(fmt)


@pytest.mark.parametrize(
    ("fmt", "target"),
    [("claude", ".claude/skills/conveyor/SKILL.md"), ("cursor", ".cursor/rules/conveyor.mdc")],
)
def test_install_skills_writes_its_file_and_never_clobbers_another(
    tmp_path: Path, fmt: str, target: str
) -> None:
    path = tmp_path / target
    assert f"created {path}" in ok(
        conveyor("install-skills", "--format", fmt, "--path", str(tmp_path), cwd=tmp_path)
    )
    content = path.read_text()
    assert content.startswith("---\n") and "description: " in content
    assert "ctx.step" in content
    # Again: nothing changes.
    assert "up to date" in ok(
        conveyor("install-skills", "--format", fmt, "--path", str(tmp_path), cwd=tmp_path)
    )

    path.write_text("my own rules\n")
    refused(
        conveyor("install-skills", "--format", fmt, "--path", str(tmp_path), cwd=tmp_path),
        "already exists",
        "--force",
    )
    assert path.read_text() == "my own rules\n"
    ok(
        conveyor(
            "install-skills", "--format", fmt, "--path", str(tmp_path), "--force", cwd=tmp_path
        )
    )
    assert path.read_text() == content


def test_install_skills_adds_one_marked_section_to_agents_md(tmp_path: Path) -> None:
    agents = tmp_path / "AGENTS.md"
    agents.write_text("# My project\n\nUse tabs.")
    assert "added a conveyor section" in ok(conveyor("install-skills", cwd=tmp_path))
    first = agents.read_text()
    assert first.startswith("# My project\n\nUse tabs.\n\n" + BEGIN)
    assert first.count(BEGIN) == 1 and first.rstrip().endswith(END)
    assert "\n# " not in first[len("# My project") :]  # its headings sit under the file's title

    assert "up to date" in ok(conveyor("install-skills", cwd=tmp_path))  # idempotent
    assert agents.read_text() == first

    # The user's own content after the section stays; an edited section is not replaced.
    agents.write_text(first.replace("## The rules", "## Our rules") + "\nMore of mine.\n")
    refused(conveyor("install-skills", cwd=tmp_path), "differs", "--force")
    assert "## Our rules" in agents.read_text()
    ok(conveyor("install-skills", "--force", cwd=tmp_path))
    assert agents.read_text() == first + "\nMore of mine.\n"


def test_install_skills_creates_agents_md_and_needs_an_existing_directory(
    tmp_path: Path,
) -> None:
    ok(conveyor("install-skills", cwd=tmp_path))
    assert (tmp_path / "AGENTS.md").read_text() == render("agents")
    refused(conveyor("install-skills", "--path", "missing", cwd=tmp_path), "not a directory")
