"""Runs that end honestly: public/ is switched whole (the previous set or the new one, never a mix,
whenever a run is killed), and a run whose process is gone is shown as interrupted, not running."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import SECRET, add_subscribers, run_cli, set_config, snapshot, use_smtp, write_item
from .smtp_sink import RecordingHandler, SmtpSink, free_port

STORIES = 200
KILLS = 30


def manifest(public: Path) -> dict[str, str]:
    """Every file of a published set, by name, with the hash of its bytes."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in snapshot(public).items()}


def write_corpus(project: Path, variant: str) -> None:
    """The stories of one variant: B retitles every tenth story of A, drops one and adds two, so the two
    published sets differ in feeds, archive pages, topic pages and in which files exist at all."""
    content = project / "content"
    for path in content.glob("story-*.md"):
        path.unlink()
    for n in range(STORIES):
        if variant == "B" and n == 7:
            continue
        title = f"Story {n}, revised" if variant == "B" and n % 10 == 0 else f"Story {n}"
        tag = ("research", "living with ms", "advocacy")[n % 3]
        write_item(project, f"story-{n:04d}",
                   f'title: "{title}"\ndate: 2021-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:00:00Z\ntags: [{tag}]',
                   f"Paragraph one of story {n}.\n\nParagraph two, with [a link](https://example.org/{n}).\n")
    if variant == "B":  # a new topic: its feeds and page exist only in B
        for n in range(2):
            write_item(project, f"story-extra-{n}",
                       f'title: "Fundraising story {n}"\ndate: 2021-12-3{n}T09:00:00Z\ntags: [fundraising]')


def cold_build(project: Path, variant: str, where: Path) -> dict[str, str]:
    """The set a run of this variant makes from nothing: the reference a killed run is compared against."""
    shutil.copytree(project, where, ignore=shutil.ignore_patterns("public", "public.versions", ".state"))
    write_corpus(where, variant)
    run_cli(where, "run", check=True)
    return manifest(where / "public")


def run_command(project: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *options, "--config", str(project / "config.yaml"),
                             "run"], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if options else subprocess.DEVNULL, text=True)


def timed_switch(project: Path) -> tuple[float, float, float]:
    """One uninterrupted run, timed from its own debug log: when it began building the new version,
    when that version was switched in, and when the run ended (seconds after it was started)."""
    started = time.monotonic()
    process = run_command(project, "-vv")
    marks: dict[str, float] = {}
    for line in process.stderr:
        for mark in ("building ", " now shows "):
            if mark in line:
                marks.setdefault(mark, time.monotonic() - started)
    assert process.wait(timeout=120) == 0
    return marks["building "], marks[" now shows "], time.monotonic() - started


def test_a_run_killed_at_thirty_random_instants_leaves_public_wholly_the_old_set_or_the_new(project, tmp_path):
    set_config(project, **{"feeds.limit": 4})  # many archive pages: a switch writes a hundred files and more
    sets = {variant: cold_build(project, variant, tmp_path / f"cold-{variant}") for variant in "AB"}
    assert sets["A"] != sets["B"] and set(sets["A"]) != set(sets["B"])
    write_corpus(project, "A")
    run_cli(project, "run", check=True)
    write_corpus(project, "B")
    building, switched, duration = timed_switch(project)
    assert manifest(project / "public") == sets["B"]
    shown = "B"

    rng = random.Random(20211104)
    # Stratified random instants: half over a whole run and a little past it, half while the new version
    # is being built (where a mix would come from), so every phase of a run gets its share of kills.
    half = KILLS // 2
    instants = [duration * 1.1 * (n + rng.random()) / half for n in range(half)]
    instants += [building + (switched - building) * (n + rng.random()) / (KILLS - half) for n in range(KILLS - half)]
    rng.shuffle(instants)
    outcomes = {"previous": 0, "new": 0}
    half_built = 0
    for kill, instant in enumerate(instants):
        target = "A" if shown == "B" else "B"
        write_corpus(project, target)
        process = run_command(project)
        try:
            process.wait(timeout=instant)  # finished before its instant: the new set, whole
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        now = manifest(project / "public")
        assert now in (sets[shown], sets[target]), f"kill {kill} at {instant:.2f}s left a mix of two sets"
        outcomes["previous" if now == sets[shown] else "new"] += 1
        live = (project / "public").resolve().name
        half_built += any(entry.name > live for entry in (project / "public.versions").iterdir())
        shown = "A" if now == sets["A"] else "B"
    assert outcomes["previous"] and outcomes["new"], outcomes  # kills landed both before and after a switch
    assert half_built, f"no kill landed while a version was being built ({building:.2f}-{switched:.2f}s of {duration:.2f}s)"

    report = json.loads(run_cli(project, "status", "--json", "--runs", "100", check=True).stdout)
    statuses = [row["status"] for row in report["runs"]]
    assert "running" not in statuses and set(statuses) <= {"ok", "interrupted"}
    interrupted = [row for row in report["runs"] if row["status"] == "interrupted"]
    assert interrupted and all(row["started_at"] and row["finished_at"] is None for row in interrupted)


def test_a_killed_run_is_shown_interrupted_with_its_start_time_and_the_next_run_says_so(project):
    gate = threading.Event()  # the relay holds the first message until the sender is dead
    handler = RecordingHandler(gate=gate)
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 3)
        env = {**os.environ, "PIPELINE_SECRET": SECRET}
        sender = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"), "run"],
                                  cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert handler.data_started.wait(timeout=120), "the run never reached the relay"
        finally:
            sender.send_signal(signal.SIGKILL)
            sender.wait(timeout=30)
        gate.set()

        status = run_cli(project, "status", check=True)
        (line,) = [line for line in status.stdout.splitlines() if "interrupted" in line]
        report = json.loads(run_cli(project, "status", "--json", check=True).stdout)
        (killed,) = report["runs"]
        assert killed["status"] == "interrupted" and killed["finished_at"] is None
        assert line.startswith(f"  {killed['started_at']}  manual") and "its process is gone" in line

        rerun = run_cli(project, "run", check=True, env={"PIPELINE_SECRET": SECRET})
        assert f"run {killed['id']} (job manual, started {killed['started_at']}) was interrupted" in rerun.stderr
    report = json.loads(run_cli(project, "status", "--json", check=True).stdout)
    assert [row["status"] for row in report["runs"]] == ["ok", "interrupted"]  # recorded as such, said once


def test_a_public_folder_from_before_versions_becomes_the_kept_previous_version(project):
    run_cli(project, "run", check=True)
    old = manifest(project / "public")
    live = (project / "public").resolve()
    (project / "public").unlink()  # as an older pipeline left it: a real folder
    shutil.copytree(live, project / "public")
    shutil.rmtree(project / "public.versions")
    (project / "public" / "robots.txt").write_text("User-agent: *\n")  # put there by hand: it stays
    write_item(project, "a-newer-story", 'title: "A newer story"\ndate: 2025-01-01T09:00:00Z')

    run_cli(project, "run", check=True)
    assert (project / "public").is_symlink()
    new = manifest(project / "public")
    robots = hashlib.sha256(b"User-agent: *\n").hexdigest()
    assert new["robots.txt"] == robots and new["rss.xml"] != old["rss.xml"]
    (previous,) = [p for p in (project / "public.versions").iterdir() if p != (project / "public").resolve()]
    assert manifest(previous) == {**old, "robots.txt": robots}  # the old folder, whole, until the next switch


def test_each_switch_keeps_the_version_before_and_deletes_older_ones_sharing_unchanged_files(project):
    run_cli(project, "run", check=True)
    first = (project / "public").resolve()
    story = project / "content" / "mesems-stem-cell-trial-results.md"
    for n in range(2):
        story.write_text(story.read_text().replace('title: "', f'title: "Update {n}: ', 1))
        run_cli(project, "run", check=True)
    versions = sorted(p.name for p in (project / "public.versions").iterdir())
    live = (project / "public").resolve()
    assert len(versions) == 2 and live.name == versions[-1] and first.name not in versions
    assert os.readlink(project / "public") == f"public.versions/{live.name}"  # relative: the project may move
    previous = project / "public.versions" / versions[0]
    unchanged = live / "feed.xsl"  # not made from the stories: the same file in both versions
    assert unchanged.stat().st_ino == (previous / "feed.xsl").stat().st_ino
    assert (live / "rss.xml").stat().st_ino != (previous / "rss.xml").stat().st_ino


def test_a_run_that_changes_nothing_makes_no_version(project):
    run_cli(project, "run", check=True)
    before = sorted((project / "public.versions").iterdir())
    set_config(project, **{"logging.level": "DEBUG"})  # a new config: the run rebuilds, every byte the same
    result = run_cli(project, "run", check=True)
    assert "nothing changed" not in result.stderr  # it did rebuild ...
    assert sorted((project / "public.versions").iterdir()) == before  # ... and switched nothing


NGINX = Path("/usr/sbin/nginx")
NGINX_CONF = """{user}daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location /news-feed/ {{
            alias {public}/;
            disable_symlinks on from=$document_root;
        }}
    }}
}}
"""


@pytest.fixture
def nginx(project, tmp_path):
    """nginx serving the project's public/ as docs/how-to/serve-public.md configures it (symlink checks on)."""
    if not NGINX.exists():
        if os.environ.get("CI"):
            pytest.fail("no nginx (apt-get install nginx): CI must run this test")
        pytest.skip("no nginx (apt-get install nginx); CI runs this")
    root, port = tmp_path / "nginx", free_port()
    (root / "tmp").mkdir(parents=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the test's private folders as its user
    (root / "nginx.conf").write_text(NGINX_CONF.format(user=user, root=root, port=port, public=project / "public"))
    server = subprocess.Popen([str(NGINX), "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/news-feed/"
    deadline = time.monotonic() + 30
    while True:  # until nginx listens (it answers 404 before the first run made public/)
        try:
            urllib.request.urlopen(url + "rss.xml", timeout=5)
            break
        except urllib.error.HTTPError:
            break
        except OSError:  # not listening yet: wait for nginx to exit (a failure) or for the next try
            try:
                server.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                assert time.monotonic() < deadline, "nginx never listened"
            else:
                raise AssertionError(f"nginx stopped: {server.stderr.read()}") from None
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_nginx_configured_as_the_guide_says_serves_each_new_version_whole(project, nginx):
    def served(name: str) -> bytes:
        with urllib.request.urlopen(nginx + name, timeout=10) as response:
            return response.read()

    run_cli(project, "run", check=True)
    assert served("rss.xml") == (project / "public" / "rss.xml").read_bytes()
    story = project / "content" / "mesems-stem-cell-trial-results.md"
    story.write_text(story.read_text().replace('title: "', 'title: "Corrected: ', 1))
    run_cli(project, "run", check=True)
    assert b"Corrected: " in served("rss.xml") and served("rss.xml") == (project / "public" / "rss.xml").read_bytes()
    assert served("feed.xsl") == (project / "public" / "feed.xsl").read_bytes()  # a file shared by two versions


def test_a_run_left_running_by_an_older_version_is_closed_as_interrupted_by_the_next_run(project, config):
    from pipeline.usecases import open_storage

    with open_storage(config) as storage:  # as the pipeline before run owners wrote it: no owner recorded
        old = storage.start_run("weekly-digest")
    assert [row["status"] for row in json.loads(run_cli(project, "status", "--json", check=True).stdout)["runs"]] \
        == ["running"]  # status alone cannot tell whose it was
    rerun = run_cli(project, "run", check=True)
    assert f"run {old} (job weekly-digest, started " in rerun.stderr and "was interrupted" in rerun.stderr
    report = json.loads(run_cli(project, "status", "--json", check=True).stdout)
    assert [(row["id"], row["status"]) for row in report["runs"]] == [(old + 1, "ok"), (old, "interrupted")]
