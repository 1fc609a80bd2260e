"""Benchmarks with baselines measured in the same run.

    python -m bench                 # every case, full sizes (a few minutes on 2 cores)
    python -m bench --quick         # smaller sizes, for a smoke run
    python -m bench send feeds      # some cases only

Prints a table of medians and ratios and writes the same to bench/results/latest.json.
Numbers are reported, never asserted: machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from lxml import etree

from . import data

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
SECRET = "benchmark-secret-0123456789"
rows: list[dict] = []


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def record(case: str, **values) -> None:
    rows.append({"case": case, **values})
    shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"  {case}: {shown}", flush=True)


@contextmanager
def workdir():
    folder = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- feeds --------------------------------------------------------------------------------------

def lxml_rss(items, config) -> bytes:
    """The baseline: equivalent RSS written with lxml directly, no feed library."""
    content_ns, dc_ns, atom_ns = ("http://purl.org/rss/1.0/modules/content/", "http://purl.org/dc/elements/1.1/",
                                  "http://www.w3.org/2005/Atom")
    rss = etree.Element("rss", version="2.0", nsmap={"content": content_ns, "dc": dc_ns, "atom": atom_ns})
    channel = etree.SubElement(rss, "channel")
    for name, value in (("title", config.site.title), ("link", config.site.base_url),
                        ("description", config.site.description), ("language", config.site.language)):
        etree.SubElement(channel, name).text = value
    etree.SubElement(channel, f"{{{atom_ns}}}link", href=config.site.url("rss.xml"), rel="self")
    from email.utils import format_datetime

    for item in items:
        node = etree.SubElement(channel, "item")
        etree.SubElement(node, "title").text = item.title
        etree.SubElement(node, "link").text = item.link
        etree.SubElement(node, "guid", isPermaLink="false").text = item.id
        etree.SubElement(node, "pubDate").text = format_datetime(item.published)
        etree.SubElement(node, "description").text = item.summary
        etree.SubElement(node, f"{{{content_ns}}}encoded").text = etree.CDATA(item.full_html)
        etree.SubElement(node, f"{{{dc_ns}}}creator").text = item.author or ""
        for tag in item.tags:
            etree.SubElement(node, "category").text = tag
        if item.image:
            etree.SubElement(node, "enclosure", url=item.image.url, length=str(item.image.length), type=item.image.type)
    return etree.tostring(rss, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def case_feeds(sizes, repeat) -> None:
    from pipeline.publish.feeds import build_feeds, build_rss

    print("feeds: RSS + Atom + JSON Feed through the pipeline vs RSS written with lxml directly")
    with workdir() as folder:
        for n in sizes:
            config = data.make_project(folder / f"feeds-{n}", limit=n)
            items = data.make_items(config, n)
            reps = max(1, repeat if n < 10000 else repeat // 2)
            all_three = median_ms(lambda: build_feeds(items, config), reps)
            rss = median_ms(lambda: build_rss(items, config), reps)
            baseline = median_ms(lambda: lxml_rss(items, config), reps)
            record(f"feeds n={n}", all_three_ms=all_three, rss_ms=rss, lxml_rss_ms=baseline,
                   items_per_s=n / all_three * 1000, rss_vs_lxml=rss / baseline)
        config = data.make_project(folder / "profile", limit=1000)
        items = data.make_items(config, 1000)
        profiler = cProfile.Profile()
        profiler.enable()
        build_feeds(items, config)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
        top = [" ".join(line.split()) for line in out.getvalue().splitlines()
               if line.strip()[:1].isdigit() and "function calls" not in line][:8]
        print("  profile of build_feeds(1000 items), top functions by own time:")
        for line in top:
            print("   ", line)
        rows.append({"case": "feeds profile (1000 items, tottime)", "top": top})


# -- digest -------------------------------------------------------------------------------------

def case_digest(sizes, recipients, repeat) -> None:
    from pipeline.items import newest_first
    from pipeline.mail.message import Envelope, MessageTemplate, build_message, recipient_for
    from pipeline.publish.digest import UNSUBSCRIBE_PLACEHOLDER, render_digest

    print("digest: render + inline once; per-recipient personalisation vs the naive path")
    with workdir() as folder:
        for n in sizes:
            config = data.make_project(folder / f"digest-{n}", limit=n)
            items = data.make_items(config, n)
            ordered = newest_first(items)
            record(f"digest render+inline n={n}", ms=median_ms(lambda: render_digest(ordered, config), repeat))
        config = data.make_project(folder / "personal", limit=10)
        items = data.make_items(config, 10)
        date = datetime(2021, 11, 5, tzinfo=timezone.utc)
        digest = render_digest(items, config)
        envelope = Envelope.for_digest(digest, "0123456789abcdef", config.delivery, date)
        secret = SECRET.encode()
        base = config.site.url("unsubscribe")

        def fast():
            template = MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER)
            for i in range(recipients):
                template.render(recipient_for(f"r{i}@example.org", "0123456789abcdef", config.delivery, secret, base))

        sample = 20

        def naive():
            for i in range(sample):
                d = render_digest(newest_first(items), config)  # really rendered each time
                e = Envelope.for_digest(d, "0123456789abcdef", config.delivery, date)
                build_message(e, recipient_for(f"r{i}@example.org", "0123456789abcdef", config.delivery, secret, base),
                              UNSUBSCRIBE_PLACEHOLDER)

        fast_ms = median_ms(fast, 3)
        naive_ms = median_ms(naive, 3)
        per_fast = fast_ms / recipients
        per_naive = naive_ms / sample
        record(f"personalise {recipients} recipients", fast_total_ms=fast_ms, fast_per_recipient_ms=per_fast,
               naive_per_recipient_ms=per_naive, naive_total_ms_extrapolated=per_naive * recipients,
               naive_sampled=sample, speedup=per_naive / per_fast)


# -- unchanged rerun ----------------------------------------------------------------------------

def case_rerun(count, repeat) -> None:
    from pipeline import app

    print(f"rerun: `pipeline run` on {count} items, full build after a change vs nothing changed")
    with workdir() as folder:
        config = data.make_project(folder / "rerun", limit=50)
        config = config.model_copy(update={"feeds": config.feeds.model_copy(update={"limit": count})})
        data.write_content(config, count)
        app.run(config, progress=False)
        target = config.path("content") / "item-00000.md"
        original = target.read_text()
        flip = [0]

        def changed():
            flip[0] += 1
            target.write_text(original.replace("---\n", f"---\nsummary: change {flip[0]}\n", 1)
                              if flip[0] % 2 else original)
            result = app.run(config, progress=False)
            assert result.written, "a change must rewrite outputs"

        def unchanged():
            result = app.run(config, progress=False)
            assert not result.written, "an unchanged run must write nothing"

        full = median_ms(changed, repeat)
        target.write_text(original)
        app.run(config, progress=False)
        same = median_ms(unchanged, repeat)
        record(f"rerun {count} items", full_ms=full, unchanged_ms=same, unchanged_vs_full=same / full)


# -- sending ------------------------------------------------------------------------------------

class Sink:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "bench.sink"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=data.REPO)
        self.port = int(self.process.stdout.readline())

    def count(self) -> int:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _send_project(folder: Path, port: int, subscribers: int, concurrency: int, **delivery):
    from pipeline.app import open_storage

    config = data.make_project(folder, limit=10, **{
        "transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": port, "smtp.security": "none",
        "smtp.concurrency": concurrency, "batch_size": 500, **delivery})
    data.write_content(config, 10)
    storage = open_storage(config)
    for start in range(0, subscribers, 5000):
        storage.merge_subscribers(data.subscriber_rows(subscribers)[start:start + 5000])
    storage.close()
    return config


def case_send(count) -> None:
    from pipeline import app
    from pipeline.mail.message import Envelope, MessageTemplate, recipient_for
    from pipeline.publish.digest import UNSUBSCRIBE_PLACEHOLDER, render_digest

    print(f"send: {count} messages to an aiosmtpd sink in another process, pipeline vs plain smtplib")
    os.environ["PIPELINE_SECRET"] = SECRET
    sink = Sink()
    try:
        with workdir() as folder:
            config = _send_project(folder / "base", sink.port, 0, 1)
            digest = render_digest(data.make_items(config, 10), config)
            envelope = Envelope.for_digest(digest, "0123456789abcdef", config.delivery, datetime.now(timezone.utc))
            template = MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER)
            messages = [(f"reader{i:07d}@example.org",
                         template.render(recipient_for(f"reader{i:07d}@example.org", "0123456789abcdef",
                                                       config.delivery, SECRET.encode(), config.site.url("u"))))
                        for i in range(count)]
            before = sink.count()
            start = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", sink.port) as client:
                for address, message in messages:
                    client.sendmail(config.delivery.from_address, [address], message)
            baseline_s = time.perf_counter() - start
            assert sink.count() - before == count
            del messages
            record(f"send baseline smtplib x{count}", msgs_per_s=count / baseline_s)
            for concurrency in (1, 2):
                config = _send_project(folder / f"c{concurrency}", sink.port, count, concurrency)
                before = sink.count()
                start = time.perf_counter()
                report = app.run(config, progress=False).reports[0]
                seconds = time.perf_counter() - start
                assert report.sent == count and sink.count() - before == count
                record(f"send pipeline x{count} concurrency={concurrency}", msgs_per_s=count / seconds,
                       vs_baseline=(count / seconds) / (count / baseline_s))
    finally:
        sink.close()


# -- DKIM --------------------------------------------------------------------------------------

def _dkim_key(folder: Path, algorithm: str) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm == "rsa-sha256"
           else ed25519.Ed25519PrivateKey.generate())
    path = folder / f"{algorithm}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def case_dkim(recipients: int, count: int) -> None:
    """Per-message cost of signing against personalisation alone (and dkimpy's own signer), then sending
    throughput signed vs unsigned in the same run."""
    from pipeline import app
    from pipeline.mail.dkim import DkimSigner
    from pipeline.mail.message import Envelope, MessageTemplate, recipient_for
    from pipeline.publish.digest import UNSUBSCRIBE_PLACEHOLDER, render_digest

    print("dkim: per-message cost of signing after personalisation, and sending signed vs unsigned")
    os.environ["PIPELINE_SECRET"] = SECRET
    with workdir() as folder:
        config = data.make_project(folder / "dkim", limit=10)
        digest = render_digest(data.make_items(config, 10), config)
        envelope = Envelope.for_digest(digest, "0123456789abcdef", config.delivery, datetime.now(timezone.utc))
        template = MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER)
        people = [recipient_for(f"r{i}@example.org", "0123456789abcdef", config.delivery, SECRET.encode(),
                                config.site.url("u")) for i in range(recipients)]
        plain_ms = median_ms(lambda: [template.render(p) for p in people], 3) / recipients
        values: dict[str, float] = {"personalise_ms": plain_ms}
        keys = {algorithm: _dkim_key(folder, algorithm) for algorithm in ("rsa-sha256", "ed25519-sha256")}
        for algorithm, key in keys.items():
            signer = DkimSigner.from_file("example.org", "s", algorithm, key)
            ms = median_ms(lambda signer=signer: [signer.sign(template.render(p)) for p in people], 3) / recipients
            values[f"{algorithm}_ms"] = ms
            values[f"{algorithm}_vs_personalise"] = ms / plain_ms
        try:
            import dkim

            pem = keys["rsa-sha256"].read_bytes()
            sample = people[:20]
            values["dkimpy_rsa_sign_ms"] = median_ms(
                lambda: [dkim.sign(template.render(p), b"s", b"example.org", pem) for p in sample], 3) / len(sample)
        except ImportError:
            pass
        record(f"dkim per message ({recipients} recipients)", **values)
    sink = Sink()
    try:
        with workdir() as folder:
            rates = {}
            for label, extra in (("unsigned", {}), ("rsa-sha256", {"dkim": {
                    "selector": "s", "domain": "example.org", "algorithm": "rsa-sha256",
                    "key_file": str(_dkim_key(folder, "rsa-sha256"))}}), ("ed25519-sha256", {"dkim": {
                    "selector": "s", "domain": "example.org", "algorithm": "ed25519-sha256",
                    "key_file": str(_dkim_key(folder, "ed25519-sha256"))}})):
                config = _send_project(folder / label, sink.port, count, 2, **extra)
                before = sink.count()
                start = time.perf_counter()
                report = app.run(config, progress=False).reports[0]
                seconds = time.perf_counter() - start
                assert report.sent == count and sink.count() - before == count
                rates[label] = count / seconds
            record(f"send x{count} concurrency=2 signed vs unsigned", unsigned_msgs_per_s=rates["unsigned"],
                   rsa_msgs_per_s=rates["rsa-sha256"], rsa_vs_unsigned=rates["rsa-sha256"] / rates["unsigned"],
                   ed25519_msgs_per_s=rates["ed25519-sha256"],
                   ed25519_vs_unsigned=rates["ed25519-sha256"] / rates["unsigned"])
    finally:
        sink.close()


# -- memory -------------------------------------------------------------------------------------

def peak_rss_mb(args: list[str], env: dict | None = None) -> float:
    """Peak RSS of a fresh interpreter running ``args`` (``-m module ...`` or ``-c code ...``)."""
    with tempfile.NamedTemporaryFile(suffix=".peak") as out:
        result = subprocess.run([sys.executable, "-m", "bench.peak", out.name, *args], env=env, cwd=data.REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{args} failed: {result.stderr[-2000:]}")
        return float(Path(out.name).read_text())


def case_memory(subscriber_sizes, feed_items) -> None:
    print("memory: peak RSS of a send (pipeline send, SMTP sink in another process) and of a feed build")
    sink = Sink()
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    try:
        with workdir() as folder:
            for n in subscriber_sizes:
                config = _send_project(folder / f"mem-{n}", sink.port, n, 2)
                mb = peak_rss_mb(["-m", "pipeline", "--config", str(config.source_file), "run"], env)
                record(f"peak RSS send to {n} subscribers", mb=mb)
            config = data.make_project(folder / "feeds-mem", limit=feed_items)
            code = ("import sys; from bench import data; from pipeline.config import load_config; "
                    "from pipeline.publish.feeds import build_feeds; c = load_config(sys.argv[1]); "
                    "build_feeds(data.make_items(c, int(sys.argv[2])), c)")  # argv[0] is "-c"
            mb = peak_rss_mb(["-c", code, str(config.source_file), str(feed_items)])
            baseline = peak_rss_mb(["-c", code, str(config.source_file), "0"])
            record(f"peak RSS feed build {feed_items} items", mb=mb, empty_feed_mb=baseline)
    finally:
        sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help="feeds, digest, rerun, send, dkim, memory (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    cases = args.cases or ["feeds", "digest", "rerun", "send", "dkim", "memory"]
    quick = args.quick
    started = time.perf_counter()
    if "feeds" in cases:
        case_feeds([100, 1000] if quick else [100, 1000, 10000], 3 if quick else 5)
    if "digest" in cases:
        case_digest([10, 50] if quick else [10, 50, 200], 1000 if quick else 10000, 3 if quick else 5)
    if "rerun" in cases:
        case_rerun(200 if quick else 1000, 3)
    if "send" in cases:
        case_send(2000 if quick else 10000)
    if "dkim" in cases:
        case_dkim(500 if quick else 2000, 2000 if quick else 10000)
    if "memory" in cases:
        case_memory([1000, 10000] if quick else [1000, 100000], 1000 if quick else 10000)
    elapsed = time.perf_counter() - started
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "quick": quick, "seconds": round(elapsed, 1), "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{len(rows)} results in {elapsed:.0f}s; written to {RESULTS.relative_to(data.REPO)}")


if __name__ == "__main__":
    main()
