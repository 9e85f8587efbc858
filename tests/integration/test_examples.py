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
