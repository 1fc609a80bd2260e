"""Regenerate the table in docs/reference/benchmarks.md from bench/results/latest.json (never typed by hand).

    python -m bench.table          # rewrites the block between the bench-table markers in docs/reference/benchmarks.md
    python -m bench.table --results bench/results/build.json --block build   # the bench-table:build block
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "latest.json"
PAGE = REPO / "docs" / "reference" / "benchmarks.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


_UNITS = (("_msgs_per_s", " msg/s"), ("_per_s", "/s"), ("_ms", " ms"), ("_mb", " MB"), ("_s", " s"))


def _split_unit(name: str) -> tuple[str, str]:
    for suffix, unit in _UNITS:
        if name.endswith(suffix) or name == suffix[1:]:
            return name.removesuffix(suffix).removesuffix(suffix[1:]), unit
    return name, ""


def _value(name: str, value: object) -> str:
    unit = _split_unit(name)[1]
    if isinstance(value, float):
        shown = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
        return shown + unit
    return f"{value}{unit}"


def _label(name: str) -> str:
    for prefix in ("pipeline_", "baseline_"):
        name = name.removeprefix(prefix)
    label = _split_unit(name)[0].replace("_", " ").strip()
    return f"{label}: " if label else ""


def _field(name: str, value: object) -> str:
    return _label(name) + _value(name, value)


def row(result: dict) -> str | None:
    if "top" in result:
        return None  # profiles are printed by the bench, not tabulated
    fields = {k: v for k, v in result.items() if k != "case"}
    ours = [_field(k, v) for k, v in fields.items() if k.startswith("pipeline_")]
    base = [_field(k, v) for k, v in fields.items() if k.startswith("baseline_")]
    ratio = fields.get("ratio")
    rest = [_field(k, v) for k, v in fields.items() if not k.startswith(("pipeline_", "baseline_")) and k != "ratio"]
    return (f"| {result['case']} | {'; '.join(ours + rest) or '-'} | {'; '.join(base) or '-'} | "
            f"{f'{ratio:.3g}' if isinstance(ratio, float) else '-'} |")


def table(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Run {results['when']} ({'`--quick`' if results['quick'] else 'full sizes'}, {results['seconds']} s) on "
        f"{machine['platform']}, {machine['cpus']} CPUs ({machine['processor']}), Python {machine['python']}; "
        "ratio = pipeline / baseline, both measured in the same run (for throughput in msg/s, baseline time / "
        "pipeline time, so above 1 is faster).",
        "",
        "| case | pipeline | baseline (same run) | ratio |",
        "| --- | --- | --- | --- |",
    ]
    lines += [line for result in results["rows"] if (line := row(result))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the bench's JSON (default: latest.json)")
    parser.add_argument("--block", default=None, help="the named table block (bench-table:NAME:start) to rewrite")
    args = parser.parse_args()
    start, end = (START, END) if args.block is None else (f"<!-- bench-table:{args.block}:start -->",
                                                         f"<!-- bench-table:{args.block}:end -->")
    results = json.loads(args.results.read_text())
    text = PAGE.read_text(encoding="utf-8")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    PAGE.write_text(f"{before}{start}\n{table(results)}\n{end}{after}", encoding="utf-8")
    print(f"{PAGE.relative_to(REPO)} table regenerated from {args.results}")


if __name__ == "__main__":
    main()
