"""One-click unsubscribes under load while an edition is being sent.

    python -m bench.unsubscribe            # 2,000 subscribers, 1,000 unsubscribe POSTs
    python -m bench.unsubscribe --quick

`pipeline serve-web` (waitress) takes the POSTs from 8 client threads while `pipeline send`
sends the edition.  Printed: POSTs per second with p50/p99 latency, beside the same
server serving a WSGI app that does nothing (the server's own ceiling, same run), and
the check that matters: nobody who was unsubscribed before their message was handed
to the relay got it, and everybody else got exactly one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

from aiosmtpd.controller import Controller

from . import data

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "unsubscribe.json"
SECRET = secrets.token_urlsafe(32)  # a fresh random secret each run, as `pipeline init` makes one
CLIENTS = 8


class Recorder:
    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        now = time.monotonic()
        with self.lock:
            self.arrivals.extend((rcpt, now) for rcpt in envelope.rcpt_tos)
        return "250 OK"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _project(root: Path, port: int) -> Path:
    return data.smtp_project(root, port, rate_limit=400).root



def _post_all(port: int, paths: list[str], body: bytes) -> tuple[float, list[float], list[tuple[str, float]]]:
    """POST every path from CLIENTS keep-alive connections; returns elapsed, latencies, and when each finished."""
    latencies: list[float] = []
    finished: list[tuple[str, float]] = []
    lock = threading.Lock()
    chunks = [paths[n::CLIENTS] for n in range(CLIENTS)]

    def client(mine: list[str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for path in mine:
            started = time.perf_counter()
            connection.request("POST", path, body=body,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"POST {path[:40]} answered {response.status}")
            done = time.perf_counter()
            with lock:
                latencies.append(done - started)
                finished.append((path, time.monotonic()))
        connection.close()

    threads = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, finished


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _server(command: list[str], port: int, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a server process and wait until it answers; its log goes to a file (a pipe nobody reads
    would fill and stop the server)."""
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    log.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/unsubscribe")
            connection.getresponse().read()
            connection.close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"{command[2]} did not start: {Path(log.name).read_text()[-2000:]}") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def baseline(requests: int, project: Path, env: dict[str, str]) -> tuple[float, list[float]]:
    """The same load against the web app's server (its own process, the same settings) serving an app
    that only answers 200."""
    port = _free_port()
    server = _server([sys.executable, "-m", "bench.empty_app", "--config", str(project / "config.yaml"),
                      "--port", str(port)], port, REPO, env)
    try:
        elapsed, latencies, _ = _post_all(port, ["/unsubscribe?token=x"] * requests, b"List-Unsubscribe=One-Click")
    finally:
        _stop(server)
    return requests / elapsed, latencies


def case_one_click(count: int, clients: int, record, workdir, secret: str) -> None:
    """`python -m bench unsubscribe`: one-click POSTs from ``clients`` keep-alive connections against
    `pipeline serve-web`, beside an empty WSGI app on the same server and settings (``bench/empty_app.py``),
    each in its own process as in production, with the same client, in the same run; every POST must
    answer 200 and be stored (0 lost)."""
    global CLIENTS
    from pipeline.config import load_config
    from pipeline.mail.tokens import make_token
    from pipeline.state.storage import Storage

    CLIENTS, before = clients, CLIENTS
    env = {**os.environ, "PIPELINE_SECRET": secret}
    env.pop("PIPELINE_DATABASE_URL", None)
    try:
        with workdir() as folder:
            project = _project(folder / "site", _free_port())
            config = load_config(project / "config.yaml")
            addresses = [f"r{n:05d}@example.org" for n in range(count)]
            with Storage.for_state(config.path("state")) as storage:
                storage.merge_subscribers([(a, None, {}) for a in addresses])
            paths = [f"/unsubscribe?{urlencode({'token': make_token(secret.encode(), a)})}" for a in addresses]
            port = _free_port()
            server = _server([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"),
                              "serve-web", "--port", str(port)], port, project, env)
            try:
                elapsed, _latencies, _ = _post_all(port, paths, b"List-Unsubscribe=One-Click")
            finally:
                _stop(server)
            rate = count / elapsed
            base_rate, _ = baseline(count, project, env)
            with Storage.for_state(config.path("state")) as storage:
                stored = storage.count_subscribers("unsubscribed")
    finally:
        CLIENTS = before
    record(f"one-click unsubscribe POSTs x{count}, {clients} clients", pipeline_per_s=rate,
           baseline_per_s=base_rate, ratio=rate / base_rate, lost=count - stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    subscribers = 600 if args.quick else 2000
    leaving = subscribers // 2

    sys.path.insert(0, str(REPO))
    from pipeline.config import load_config
    from pipeline.mail.tokens import make_token
    from pipeline.state.storage import Storage

    recorder = Recorder()
    smtp_port = _free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=smtp_port, ready_timeout=10)
    controller.start()
    folder = Path(tempfile.mkdtemp(prefix="bench-unsubscribe-"))
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    env.pop("PIPELINE_DATABASE_URL", None)
    web = None
    try:
        project = _project(folder / "site", smtp_port)
        config = load_config(project / "config.yaml")
        addresses = [f"r{n:05d}@example.org" for n in range(subscribers)]
        storage = Storage.for_state(config.path("state"))
        storage.merge_subscribers([(a, None, {}) for a in addresses])
        storage.close()
        web_port = _free_port()
        web = _server([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"),
                       "serve-web", "--port", str(web_port)], web_port, project, env)
        paths = [f"/unsubscribe?{urlencode({'token': make_token(SECRET.encode(), a)})}" for a in addresses[::2]]
        paths = paths[:leaving]
        send = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"), "send"],
                                cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while not recorder.arrivals and send.poll() is None:
            time.sleep(0.01)  # start the load once the send is going
        elapsed, latencies, finished = _post_all(web_port, paths, b"List-Unsubscribe=One-Click")
        _out, err = send.communicate(timeout=600)
        if send.returncode not in (0, 2):
            raise SystemExit(f"send failed: {err[-2000:]}")
    finally:
        if web is not None:
            _stop(web)
        controller.stop()
    base_rate, base_latencies = baseline(len(paths), project, env)
    shutil.rmtree(folder, ignore_errors=True)

    unsubscribed_at = {addresses[::2][paths.index(path)]: when for path, when in finished}
    received = Counter(rcpt for rcpt, _ in recorder.arrivals)
    first_arrival = {}
    for rcpt, when in recorder.arrivals:
        first_arrival.setdefault(rcpt, when)
    late = [a for a, when in unsubscribed_at.items() if a in first_arrival and first_arrival[a] > when]
    staying = [a for a in addresses if a not in unsubscribed_at]
    missed = [a for a in staying if received[a] != 1]
    rate = len(paths) / elapsed
    rows = [
        ("unsubscribe POSTs per second, during a send", rate, "req/s", base_rate, rate / base_rate),
        ("p50 latency", _percentile(latencies, 0.5) * 1000, "ms", _percentile(base_latencies, 0.5) * 1000,
         _percentile(latencies, 0.5) / _percentile(base_latencies, 0.5)),
        ("p99 latency", _percentile(latencies, 0.99) * 1000, "ms", _percentile(base_latencies, 0.99) * 1000,
         _percentile(latencies, 0.99) / _percentile(base_latencies, 0.99)),
    ]
    print(f"{'measure':<48} {'pipeline':>12} {'baseline':>12} {'ratio':>7}")
    for name, value, unit, base, ratio in rows:
        print(f"{name:<48} {value:>8.1f} {unit:<5} {base:>8.1f} {unit:<5} {ratio:>5.2f}")
    print(f"mailed after their unsubscribe was recorded: {len(late)} of {len(paths)} "
          f"(at most one message in flight per connection can cross an unsubscribe)")
    print(f"staying subscribers missed or mailed twice: {len(missed)} of {len(staying)}")
    print(f"median latency: {statistics.median(latencies) * 1000:.1f} ms")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": [{"measure": n, "value": v, "unit": u, "baseline": b, "ratio": r}
                                            for n, v, u, b, r in rows],
                                   "mailed_after_unsubscribe": len(late), "missed": len(missed)}, indent=1))
    if missed:
        raise SystemExit("a staying subscriber was missed or mailed twice")


if __name__ == "__main__":
    main()
