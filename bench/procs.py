"""Worker subprocesses in their own process group, and CPU accounting from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import ROOT, STOP_GRACE_S

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def worker_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for worker processes: the repo root importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class WorkerGroup:
    """Every worker command of one scenario phase, in one new process group."""

    commands: Sequence[Sequence[str]]
    env: Mapping[str, str]
    log_path: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started_at: float = 0.0  # time.time() at spawn

    @property
    def pgid(self) -> int:
        return self.procs[0].pid

    def start(self) -> WorkerGroup:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the children keep it open
        self.started_at = time.time()
        try:
            for cmd in self.commands:
                group = 0 if not self.procs else self.pgid  # the first one leads the group
                self.procs.append(
                    subprocess.Popen(
                        list(cmd),
                        cwd=ROOT,
                        env=worker_env(self.env),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        process_group=group,
                    )
                )
        finally:
            log.close()
        return self

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """SIGTERM the whole group, SIGKILL whatever is left after the grace period."""
        if not self.procs:
            return
        _signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        while _group_members(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)  # grandchildren (pool members) finishing their own shutdown
        _signal_group(self.pgid, signal.SIGKILL)
        for p in self.procs:
            p.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU of the group's live members, reaped children included."""
        return sum(_proc_cpu(pid) for pid in _group_members(self.pgid))

    def process_count(self) -> int:
        return len(_group_members(self.pgid))

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ..." - comm may contain spaces: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def _proc_cpu(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # after the comm: state=0 ppid=1 pgrp=2 ... utime=11 stime=12 cutime=13 cstime=14
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _CLK_TCK


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores; servers included)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _CLK_TCK


def run_checked(cmd: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    """Run a short helper command, return its stdout, raise with its stderr on failure."""
    proc = subprocess.run(
        list(cmd), cwd=ROOT, env=worker_env(env or {}), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def bin_path(name: str) -> str:
    """A console script of the running interpreter's environment (bench/.venv/bin/NAME)."""
    return str(Path(sys.executable).parent / name)
