"""``python -m bench``: run every system through every scenario, interleaved, and report.

python -m bench                               # everything, 3 repetitions
python -m bench --only conveyor-postgres,pgqueuer -s B
python -m bench --jobs-scale 0.05 --reps 1    # a quick smoke run
python -m bench --list
python -m bench --report bench/results/<stamp>/results.json [later.json ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import cleanup, machine, report
from bench.config import RESULTS, ROOT, WORK
from bench.systems import SYSTEMS, adapter_class

CHILD_TIMEOUT_S = 3600
PUBLISHED = ROOT / "docs" / "benchmarks-results.json"  # the one results file kept in git


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--list", action="store_true", help="list the systems and exit")
    p.add_argument("--only", default="", help="comma-separated systems (default: all)")
    p.add_argument("-s", "--scenarios", default="ABCDE", help="e.g. B or A,C (default: ABCDE)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default: 3)")
    p.add_argument("--jobs-scale", type=float, default=1.0, help="multiply every job count")
    p.add_argument("--out", type=Path, help="results directory (default: bench/results/<stamp>)")
    p.add_argument("--publish", action="store_true",
                   help=f"copy the results to {PUBLISHED.relative_to(ROOT)} (automatic for a "
                   "full run: every system and scenario at --jobs-scale 1)")  # fmt: skip
    p.add_argument("--keep-work", action="store_true", help="keep bench/.work/<stamp>")
    p.add_argument("--report", nargs="+", type=Path, metavar="JSON",
                   help="only render tables from results files (later ones override)")  # fmt: skip
    return p.parse_args(argv)


def _list() -> int:
    print(f"{'system':<18} {'backend':<9} {'scenarios':<9} configuration")
    for name in SYSTEMS:
        try:
            cls = adapter_class(name)
            config = cls.config if isinstance(cls.config, str) else cls().config
            print(f"{name:<18} {cls.family:<9} {''.join(sorted(cls.scenarios)):<9} {config}")
        except Exception as exc:  # e.g. conveyor not importable yet
            print(f"{name:<18} {'?':<9} {'?':<9} NOT IMPORTABLE: {type(exc).__name__}: {exc}")
    return 0


def _selected(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    systems = [s.strip() for s in args.only.split(",") if s.strip()] or list(SYSTEMS)
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(unknown)} (see --list)")
    scenarios = [c for c in args.scenarios.upper() if c in "ABCDE"]
    if not scenarios:
        raise SystemExit("no scenario selected: use letters A-E")
    return systems, scenarios


def _supported(system: str) -> frozenset[str]:
    try:
        return adapter_class(system).scenarios
    except Exception:
        return frozenset("ABCDE")  # let the child record the import error


def _run_child(
    system: str, scenario: str, rep: int, scale: float, out: Path, work: Path
) -> dict[str, Any]:
    raw = out / "raw" / f"{system}-{scenario}-r{rep}.json"
    workdir = work / f"{system}-{scenario}-r{rep}"
    cmd = [sys.executable, "-m", "bench.child", system, scenario, str(rep),
           f"--scale={scale}", f"--workdir={workdir}", f"--out={raw}"]  # fmt: skip
    # Same process group as the driver: Ctrl-C reaches the child too, and it cleans up.
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        code = proc.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the child cancels its cell and cleans up
        code = _wait_or_kill(proc)
    except KeyboardInterrupt:
        _wait_or_kill(proc)
        raise
    if raw.exists():
        cell: dict[str, Any] = json.loads(raw.read_text())
        return cell
    return {"system": system, "scenario": scenario, "rep": rep, "family": "?",
            "error": f"child exited {code} without a result"}  # fmt: skip


def _wait_or_kill(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _one_line(cell: dict[str, Any]) -> str:
    head = f"r{cell['rep']} {cell['system']:<18} {cell['scenario']}"
    if cell.get("error"):
        return f"{head}  FAILED: {cell['error']}"
    parts = []
    for row in cell["rows"]:
        value = row["value"]
        unit = "ms p50" if cell["scenario"] == "C" else "jobs/s"
        parts.append(f"{row['variant']}: {report.fmt_rate(value)} {unit}")
    warn = "".join(f"  WARNING: {r['warning']}" for r in cell["rows"] if r.get("warning"))
    return f"{head}  " + "; ".join(parts) + f"  ({cell.get('wall_s', 0):.0f}s){warn}"


def _publish(results: dict[str, Any]) -> None:
    PUBLISHED.parent.mkdir(parents=True, exist_ok=True)
    PUBLISHED.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"published: {PUBLISHED.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.list:
        return _list()
    if args.report:
        merged = report.merge(args.report)
        sys.stdout.write(report.render(merged))
        if args.publish:
            _publish(merged)
        return 0
    systems, scenarios = _selected(args)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / run_id
    work = WORK / run_id
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "run_id": run_id,
        "scale": args.jobs_scale,
        "reps": args.reps,
        "systems": systems,
        "scenarios": scenarios,
        "machine": machine.describe(),
        "cells": [],
    }
    started = time.time()
    print(f"bench {run_id}: {len(systems)} systems x {''.join(scenarios)} x {args.reps} reps")
    try:
        for rep in range(1, args.reps + 1):  # rep 1 of every system before rep 2 of any
            for system in systems:
                for scenario in scenarios:
                    if scenario not in _supported(system):
                        continue
                    cell = _run_child(system, scenario, rep, args.jobs_scale, out, work)
                    results["cells"].append(cell)
                    print(_one_line(cell), flush=True)
    finally:
        cleanup.everything()
        results["wall_s"] = time.time() - started
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        text = report.render(results)
        (out / "report.md").write_text(text)
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    full = set(systems) == set(SYSTEMS) and len(scenarios) == 5 and args.jobs_scale == 1.0
    if args.publish or full:
        _publish(results)
    print()
    print(text)
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0
