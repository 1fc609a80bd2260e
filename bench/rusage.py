"""Run a command as a child of a small process and report its CPU seconds and peak RSS.

    python -m bench.rusage OUTFILE COMMAND ARGS...

OUTFILE gets ``user system maxrss_kb returncode``.  This wrapper imports nothing, so the peak that
wait4 reports (which starts from the parent's size at exec) is the command's own, not the bench's.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    out, *command = sys.argv[1:]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child becomes the command
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execvp(command[0], command)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as handle:
        handle.write(f"{usage.ru_utime} {usage.ru_stime} {usage.ru_maxrss} {code}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
