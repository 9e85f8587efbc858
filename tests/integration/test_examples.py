"""The README's main job (examples/quickstart.py) runs on a fresh SQLite file and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_to_completion(tmp_path: Path) -> None:
    env = {**os.environ, "CONVEYOR_URL": f"sqlite:///{tmp_path / 'quickstart.db'}"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "retrying" in out and "progress" in out  # retries and progress are visible
    assert "all done: {'completed': 10, 'failed': 1}" in out


def _run_example(name: str, tmp_path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_approval_flow_example_waits_for_a_human_and_times_out(tmp_path: Path) -> None:
    out = _run_example("durable_approval.py", tmp_path)
    assert out.count("ask: refund order") == 2  # asked once per order, never on a re-run
    assert "human: approving order 1 (True)" in out
    assert "refund: order 1, 25 EUR" in out and "refund: order 2" not in out
    assert "order 1: {'refunded': True, 'amount': 25}" in out
    assert "order 2: {'refunded': False, 'reason': 'no answer in 2s'}" in out


def test_the_drip_campaign_example_sends_three_emails_once_each(tmp_path: Path) -> None:
    out = _run_example("drip_campaign.py", tmp_path)
    for email in ("ada@example.com", "bob@example.com"):
        sent = [line.split()[-3] for line in out.splitlines() if line.endswith(f"-> {email}")]
        assert sent == ["welcome", "tips", "offer"]
        assert f"{email}: sent ['welcome', 'tips', 'offer']" in out
    times = [float(line[1:].split("s")[0]) for line in out.splitlines() if "-> ada" in line]
    assert times[1] - times[0] >= 0.5 and times[2] - times[1] >= 0.5  # the sleeps held
