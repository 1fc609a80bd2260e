"""`pipeline init DIR`: a new organisation's newsroom in one command, which builds and sends at once and says
nothing of the Society whose project is the repository's worked example."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import feedparser
import pytest

from pipeline.environment import weak_secret

from .conftest import run_cli, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink

ANSWERS = ["--name", "Riverside Food Bank", "--site-url", "https://news.example.org/", "--from", "news@example.org",
           "--postal-address", "1 Quay St, Bristol BS1 1AA", "--timezone", "Europe/London"]
NOT_OURS = re.compile(r"National MS Society|National Multiple Sclerosis|(?-i:\bMS\b)|sclerosis|nationalmssociety",
                      re.IGNORECASE)


@pytest.fixture
def newsroom(tmp_path) -> Path:
    folder = tmp_path / "newsroom"
    run_cli(tmp_path, "init", str(folder), *ANSWERS, check=True)
    return folder


def _env(newsroom: Path) -> dict[str, str | None]:
    """pipeline.env as `set -a; . ./pipeline.env` gives it to the command."""
    lines = (newsroom / "pipeline.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_init_writes_a_project_a_newcomer_can_read(newsroom):
    names = sorted(str(path.relative_to(newsroom)) for path in newsroom.rglob("*") if path.is_file())
    assert {"config.yaml", "content/welcome.md", "content/images/welcome.png", ".gitignore", "pipeline.env",
            "deploy/crontab", "deploy/newsletter-pipeline-run@.service"} <= set(names)
    config = (newsroom / "config.yaml").read_text()
    assert len([line for line in config.splitlines() if line.lstrip().startswith("#")]) >= 10  # commented
    assert len([line for line in config.splitlines() if line.strip() and not line.lstrip().startswith("#")]) < 50
    assert (newsroom / ".gitignore").read_text().split() == ["#", "Made", "by", "`pipeline", "run`", "and",
                                                             "friends;", "never", "commit", "them.", ".state/",
                                                             "public/", "outbox/", "#", "Secrets.", "pipeline.env"]


def test_pipeline_env_holds_a_generated_secret_only_its_owner_reads(newsroom, tmp_path):
    env = newsroom / "pipeline.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    secret = _env(newsroom)["PIPELINE_SECRET"]
    assert secret and weak_secret(secret) is None
    other = tmp_path / "other"
    run_cli(tmp_path, "init", str(other), *ANSWERS, check=True)
    assert _env(other)["PIPELINE_SECRET"] != secret


def test_the_deploy_files_are_filled_in_for_the_folder(newsroom):
    for path in (newsroom / "deploy").iterdir():
        text = path.read_text()
        assert "/srv/newsletter" not in text and "/etc/newsletter" not in text, path.name
    assert f"cd {newsroom.resolve()} && set -a && . ./pipeline.env" in (newsroom / "deploy" / "crontab").read_text()
    assert f"EnvironmentFile={newsroom.resolve()}/pipeline.env" in (
        newsroom / "deploy" / "newsletter-pipeline-run@.service").read_text()


def test_the_deploy_schedules_keep_their_local_times_in_the_projects_timezone(newsroom):
    """The weekly digest goes at 09:00 London time, as config.yaml's schedule says, in cron and in systemd."""
    crontab = (newsroom / "deploy" / "crontab").read_text()
    timer = (newsroom / "deploy" / "newsletter-pipeline-run@weekly-digest.timer").read_text()
    assert "CRON_TZ=Europe/London" in crontab and "OnCalendar=Mon *-*-* 09:00:00 Europe/London" in timer
    assert "America/New_York" not in crontab + timer
    assert 'timezone: "Europe/London"' in (newsroom / "config.yaml").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                    reason="no systemd-analyze (apt-get install systemd); CI runs this")
def test_the_deploy_units_written_for_the_folder_pass_systemd_analyze_verify(newsroom):
    units = [str(path) for path in sorted((newsroom / "deploy").iterdir())
             if path.suffix in (".service", ".timer") and "@." not in path.name]
    for path in (newsroom / "deploy").glob("*.service"):
        (line,) = [line for line in path.read_text().splitlines() if line.startswith("ExecStart=")]
        assert Path(line.removeprefix("ExecStart=").split()[0]).is_file(), line
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_first_run_builds_feeds_and_a_digest_of_the_new_organisation(newsroom):
    run_cli(newsroom, "run", check=True, env=_env(newsroom))
    public = newsroom / "public"
    for name in ("rss.xml", "atom.xml"):
        parsed = feedparser.parse((public / name).read_bytes())
        assert not parsed.bozo, (name, parsed.bozo_exception)
        assert parsed.feed.title == "Riverside Food Bank News"
        assert [entry.title for entry in parsed.entries] == ["Welcome to Riverside Food Bank News"]
    feed = json.loads((public / "feed.json").read_text())
    assert (feed["title"], [item["title"] for item in feed["items"]]) == (
        "Riverside Food Bank News", ["Welcome to Riverside Food Bank News"])
    assert "Riverside Food Bank" in (public / "digest.html").read_text()
    assert "1 Quay St, Bristol BS1 1AA" in (public / "digest.txt").read_text()
    for path in public.rglob("*"):
        if path.is_file() and path.suffix in (".xml", ".json", ".html", ".txt"):
            found = NOT_OURS.search(path.read_text(encoding="utf-8"))
            assert found is None, f"{path.relative_to(newsroom)}: {found and found.group()}"


def test_the_example_story_image_is_drawn_at_its_declared_size(newsroom):
    from PIL import Image

    with Image.open(newsroom / "content" / "images" / "welcome.png") as image:
        assert image.size == (1200, 630)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 2  # a banner with words, not a blank


def test_with_one_subscriber_it_sends_without_force(newsroom):
    env = _env(newsroom)
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        use_smtp(newsroom, sink.port)
        run_cli(newsroom, "subscribers", "add", "ann@example.org", "--confirmed", check=True, env=env)
        result = run_cli(newsroom, "run", env=env)
        assert result.returncode == 0, result.stderr
    (received,) = handler.received
    message = received.message
    assert message["From"] == "Riverside Food Bank News <news@example.org>"
    assert message["To"] == "ann@example.org"
    text = message.get_body(("plain",)).get_content()
    assert "Riverside Food Bank" in text and NOT_OURS.search(text) is None


def test_init_never_overwrites_a_project(newsroom, tmp_path):
    before = (newsroom / "config.yaml").read_bytes()
    result = run_cli(tmp_path, "init", str(newsroom), *ANSWERS)
    assert result.returncode == 1
    assert f"{newsroom.resolve() / 'config.yaml'}: already exists" in result.stderr
    assert (newsroom / "config.yaml").read_bytes() == before


def test_a_missing_answer_without_a_terminal_names_its_option(tmp_path):
    result = run_cli(tmp_path, "init", str(tmp_path / "x"), *ANSWERS[:8])
    assert result.returncode == 2
    assert "Error: --timezone: required (no terminal to ask on)" in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_bad_answer_names_its_option_and_writes_nothing(tmp_path):
    answers = [*ANSWERS[:-1], "Bristol/Quay"]
    result = run_cli(tmp_path, "init", str(tmp_path / "x"), *answers)
    assert result.returncode == 1
    assert "--timezone: unknown timezone 'Bristol/Quay'" in result.stderr
    assert not (tmp_path / "x").exists()
