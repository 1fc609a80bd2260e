"""Runs that end honestly: each run row names the process that owns it, so a run whose process is
gone (killed, or its machine restarted) is shown as ``interrupted`` instead of ``running`` forever.

The owner is the host name, the process id and the process's start (the kernel's boot id and the
process start time from ``/proc``, so a reused pid is not taken for the dead run).  A run owned by
another host is left as it is: only its own machine can tell whether it is alive.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from ..clock import utcnow
from .storage import RunRecord, Storage, runs

log = logging.getLogger(__name__)

RUNNING, INTERRUPTED = "running", "interrupted"


@dataclass(frozen=True)
class RunOwner:
    host: str
    pid: int
    started: str | None  # "<boot id>:<start time in clock ticks>" where /proc has them; None elsewhere


def process_start(pid: int) -> str | None:
    """What tells this process apart from a later one given the same pid, or None where unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return f"{boot}:{fields[19]}"  # field 22 of stat(5), counted from its third


def this_process() -> RunOwner:
    return RunOwner(socket.gethostname(), os.getpid(), process_start(os.getpid()))


def owner_gone(owner: RunOwner) -> bool:
    """True when the owner was a process of this host that no longer runs."""
    if owner.host != socket.gethostname():
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's: its start time still tells
    return owner.started is not None and process_start(owner.pid) not in (owner.started, None)


def _owner(record: RunRecord) -> RunOwner | None:
    data = record.summary.get("owner")
    if not isinstance(data, dict):
        return None
    try:
        return RunOwner(str(data["host"]), int(data["pid"]), data.get("started"))
    except (KeyError, TypeError, ValueError):
        return None


def is_interrupted(record: RunRecord) -> bool:
    """A run recorded as running whose process is gone."""
    if record.status == INTERRUPTED:
        return True
    owner = _owner(record)
    return record.status == RUNNING and owner is not None and owner_gone(owner)


def start_run(storage: Storage, job: str) -> int:
    """A new run row, ``running``, owned by this process."""
    with storage.engine.begin() as conn:
        return conn.execute(insert(runs).values(job=job, started_at=utcnow(), status=RUNNING,
                                                summary={"owner": asdict(this_process())})
                            .returning(runs.c.id)).scalar_one()


def close_interrupted(storage: Storage, limit: int = 50) -> list[RunRecord]:
    """Record as ``interrupted`` the recent runs whose process is gone, saying so once each; return them.

    Called under the run lock: a ``running`` row that names no owner was left by a version of the
    pipeline before owners were recorded, and its run cannot be alive while this one holds the lock."""
    found = [record for record in storage.recent_runs(limit)
             if record.status == RUNNING and (_owner(record) is None or is_interrupted(record))]
    for record in found:
        summary: dict[str, Any] = {**record.summary, "interrupted": True}
        with storage.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == record.id, runs.c.status == RUNNING)
                         .values(status=INTERRUPTED, summary=summary))
        owner = _owner(record)
        log.warning("run %d (job %s, started %s) was interrupted: its process%s is gone",
                    record.id, record.job, record.started_at.isoformat(),
                    f" {owner.pid} on {owner.host}" if owner else "")
    return found
