"""Run a module or code and report this process's own peak resident memory.

    python -m bench.peak OUTFILE -m pipeline --config X run
    python -m bench.peak OUTFILE -c "code" ARGS...

The peak comes from /proc/self/status (VmHWM), which starts afresh at exec; the
rusage a parent gets from wait4 does not, and would report the parent's size.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    out, mode, target, *args = sys.argv[1:]
    code = 0
    try:
        if mode == "-m":
            sys.argv = [target, *args]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *args]
            exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    Path(out).write_text(f"{peak_mb():.1f}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
