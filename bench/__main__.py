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
import gc
import io
import json
import os
import platform
import pstats
import secrets
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
SECRET = secrets.token_urlsafe(32)  # a fresh random secret each run, as `pipeline init` makes one
rows: list[dict] = []


def median_ms(fn, repeat: int) -> float:
    return statistics.median(timed_ms(fn) for _ in range(repeat))


def timed_ms(fn) -> float:
    """One call, from a collected heap: without it a call pays for the cycle collections that the
    previous call's allocations (often the other side's) brought near, and a full collection costs
    tens of milliseconds here.  The collector stays on during the call, so its own garbage counts."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


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


# -- start-up -----------------------------------------------------------------------------------

def case_startup(repeat) -> None:
    print("start-up: `pipeline --help` / `--version` as commands vs `python -c pass`, same run")
    script = str(Path(sys.executable).with_name("pipeline"))
    for args in (["--version"], ["--help"]):
        command = [script, *args] if Path(script).exists() else [sys.executable, "-m", "pipeline", *args]
        # Interleaved, so both see the same machine load.
        ours, bare = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            ours.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append((time.perf_counter() - started) * 1000)
        pipeline_ms, baseline_ms = statistics.median(ours), statistics.median(bare)
        record(f"pipeline {args[0]}", pipeline_ms=pipeline_ms, baseline_python_pass_ms=baseline_ms,
               ratio=pipeline_ms / baseline_ms)


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


def feedgen_alone(items, config) -> tuple[bytes, bytes]:
    """The baseline: feedgen by itself writing RSS and Atom with the same fields from one generator
    (dc:creator, categories, summary, content, enclosure), none of the pipeline's extras."""
    from feedgen.feed import FeedGenerator

    site = config.site
    fg = FeedGenerator()
    fg.load_extension("dc")
    fg.id(site.base_url)
    fg.title(site.title)
    fg.subtitle(site.description)
    fg.language(site.language)
    fg.author({"name": config.organisation.name, "uri": config.organisation.website})
    fg.link(href=site.url("rss.xml"), rel="self", type="application/rss+xml")
    fg.link(href=site.base_url, rel="alternate", type="text/html")
    fg.lastBuildDate(max(item.last_modified for item in items))
    fg.updated(max(item.last_modified for item in items))
    for item in items:
        fe = fg.add_entry(order="append")
        fe.id(item.id)
        fe.guid(item.id, permalink=False)
        fe.title(item.title)
        fe.link(href=item.link, rel="alternate", type="text/html")
        fe.published(item.published)
        fe.updated(item.last_modified)
        fe.author({"name": item.author or config.organisation.name})
        fe.dc.dc_creator(item.author or config.organisation.name)
        for tag in item.tags:
            fe.category(term=tag, label=tag)
        fe.summary(item.summary)
        fe.content(item.full_html, type="html")
        if item.image:
            fe.enclosure(item.image.url, str(item.image.length), item.image.type)
    return fg.rss_str(pretty=True), fg.atom_str(pretty=True)


def case_feeds(sizes, repeat) -> None:
    from pipeline.publish.feeds import build_feeds

    print("feeds: the pipeline's RSS + Atom + JSON Feed vs feedgen alone writing RSS + Atom with the same "
          "fields (one generator), same run")
    with workdir() as folder:
        for n in sizes:
            config = data.make_project(folder / f"feeds-{n}", limit=n)
            items = data.make_items(config, n)
            reps = max(1, repeat if n < 10000 else repeat // 2)
            ours, base = [], []
            for _ in range(reps):  # interleaved, so both see the same machine load
                ours.append(timed_ms(lambda: build_feeds(items, config)))
                base.append(timed_ms(lambda: feedgen_alone(items, config)))
            pipeline_ms, baseline_ms = statistics.median(ours), statistics.median(base)
            record(f"feeds RSS+Atom+JSON n={n}", pipeline_ms=pipeline_ms, baseline_feedgen_rss_atom_ms=baseline_ms,
                   ratio=pipeline_ms / baseline_ms)
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
        record(f"personalise {recipients} recipients (per recipient, incl. MIME)", pipeline_ms=per_fast,
               baseline_naive_render_and_build_ms=per_naive, ratio=per_fast / per_naive, naive_sampled=sample)


def delete_build_caches(state: Path) -> None:
    """What makes a build cold: the parse, archive and page caches and the record of the last run's inputs."""
    from pipeline.publish.feed_files import ArchiveCache
    from pipeline.publish.outputs import FINGERPRINT_FILE
    from pipeline.publish.stories import PageCache
    from pipeline.sources.local import ParseCache

    for name in (ParseCache.FILE, ArchiveCache.FILE, PageCache.FILE, FINGERPRINT_FILE):
        (state / name).unlink(missing_ok=True)


# -- unchanged rerun ----------------------------------------------------------------------------

def case_rerun(count, repeat) -> None:
    from pipeline import usecases

    print(f"rerun: `pipeline run` on {count} items: one file edited (parse and archive caches warm) vs a cold "
          "full build (caches deleted), and nothing changed; same run")
    with workdir() as folder:
        config = data.make_project(folder / "rerun", limit=50)
        data.write_content(config, count)
        usecases.run(config, progress=False)
        state = config.path("state")
        target = config.path("content") / "item-00000.md"
        original = target.read_text()
        flip = [0]

        def edit() -> None:
            flip[0] += 1
            target.write_text(original.replace("---\n", f"---\nsummary: change {flip[0]}\n", 1))

        def one_file():
            edit()
            result = usecases.run(config, progress=False)
            assert result.written, "a change must rewrite outputs"

        def cold():
            edit()
            delete_build_caches(state)
            result = usecases.run(config, progress=False)
            assert result.written, "a change must rewrite outputs"

        def unchanged():
            result = usecases.run(config, progress=False)
            assert not result.written, "an unchanged run must write nothing"

        full = median_ms(cold, repeat)
        one = median_ms(one_file, repeat)
        same = median_ms(unchanged, repeat)
        record(f"rebuild after one file edited, {count} items", pipeline_ms=one, baseline_cold_full_build_ms=full,
               ratio=one / full)
        record(f"rerun with nothing changed, {count} items", pipeline_ms=same, baseline_cold_full_build_ms=full,
               ratio=same / full)


def case_rerun_command(count, repeat) -> None:
    """The same as an operator runs it: `pipeline run` as a command, so start-up and imports count."""
    print(f"rerun as a command: `pipeline run` on {count} items with nothing changed vs a cold full build "
          "(caches deleted), both as commands, same run")
    script = str(Path(sys.executable).with_name("pipeline"))
    base = [script] if Path(script).exists() else [sys.executable, "-m", "pipeline"]
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    with workdir() as folder:
        config = data.make_project(folder / "command", limit=50)
        data.write_content(config, count)
        command = [*base, "--config", str(config.source_file), "run"]

        def run() -> float:
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            return (time.perf_counter() - started) * 1000

        def cold() -> float:
            delete_build_caches(config.path("state"))
            return run()

        run()
        full, same = [], []
        for _ in range(repeat):  # interleaved, so both see the same machine load
            full.append(cold())
            same.append(run())
        pipeline_ms, baseline_ms = statistics.median(same), statistics.median(full)
        record(f"`pipeline run` command, nothing changed, {count} items", pipeline_ms=pipeline_ms,
               baseline_cold_full_build_command_ms=baseline_ms, ratio=pipeline_ms / baseline_ms)


# -- ledger claims ------------------------------------------------------------------------------

def case_claims(sizes, repeat) -> None:
    from sqlalchemy import text

    from pipeline.state.storage import Storage, StoredDigest

    print(f"claims: taking a batch of 500 ledger rows late in an edition (all but the last 1,000 sent), "
          f"ledger of {sizes[-1]:,} rows vs {sizes[0]:,}, SQLite, same run")
    timings = {}
    with workdir() as folder:
        for n in sizes:
            store = Storage.for_state(folder / f"claims-{n}")
            for start in range(0, n, 20000):
                store.merge_subscribers([(f"r{i:07d}@example.org", None, {}) for i in range(start, min(n, start + 20000))])
            store.create_edition("e1", ["urn:x:1"], StoredDigest("S", "<p>x</p>", "x"))
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE deliveries SET status = 'sent' WHERE subscriber_id <= :n"), {"n": n - 1000})

            times = []
            for _ in range(repeat + 1):  # the first one warms the caches
                started = time.perf_counter()
                assert len(store.claim("e1", 500, "w")) == 500
                times.append((time.perf_counter() - started) * 1000)
                _release(store)
            timings[n] = statistics.median(times[1:])
            store.close()
    small, large = sizes[0], sizes[-1]
    record(f"claim 500 rows, ledger {large} vs {small}", pipeline_ms=timings[large], baseline_ms=timings[small],
           ratio=timings[large] / timings[small])


def _release(store) -> None:
    from sqlalchemy import text

    with store.engine.begin() as conn:
        conn.execute(text("UPDATE deliveries SET status = 'pending', claimed_by = NULL WHERE status = 'sending'"))


# -- sending ------------------------------------------------------------------------------------

class Sink:
    def __init__(self, pipelining: bool = True):
        flags = [] if pipelining else ["--no-pipelining"]
        self.process = subprocess.Popen([sys.executable, "-m", "bench.sink", *flags], stdin=subprocess.PIPE,
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
    from pipeline.usecases import open_storage

    config = data.make_project(folder, limit=10, **{
        "transport": "smtp", "smtp.host": "127.0.0.1", "smtp.port": port, "smtp.security": "none",
        "smtp.concurrency": concurrency, "batch_size": 500, **delivery})
    data.write_content(config, 10)
    storage = open_storage(config)
    for start in range(0, subscribers, 5000):
        storage.merge_subscribers(data.subscriber_rows(subscribers)[start:start + 5000])
    storage.close()
    return config


class SendTimer:
    """Times ``Sender.run`` alone inside a real ``usecases.run``: planning the edition, writing its ledger
    rows and rendering the site are not sending, and the baseline does none of them."""

    def __init__(self):
        from pipeline.delivery.engine import Sender

        self.sender, self.original = Sender, Sender.run
        self.wall = self.cpu = 0.0

    def __enter__(self):
        timer, original = self, self.original

        def timed(sender):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(sender)
            finally:
                timer.wall += time.perf_counter() - wall
                timer.cpu += time.process_time() - cpu

        self.sender.run = timed
        return self

    def __exit__(self, *exc):
        self.sender.run = self.original


def case_send(count, rounds) -> None:
    _case_send(count, (1, 2, 4), pipelining=True, rounds=rounds)
    _case_send(count, (2,), pipelining=False, rounds=rounds)


def _case_send(count: int, connections: tuple[int, ...], pipelining: bool, rounds: int) -> None:
    from pipeline import usecases
    from pipeline.mail.message import Envelope, MessageTemplate, recipient_for
    from pipeline.publish.digest import UNSUBSCRIBE_PLACEHOLDER, render_digest

    offered = "offering PIPELINING" if pipelining else "not offering PIPELINING"
    print(f"send: {count} messages to the raw-socket sink (bench/sink.py, another process, {offered}): the "
          "pipeline's send engine (claim, render, ledger, SMTP) vs plain smtplib sendmail of pre-rendered "
          "messages over one reused connection, same sink, same run")
    os.environ["PIPELINE_SECRET"] = SECRET
    sink = Sink(pipelining)
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

            def baseline() -> tuple[float, float]:
                before = sink.count()
                wall, cpu = time.perf_counter(), time.process_time()
                with smtplib.SMTP("127.0.0.1", sink.port) as client:
                    for address, message in messages:
                        client.sendmail(config.delivery.from_address, [address], message)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert sink.count() - before == count
                return wall, cpu

            for concurrency in connections:
                # Rounds of baseline then pipeline, interleaved, so a load spike on this shared machine hits
                # one round, not one side; the row shows the median of each figure and of the ratios.
                walls, cpus, base_walls, base_cpus, ratios = [], [], [], [], []
                for round_ in range(rounds):
                    config = _send_project(folder / f"c{concurrency}-{round_}", sink.port, count, concurrency)
                    base_wall, base_cpu = baseline()
                    before = sink.count()
                    with SendTimer() as timer:
                        report = usecases.run(config, progress=False).reports[0]
                    assert report.sent == count and sink.count() - before == count
                    walls.append(timer.wall)
                    cpus.append(timer.cpu)
                    base_walls.append(base_wall)
                    base_cpus.append(base_cpu)
                    ratios.append(base_wall / timer.wall)
                median = statistics.median
                default = " (default)" if concurrency == 2 else ""
                plain = "" if pipelining else ", no PIPELINING"
                record(f"send x{count} connections={concurrency}{default}{plain}, median of {rounds}",
                       pipeline_msgs_per_s=count / median(walls), baseline_msgs_per_s=count / median(base_walls),
                       ratio=median(ratios), pipeline_cpu_s=median(cpus), baseline_cpu_s=median(base_cpus))
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
    from pipeline import usecases
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
                report = usecases.run(config, progress=False).reports[0]
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
                        help="startup, feeds, digest, rerun, claims, send, sendcmd, greylist, dkim, memory, "
                             "signup, topics, unsubscribe, build (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--greylist-delay", type=float, default=None, metavar="SECONDS",
                        help="the greylisting sink's delay (default 60, 5 with --quick)")
    parser.add_argument("--build-30k", action="store_true",
                        help="the build case at 30,000 stories too (several minutes more)")
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="FILE",
                        help=f"where the rows go (default {RESULTS.relative_to(data.REPO)})")
    args = parser.parse_args()
    cases = args.cases or ["startup", "feeds", "digest", "rerun", "claims", "send", "sendcmd", "greylist", "dkim",
                           "memory", "signup", "topics", "unsubscribe", "build"]
    quick = args.quick
    started = time.perf_counter()
    if "startup" in cases:
        case_startup(10 if quick else 30)
    if "feeds" in cases:
        case_feeds([100, 1000] if quick else [100, 1000, 10000], 3 if quick else 5)
    if "digest" in cases:
        case_digest([10, 50] if quick else [10, 50, 200], 1000 if quick else 10000, 3 if quick else 5)
    if "rerun" in cases:
        case_rerun(2000 if quick else 10000, 3)
        case_rerun_command(1000, 3)
    if "claims" in cases:
        case_claims([10000, 100000] if not quick else [10000, 50000], 5)
    if "send" in cases:
        case_send(2000 if quick else 10000, 3)
    if "sendcmd" in cases or "greylist" in cases:  # issue 26: bench/sendcmd.py
        from .sendcmd import case_greylist, case_send_command

        if "sendcmd" in cases:
            case_send_command([2000] if quick else [2000, 20000], 3, record, workdir, SECRET)
        if "greylist" in cases:
            delay = args.greylist_delay if args.greylist_delay is not None else 5.0 if quick else 60.0
            case_greylist(1000, delay, record, workdir, SECRET)
    if "dkim" in cases:
        case_dkim(500 if quick else 2000, 2000 if quick else 10000)
    if "memory" in cases:
        case_memory([1000, 10000] if quick else [1000, 100000], 1000 if quick else 10000)
    if "signup" in cases or "topics" in cases:  # issue 13: bench/signup.py
        from .signup import case_signup, case_topic_send

        os.environ["PIPELINE_SECRET"] = SECRET
        sink = Sink()
        try:
            if "signup" in cases:
                case_signup(300 if quick else 2000, sink.port, record, workdir)
            if "topics" in cases:
                case_topic_send(2000 if quick else 10000, _send_project, sink, record, workdir)
        finally:
            sink.close()
    if "unsubscribe" in cases:  # issue 24: bench/unsubscribe.py
        from .unsubscribe import case_one_click

        case_one_click(1000 if quick else 5000, 50, record, workdir, SECRET)
    if "build" in cases:  # issue 26: whole commands on the shaped corpus, against Hugo and the floor
        from .build import case_build

        case_build([1000] if quick else [10000] + ([30000] if args.build_30k else []), 1 if quick else 3,
                   record, workdir, SECRET)
    elapsed = time.perf_counter() - started
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "quick": quick, "seconds": round(elapsed, 1), "rows": rows,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{len(rows)} results in {elapsed:.0f}s; written to {args.results}")


if __name__ == "__main__":
    main()
