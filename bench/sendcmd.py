"""Sending as users time it (issue 26): the whole `pipeline send` as a process (start-up, edition,
ledger, send) against raw smtplib and a pipelined raw socket sending the same bytes to the same sink,
and a greylisting relay.

Each round makes a fresh project (so `send` makes and renders a new edition, as on a real day), runs
`pipeline send` while the sink records what arrives, then both baselines send exactly those recorded
bytes as processes of their own (bench/raw.py); the sink records during every side's turn, so each
pays the same.  Rounds interleave the three, so a load spike hits one round, not one side.  Every
process is timed from outside (wall clock, what a user waits for) and reports its own peak RSS
(bench/peak.py).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import data


class RecordingSink:
    """bench/sink.py in its own process, recording what it accepts to a file named per turn."""

    def __init__(self, folder: Path, greylist: float = 0.0):
        flags = ["--greylist", str(greylist)] if greylist else []
        self.folder = folder
        self.process = subprocess.Popen([sys.executable, "-m", "bench.sink", *flags, "--record",
                                         str(folder / "start.rec")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=data.REPO)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def _say(self, line: str) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def count(self) -> int:
        return self._say("")

    def record_to(self, path: Path) -> int:
        return self._say(f"record {path}")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def timed_process(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of ``python -m bench.peak OUT args...``, and its stdout."""
    with tempfile.NamedTemporaryFile(suffix=".peak") as out:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "bench.peak", out.name, *args], env=env, cwd=data.REPO,
                                capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{args} failed ({result.returncode}): {result.stderr[-2000:]}")
        return wall, float(Path(out.name).read_text()), result.stdout


def _project(folder: Path, port: int, subscribers: int, **smtp: object):
    from pipeline.usecases import open_storage

    config = data.smtp_project(folder, port, **smtp)
    with open_storage(config) as storage:
        rows = data.subscriber_rows(subscribers)
        for start in range(0, subscribers, 5000):
            storage.merge_subscribers(rows[start:start + 5000])
    return config


def case_send_command(counts: list[int], rounds: int, record, workdir, secret: str) -> None:
    print("send as a command: `pipeline send` (process start-up, new edition, ledger, 2 connections) vs the "
          "same bytes sent again by raw smtplib (one connection) and a pipelined raw socket, same sink "
          "(bench/sink.py, offering PIPELINING), interleaved rounds, wall time from outside")
    env = {**os.environ, "PIPELINE_SECRET": secret}
    median = statistics.median
    with workdir() as folder:
        sink = RecordingSink(folder)
        try:
            for count in counts:
                sides: dict[str, list[tuple[float, float]]] = {"pipeline": [], "smtplib": [], "pipelined": []}
                for round_ in range(rounds):
                    config = _project(folder / f"send-{count}-{round_}", sink.port, count)
                    wire = folder / f"sent-{count}.rec"
                    before = sink.record_to(wire)
                    wall, mb, _ = timed_process(["-m", "pipeline", "--config", str(config.source_file), "send"], env)
                    assert sink.record_to(folder / "baseline.rec") - before == count, "pipeline send lost messages"
                    sides["pipeline"].append((wall, mb))
                    for how in ("smtplib", "pipelined"):
                        before = sink.count()
                        wall, mb, out = timed_process(["-m", "bench.raw", how, str(wire), str(sink.port)], env)
                        assert int(out) == count and sink.count() - before == count
                        sides[how].append((wall, mb))
                    wire.unlink()
                ours = median(w for w, _ in sides["pipeline"])
                ours_mb = max(m for _, m in sides["pipeline"])
                for how, label in (("smtplib", "raw smtplib loop"), ("pipelined", "pipelined raw socket")):
                    base = median(w for w, _ in sides[how])
                    record(f"`pipeline send` command x{count} vs {label} (same bytes), median of {rounds}",
                           pipeline_msgs_per_s=count / ours, pipeline_s=ours, pipeline_peak_mb=ours_mb,
                           baseline_msgs_per_s=count / base, baseline_s=base,
                           baseline_peak_mb=max(m for _, m in sides[how]), ratio=base / ours)
        finally:
            sink.close()


def case_greylist(count: int, delay: float, record, workdir, secret: str) -> None:
    print(f"greylisting: {count} recipients, each refused (451) until {delay:g}s after its first try; one "
          "`pipeline send` with the default retry settings, as a command")
    env = {**os.environ, "PIPELINE_SECRET": secret}
    with workdir() as folder:
        sink = RecordingSink(folder, greylist=delay)
        try:
            config = _project(folder / "greylist", sink.port, count)
            wall, mb, _ = timed_process(["-m", "pipeline", "--config", str(config.source_file), "send"], env)
            delivered = sink.count()
            assert delivered == count, f"{delivered} of {count} delivered"
            record(f"greylisting relay, {count} recipients delivered by one `pipeline send`", pipeline_s=wall,
                   pipeline_peak_mb=mb, baseline_greylist_delay_s=delay, ratio=wall / delay)
        finally:
            sink.close()
