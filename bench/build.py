"""The build as users time it (issue 26): whole `pipeline run --no-send` commands on the shaped corpus
(bench/corpus.py), CPU seconds and peak RSS of each process, against Hugo building the same stories
(site + RSS) and a floor (read + YAML + markdown-it + one page per story + lxml RSS/Atom + write),
in interleaved rounds (wall time is noise on a shared 2-core machine; CPU seconds are not)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import corpus

HUGO = shutil.which("hugo")


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    peak_mb: float


def measured(command: list[str], env: dict | None = None) -> Usage:
    """CPU seconds (user + system) and peak RSS of ``command`` run as a process (bench/rusage.py)."""
    with tempfile.NamedTemporaryFile(suffix=".usage") as out:
        result = subprocess.run([sys.executable, "-m", "bench.rusage", out.name, *command], env=env,
                                cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed: {result.stderr[-2000:]}")
        user, system, maxrss_kb, _code = Path(out.name).read_text().split()
    return Usage(float(user) + float(system), int(maxrss_kb) / 1024)


def _pipeline() -> list[str]:
    script = Path(sys.executable).with_name("pipeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline"]


def case_build(sizes: list[int], rounds: int, record, workdir, secret: str) -> None:
    print(f"build: whole `pipeline run --no-send` on {sizes} stories (3-5 tags of 50, a JPEG every 4th), "
          f"CPU seconds and peak RSS, vs Hugo ({HUGO or 'not installed'}) and a floor; {rounds} interleaved rounds")
    env = {**os.environ, "PIPELINE_SECRET": secret}
    with workdir() as folder:
        for count in sizes:
            config_file, hugo_site = corpus.write_corpus(folder / f"corpus-{count}", count)
            state, out = config_file.parent / ".state", config_file.parent / "public"
            command = [*_pipeline(), "--config", str(config_file), "run", "--no-send"]
            floor_command = [sys.executable, "-m", "bench.floor", str(config_file), str(folder / "floor-out")]
            hugo_command = [HUGO, "--source", str(hugo_site), "--destination", str(folder / "hugo-out"), "--quiet"] \
                if HUGO else None
            cold, edited, same, hugo, floor = [], [], [], [], []
            for round_ in range(rounds):
                shutil.rmtree(state, ignore_errors=True)
                for gone in (out, out.with_name("public.versions")):
                    if gone.is_symlink() or gone.is_file():
                        gone.unlink()
                    else:
                        shutil.rmtree(gone, ignore_errors=True)
                cold.append(measured(command, env))
                same.append(measured(command, env))
                corpus.edit(config_file, count // 2, round_)
                edited.append(measured(command, env))
                if hugo_command:
                    shutil.rmtree(folder / "hugo-out", ignore_errors=True)
                    hugo.append(measured(hugo_command))
                shutil.rmtree(folder / "floor-out", ignore_errors=True)
                floor.append(measured(floor_command))

            def cpu(runs: list[Usage]) -> float:
                return statistics.median(run.cpu_s for run in runs)

            def peak(runs: list[Usage]) -> float:
                return max(run.peak_mb for run in runs)

            # Every row: ours / baseline / ratio (CPU seconds, medians), each with its peak RSS beside it.
            if hugo:
                record(f"cold `pipeline run --no-send`, {count} stories, vs Hugo (site + RSS)",
                       pipeline_cpu_s=cpu(cold), pipeline_peak_rss_mb=peak(cold), baseline_hugo_cpu_s=cpu(hugo),
                       baseline_hugo_peak_rss_mb=peak(hugo), ratio=cpu(cold) / cpu(hugo))
            record(f"cold `pipeline run --no-send`, {count} stories, vs the floor",
                   pipeline_cpu_s=cpu(cold), pipeline_peak_rss_mb=peak(cold), baseline_floor_cpu_s=cpu(floor),
                   baseline_floor_peak_rss_mb=peak(floor), ratio=cpu(cold) / cpu(floor))
            record(f"one story edited, {count} stories", pipeline_cpu_s=cpu(edited),
                   pipeline_peak_rss_mb=peak(edited), baseline_cold_cpu_s=cpu(cold),
                   baseline_cold_peak_rss_mb=peak(cold), ratio=cpu(edited) / cpu(cold))
            record(f"unchanged rerun, {count} stories", pipeline_cpu_s=cpu(same), pipeline_peak_rss_mb=peak(same),
                   baseline_cold_cpu_s=cpu(cold), baseline_cold_peak_rss_mb=peak(cold), ratio=cpu(same) / cpu(cold))
