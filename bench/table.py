"""Regenerate the README's benchmark table from bench/results/latest.json (never typed by hand).

    python -m bench.table          # rewrites the block between the bench-table markers in README.md
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "latest.json"
README = REPO / "README.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def _value(name: str, value: object) -> str:
    if isinstance(value, float):
        unit = " ms" if name.endswith("_ms") else " s" if name.endswith("_s") else ""
        shown = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
        return shown + unit
    return str(value)


def _label(name: str) -> str:
    for prefix in ("pipeline_", "baseline_"):
        name = name.removeprefix(prefix)
    return name.replace("_", " ")


def row(result: dict) -> str | None:
    if "top" in result:
        return None  # profiles are printed by the bench, not tabulated
    fields = {k: v for k, v in result.items() if k != "case"}
    ours = [f"{_label(k)}: {_value(k, v)}" for k, v in fields.items() if k.startswith("pipeline_")]
    base = [f"{_label(k)}: {_value(k, v)}" for k, v in fields.items() if k.startswith("baseline_")]
    ratio = fields.get("ratio")
    rest = [f"{_label(k)}: {_value(k, v)}" for k, v in fields.items()
            if not k.startswith(("pipeline_", "baseline_")) and k != "ratio"]
    return (f"| {result['case']} | {'; '.join(ours + rest) or '-'} | {'; '.join(base) or '-'} | "
            f"{f'{ratio:.2f}' if isinstance(ratio, float) else '-'} |")


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
    results = json.loads(RESULTS.read_text())
    text = README.read_text()
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    README.write_text(f"{before}{START}\n{table(results)}\n{END}{after}")
    print(f"README.md table regenerated from {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
