"""Send workers on PostgreSQL against a relay that takes 10 ms per message, and the first claim of an edition.

    python -m bench.workers            # 1,500 subscribers; 20,000 for the claim
    python -m bench.workers --quick    # smaller, about a minute

Every figure is printed beside a baseline measured in the same run: SQLite with one
process for the workers, and the claim written ``IN (subquery)`` (the form before) for
the ``= ANY(ARRAY(subquery))`` claim.  Results go to bench/results/workers.json.
Needs Debian's postgresql server binaries (the same as the test suite).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from aiosmtpd.controller import Controller

from . import data

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "workers.json"
SECRET = secrets.token_urlsafe(32)  # a fresh random secret each run, as `pipeline init` makes one
RELAY_DELAY = 0.010  # seconds per message, like a real relay


class SlowRelay:
    """Accepts every message after RELAY_DELAY; connections are served concurrently."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(RELAY_DELAY)
        with self.lock:
            self.count += len(envelope.rcpt_tos)
        return "250 OK"


def _project(root: Path, port: int) -> Path:
    return data.smtp_project(root, port).root



def _pipeline(project: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"), *args],
                            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _make_edition(project: Path, env: dict[str, str], subscribers: int) -> None:
    code = ("from pipeline import usecases\nfrom pipeline.config import load_config\n"
            "from pipeline.delivery.editions import plan_edition\n"
            f"config = load_config({str(project / 'config.yaml')!r})\n"
            "with usecases.open_storage(config) as storage:\n"
            f"    storage.merge_subscribers([(f'r{{n:06d}}@example.org', None, {{}}) for n in range({subscribers})])\n"
            "    local, _ = usecases.read_items(config, storage, fetch=False)\n"
            "    ctx = usecases.RunContext(config, storage, local)\n"
            "    assert plan_edition(ctx.items, storage, config, ctx.stored).created\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=project)


def send_rate(workers: int, database_url: str | None, subscribers: int, folder: Path, relay: SlowRelay,
              port: int) -> float:
    """Messages per second for ``workers`` worker processes (separate state folders) to send one edition."""
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    env.pop("PIPELINE_DATABASE_URL", None)
    if database_url:
        env["PIPELINE_DATABASE_URL"] = database_url
    projects = [_project(folder / f"machine-{n}", port) for n in range(workers)]
    _make_edition(projects[0], env, subscribers)
    start_count = relay.count
    started = time.perf_counter()
    processes = [_pipeline(p, env, "worker", "--once") for p in projects]
    for process in processes:
        _out, err = process.communicate(timeout=900)
        if process.returncode != 0:
            raise SystemExit(f"worker failed: {err[-2000:]}")
    elapsed = time.perf_counter() - started
    sent = relay.count - start_count
    if sent != subscribers:
        raise SystemExit(f"{sent} of {subscribers} messages arrived")
    return sent / elapsed


def first_claim_ms(database_url: str, subscribers: int, form: str) -> float:
    """Milliseconds for the first claim of 200 rows right after an edition of ``subscribers`` was made."""
    from pipeline.state.storage import Storage, StoredDigest, claim_statement

    storage = Storage(database_url)
    try:
        storage.merge_subscribers([(f"c{n:06d}@example.org", None, {}) for n in range(subscribers)])
        storage.create_edition("claim", ["urn:x:1"], StoredDigest("S", "<p>x</p>", "x"))
        statement = claim_statement("claim", 200, "bench", datetime.now(timezone.utc), form)
        started = time.perf_counter()
        with storage.engine.begin() as conn:
            rows = conn.execute(statement).all()
        elapsed = (time.perf_counter() - started) * 1000
        if not 0 < len(rows) <= subscribers:
            raise SystemExit(f"claim returned {len(rows)} rows")
        return elapsed
    finally:
        storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    subscribers = 400 if args.quick else 1500
    claim_size = 5000 if args.quick else 20000
    baseline_claim_size = 2000 if args.quick else 5000

    sys.path.insert(0, str(REPO))
    from tests.postgres import Cluster, server_binaries

    binaries = server_binaries()
    if binaries is None:
        raise SystemExit("needs PostgreSQL's server binaries (apt-get install postgresql)")
    cluster = Cluster(binaries).start()
    relay = SlowRelay()
    from tests.smtp_sink import free_port

    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    folder = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    rows = []
    try:
        sqlite = send_rate(1, None, subscribers, folder / "sqlite", relay, port)
        rows.append(("send, SQLite, 1 process (2 connections)", sqlite, "msg/s", sqlite, 1.0))
        for workers in (1, 3):
            rate = send_rate(workers, cluster.new_database(), subscribers, folder / f"pg-{workers}", relay, port)
            rows.append((f"send, PostgreSQL, {workers} worker(s) (2 connections each)", rate, "msg/s", sqlite,
                         rate / sqlite))
        old = first_claim_ms(cluster.new_database(), baseline_claim_size, "sqlite")
        new_small = first_claim_ms(cluster.new_database(), baseline_claim_size, "postgresql")
        rows.append((f"first claim of 200 at {baseline_claim_size:,}, = ANY(ARRAY(...)) vs IN (...)", new_small,
                     "ms", old, new_small / old))
        new_large = first_claim_ms(cluster.new_database(), claim_size, "postgresql")
        rows.append((f"first claim of 200 at {claim_size:,} (target < 50 ms)", new_large, "ms", 50.0,
                     new_large / 50.0))
    finally:
        controller.stop()
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'measure':<70} {'pipeline':>12} {'baseline':>12} {'ratio':>7}")
    for name, value, unit, baseline, ratio in rows:
        print(f"{name:<70} {value:>8.1f} {unit:<3} {baseline:>8.1f} {unit:<3} {ratio:>7.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "machine": f"{os.cpu_count()} cores, {sys.platform}", "relay_delay_ms": 10,
                                   "rows": [{"measure": n, "value": v, "unit": u, "baseline": b, "ratio": r}
                                            for n, v, u, b, r in rows]}, indent=1))


if __name__ == "__main__":
    main()
