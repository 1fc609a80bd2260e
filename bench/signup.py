"""Benchmarks of issue 13: signup POSTs on the web server, and per-topic sending against a single digest.

Kept apart from ``bench/__main__.py`` (which only calls these) so the cases stay together.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from . import data


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def case_signup(count: int, sink_port: int, record, workdir) -> None:
    """Sequential signup POSTs over loopback HTTP to `pipeline serve-web`'s server, each mailing a
    confirmation through SMTP to the sink; bounded to ``count`` requests or 60 seconds."""
    from pipeline.service.web import make_web_server
    from pipeline.usecases import open_storage

    print(f"signup: up to {count} POST /subscribe on the web server, confirmation mails to an SMTP sink")
    with workdir() as folder:
        config = data.make_project(folder / "signup", limit=10, **{
            "transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": sink_port, "smtp.security": "none"})
        _signup_settings(config.source_file)
        from pipeline.config import load_config

        config = load_config(config.source_file)
        storage = open_storage(config)
        server = make_web_server(config, storage, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            page = urllib.request.urlopen(base + "/subscribe", timeout=10).read().decode()
            stamp = page.split('name="stamp" value="', 1)[1].split('"', 1)[0]
            latencies: list[float] = []
            started = time.perf_counter()
            for n in range(count):
                body = urllib.parse.urlencode({"email": f"signup{n:06d}@example.org", "stamp": stamp}).encode()
                begin = time.perf_counter()
                with urllib.request.urlopen(urllib.request.Request(base + "/subscribe", data=body), timeout=10) as r:
                    r.read()
                latencies.append((time.perf_counter() - begin) * 1000)
                if time.perf_counter() - started > 60:
                    break
            seconds = time.perf_counter() - started
            pending = storage.count_subscribers("pending")
        finally:
            server.shutdown()
            server.server_close()
            storage.close()
    record(f"signup POSTs x{len(latencies)}", posts_per_s=len(latencies) / seconds,
           p50_ms=statistics.median(latencies), p99_ms=_percentile(latencies, 0.99), pending=pending)


def _signup_settings(path: Path) -> None:
    import yaml

    settings = yaml.safe_load(path.read_text())
    settings["signup"] = {"check_deliverability": False, "min_fill_seconds": 0, "ip_limit": 10**9,
                          "address_limit": 10**9, "confirmations_per_hour": 10**9}
    settings["topics"] = TOPICS
    path.write_text(yaml.safe_dump(settings, sort_keys=False))


TOPICS = {"research": {"tags": ["research", "clinical trials"]}, "programs": {"tags": ["programs and services"]},
          "living": {"tags": ["living with ms"]}}
CHOICES = ["", "research", "programs", "living", "programs,research", "living,research", "living,programs",
           "living,programs,research"]


def case_topic_send(count: int, send_project, sink, record, workdir) -> None:
    """The same list sent one digest, per-topic digests (choices spread over 3 topics), and one digest
    again, in the same run; the baseline is the faster single-digest send, so warm-up favours it."""
    from sqlalchemy import update

    from pipeline import usecases
    from pipeline.config import load_config
    from pipeline.state.storage import subscribers
    from pipeline.usecases import open_storage

    print(f"topic send: {count} subscribers, one digest vs per-topic digests over 3 topics")
    with workdir() as folder:
        results = {}
        for mode in ("single", "topics", "single-again"):
            config = send_project(folder / mode, sink.port, count, 2)
            if mode == "topics":
                _signup_settings(config.source_file)
                config = load_config(config.source_file)
                with open_storage(config) as storage, storage.engine.begin() as conn:
                    for position, key in enumerate(CHOICES):
                        conn.execute(update(subscribers).where(subscribers.c.id % len(CHOICES) == position)
                                     .values(topics_key=key))
            before = sink.count()
            start = time.perf_counter()
            outcome = usecases.run(config, progress=False)
            seconds = time.perf_counter() - start
            sent = sum(report.sent for report in outcome.reports)
            assert sink.count() - before == sent
            results[mode] = (sent, seconds, outcome.renders)
        single_sent, single_s, _ = max(results["single"], results["single-again"], key=lambda r: r[0] / r[1])
        topic_sent, topic_s, renders = results["topics"]
        record(f"send one digest x{single_sent}", msgs_per_s=single_sent / single_s)
        record(f"send per-topic x{topic_sent}", msgs_per_s=topic_sent / topic_s, renders=renders,
               vs_single=(topic_sent / topic_s) / (single_sent / single_s))
