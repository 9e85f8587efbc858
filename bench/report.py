"""Markdown tables from a results JSON: one table per scenario variant, each system's median
(min, max) and its ratio to conveyor on the same backend family, worked out per repetition.

Usage: python -m bench.report RESULTS.json [MORE.json ...]   (later files override cells)
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.machine import summary
from bench.scenarios import TITLES
from bench.stats import median
from bench.systems import SYSTEMS, baseline

Cell = dict[str, Any]
Row = dict[str, Any]


def fmt_rate(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_ms(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:,.1f}"


def fmt_secs(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.2f}"


def fmt_ratio(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.2f}x"


def _collect(cells: Iterable[Cell]) -> dict[tuple[str, str], dict[str, dict[int, Row]]]:
    """(scenario, variant) -> system -> rep -> row."""
    table: dict[tuple[str, str], dict[str, dict[int, Row]]] = defaultdict(lambda: defaultdict(dict))
    for cell in cells:
        for row in cell.get("rows") or []:
            table[(cell["scenario"], row["variant"])][cell["system"]][cell["rep"]] = {
                **row,
                "family": cell["family"],
            }
    return table


def _ratio(reps: dict[int, Row], base: dict[int, Row] | None, key: str) -> float | None:
    if not base:
        return None
    ratios = [
        r[key] / base[rep][key]
        for rep, r in reps.items()
        if rep in base and r.get(key) and base[rep].get(key)
    ]
    return median(ratios) if ratios else None


def _spread(reps: dict[int, Row], key: str, fmt: Callable[[float | None], str]) -> list[str]:
    values = [r[key] for r in reps.values() if r.get(key) is not None]
    if not values:
        return ["-", "-", "-"]
    return [fmt(median(values)), fmt(min(values)), fmt(max(values))]


def _med(reps: dict[int, Row], key: str) -> float | None:
    values = [r[key] for r in reps.values() if r.get(key) is not None]
    return median(values) if values else None


def _systems_in_order(by_system: dict[str, dict[int, Row]]) -> list[str]:
    return [s for s in SYSTEMS if s in by_system] + sorted(set(by_system) - set(SYSTEMS))


def _table(header: list[str], rows: list[list[str]], text_columns: int = 2) -> str:
    """The first ``text_columns`` are left-aligned, the rest (numbers) right-aligned,
    except a trailing "bulk API" text column."""
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    if header[-1] == "bulk API":
        align[-1] = "---"
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _throughput_table(scenario: str, by_system: dict[str, dict[int, Row]]) -> str:
    drain = scenario in "BDE"
    header = ["system", "backend", "jobs", "median", "min", "max", "vs conveyor"]
    if drain:
        header += ["procs x conc.", "incl. start-up", "start->first job s", "worker CPU ms/1k",
                   "machine CPU ms/1k", "dups"]  # fmt: skip
    elif any("api" in r for reps in by_system.values() for r in reps.values()):
        header += ["bulk API"]
    rows = []
    for system in _systems_in_order(by_system):
        reps = by_system[system]
        any_row = next(iter(reps.values()))
        base = by_system.get(baseline(any_row["family"]))
        line = [system, any_row["family"], f"{any_row['jobs']:,}"]
        line += [*_spread(reps, "value", fmt_rate), fmt_ratio(_ratio(reps, base, "value"))]
        if drain:
            line += [
                f"{any_row['processes']} x {any_row['concurrency']}",
                fmt_rate(_med(reps, "incl_startup")),
                fmt_secs(_med(reps, "startup_s")),
                fmt_rate(_med(reps, "worker_cpu_ms_per_1k")),
                fmt_rate(_med(reps, "machine_cpu_ms_per_1k")),
                str(max(r.get("duplicates", 0) for r in reps.values())),
            ]
        elif "bulk API" in header:
            line.append(any_row.get("api", ""))
        rows.append(line)
    return _table(header, rows)


def _latency_table(by_system: dict[str, dict[int, Row]]) -> str:
    header = ["system", "backend", "p50 median", "p50 min-max", "p95 median", "p99 median",
              "p99 min-max", "p50 vs conveyor", "p99 vs conveyor", "first after idle",
              "enqueue call p50"]  # fmt: skip
    rows = []
    for system in _systems_in_order(by_system):
        reps = by_system[system]
        any_row = next(iter(reps.values()))
        base = by_system.get(baseline(any_row["family"]))
        p50 = _spread(reps, "p50_ms", fmt_ms)
        p99 = _spread(reps, "p99_ms", fmt_ms)
        rows.append([
            system, any_row["family"], p50[0], f"{p50[1]}-{p50[2]}",
            fmt_ms(_med(reps, "p95_ms")), p99[0], f"{p99[1]}-{p99[2]}",
            fmt_ratio(_ratio(reps, base, "p50_ms")), fmt_ratio(_ratio(reps, base, "p99_ms")),
            fmt_ms(_med(reps, "first_after_idle_ms")), fmt_ms(_med(reps, "enqueue_call_p50_ms")),
        ])  # fmt: skip
    return _table(header, rows)


def render(results: dict[str, Any]) -> str:
    cells: list[Cell] = results["cells"]
    reps = sorted({c["rep"] for c in cells})
    out = [
        f"Run `{results.get('run_id', '?')}`: {len(reps)} repetition(s), "
        f"jobs scale {results.get('scale', 1.0):g}, {results.get('wall_s', 0) / 60:.1f} min wall.",
        "",
        f"Machine: {summary(results['machine'])}.",
        "",
        "Packages: "
        + ", ".join(f"{k} {v}" for k, v in results["machine"]["packages"].items())
        + ".",
        "",
        "Each cell: median of the repetitions (min, max). *vs conveyor* is the median over "
        "repetitions of (system ÷ conveyor on the same backend, same repetition): above 1 "
        "is faster (throughput) or slower (latency) than conveyor.",
    ]
    table = _collect(cells)
    for scenario in "ABCDE":
        variants = [v for (s, v) in table if s == scenario]
        if not variants:
            continue
        out += ["", f"### {TITLES[scenario]}"]
        for variant in variants:
            by_system = table[(scenario, variant)]
            out += ["", f"**{variant}**", ""]
            out.append(
                _latency_table(by_system)
                if scenario == "C"
                else _throughput_table(scenario, by_system)
            )
    warnings = []
    for c in cells:
        for row in c.get("rows") or []:
            issues = [row["warning"]] if row.get("warning") else []
            if row.get("duplicates"):
                issues.append(f"{row['duplicates']} duplicate executions")
            if issues:
                where = f"{c['system']} {c['scenario']} ({row['variant']}) rep {c['rep']}"
                warnings.append(f"- {where}: {'; '.join(issues)}")
    if warnings:
        out += ["", "### Checks that failed", "", *warnings]
    failed = [c for c in cells if c.get("error")]
    if failed:
        out += ["", "### Failures", ""]
        out += [f"- {c['system']} {c['scenario']} rep {c['rep']}: {c['error']}" for c in failed]
    return "\n".join(out) + "\n"


def merge(paths: Iterable[Path]) -> dict[str, Any]:
    """Later files' cells replace earlier ones for the same (system, scenario, rep)."""
    merged: dict[str, Any] = {}
    cells: dict[tuple[str, str, int], Cell] = {}
    run_ids, wall = [], 0.0
    for path in paths:
        data = json.loads(Path(path).read_text())
        merged = {**merged, **{k: v for k, v in data.items() if k != "cells"}}
        run_ids.append(str(data.get("run_id", path)))
        wall += float(data.get("wall_s", 0.0))
        for cell in data["cells"]:
            cells[(cell["system"], cell["scenario"], cell["rep"])] = cell
    merged["cells"] = list(cells.values())
    merged["run_id"], merged["wall_s"] = " + ".join(run_ids), wall
    return merged


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    sys.stdout.write(render(merge(Path(p) for p in argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
