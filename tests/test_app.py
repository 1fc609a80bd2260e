"""One run, one place: the use cases that the CLI, the scheduler and the preview server share."""

from __future__ import annotations

import time
import wsgiref.util
from email import message_from_bytes, policy

from click.testing import CliRunner

from pipeline import usecases
from pipeline.cli import cli
from pipeline.config import load_config
from pipeline.service.preview import make_app
from pipeline.state.storage import SENDING

from .conftest import add_subscribers, override_template, set_config
from .feed_server import FeedServer, Response

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Partner</title><link>https://partner.example.org/</link>
<description>d</description><item><title>Partner news</title><link>https://partner.example.org/1</link>
<guid>partner-1</guid><pubDate>Wed, 10 Nov 2021 12:00:00 GMT</pubDate><description>Body</description></item>
</channel></rss>"""


def _visit(preview_app, path: str = "/") -> str:
    environ: dict = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    status: list[str] = []
    body = b"".join(preview_app(environ, lambda s, headers: status.append(s)))
    assert status == ["200 OK"], status
    return body.decode("utf-8")


def _invoke(project, *args: str):
    return CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), *args], catch_exceptions=False)


def test_a_template_edit_shows_up_in_the_next_preview_visit_and_the_next_run(project, config, secret):
    preview = make_app(config)
    _visit(preview)
    digest = project / "public" / "digest.html"
    assert "Edited intro for the test" not in digest.read_text()
    template = override_template(project, "digest.html")
    template.write_text(template.read_text().replace("{{ intro }}", "{{ intro }} Edited intro for the test"))
    _visit(preview)  # the same Config object, as the preview server keeps it
    assert "Edited intro for the test" in digest.read_text()
    digest.unlink()
    usecases.run(config, progress=False)
    assert "Edited intro for the test" in digest.read_text()


def test_one_run_renders_each_editions_digest_once(project, config, secret, monkeypatch):
    calls: list[str | None] = []
    from pipeline.usecases import common

    real = common.render_digest

    def counting(items, config, edition_id=None, **options):
        calls.append(edition_id)
        return real(items, config, edition_id, **options)

    monkeypatch.setattr(common, "render_digest", counting)
    add_subscribers(config, 3)
    outcome = usecases.run(config, progress=False)
    assert outcome.edition is not None and outcome.edition.created
    assert outcome.reports[0].sent == 3
    # subject, web copy, archive page, pre-send check and every message: one render
    assert calls == [outcome.edition.edition_id] and outcome.renders == 1


def test_a_send_that_cannot_open_its_transport_exits_at_once_and_leaves_nothing_claimed(project, secret):
    blocker = project / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")
    config = load_config(set_config(project, **{"delivery.outbox": "not-a-folder/outbox"}))
    add_subscribers(config, 50)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), "send"])
    assert time.monotonic() - started < 20
    assert result.exit_code == 1
    assert "sending stopped" in result.output and "not-a-folder" in result.output
    with usecases.open_storage(config) as storage:
        edition = storage.latest_edition()
        assert edition is not None
        counts = storage.ledger_counts(edition.id)
    assert counts[SENDING] == 0 and counts["pending"] == 50


def test_pipeline_send_is_a_recorded_run_and_writes_the_archive_page_its_messages_link_to(project, config, secret):
    add_subscribers(config, 2)
    result = _invoke(project, "send")
    assert result.exit_code == 0, result.output
    with usecases.open_storage(config) as storage:
        edition = storage.latest_edition()
        (record,) = storage.recent_runs()
    assert edition is not None
    assert (record.job, record.status, record.summary["action"], record.summary["sent"]) == ("manual", "ok", "send", 2)
    assert (project / "public" / "archive" / f"{edition.id}.html").is_file()
    assert f"{edition.id}" in _invoke(project, "status").output
    raw = next((project / "outbox" / edition.id).glob("*.eml")).read_bytes()
    html = message_from_bytes(raw, policy=policy.default).get_body(("html",)).get_content()
    assert f'href="{config.site.url(f"archive/{edition.id}.html")}"' in html


def _state_snapshot(backend, config) -> object:
    """The SQLite file's bytes; on PostgreSQL, every row of every table."""
    if backend.name == "sqlite":
        return (config.path("state") / "pipeline.db").read_bytes()
    from sqlalchemy import MetaData, create_engine, select

    engine = create_engine(backend.url)
    try:
        tables = MetaData()
        tables.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted(map(repr, conn.execute(select(table)).all())) for name, table in tables.tables.items()}
    finally:
        engine.dispose()


def test_send_dry_run_and_lint_leave_the_state_database_byte_identical(project, backend, secret):
    with FeedServer() as server:
        server.routes["/partner"] = Response(200, RSS, {"Content-Type": "application/rss+xml"})
        config = load_config(set_config(project, sources=[{"name": "partner", "url": server.url("/partner")}]))
        add_subscribers(config, 2)
        assert _invoke(project, "run", "--no-send").exit_code == 0
        fetches = len(server.requests["/partner"])
        before = _state_snapshot(backend, config)
        dry = _invoke(project, "send", "--dry-run")
        assert dry.exit_code == 0 and "would send the new edition to 2 subscribers" in dry.output
        looked = _invoke(project, "lint")
        assert looked.exit_code in (0, 1)
        run_dry = _invoke(project, "run", "--dry-run")
        assert run_dry.exit_code == 0
        assert _state_snapshot(backend, config) == before
        assert len(server.requests["/partner"]) == fetches  # nothing fetched either


def test_an_unknown_job_is_refused_by_the_command_and_by_the_scheduler_alike(project, config, caplog):
    from pipeline.service.scheduler import run_job

    run_job(str(config.source_file), "nope")
    assert "schedule.jobs: no job named 'nope'" in caplog.text
    result = _invoke(project, "run", "--job", "nope")
    assert result.exit_code == 1 and "schedule.jobs: no job named 'nope'" in result.output
    assert not (project / "public" / "rss.xml").exists()  # it did not silently run as 'run'


def test_help_and_version_start_without_the_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys; from pipeline.cli import main; sys.argv = ['pipeline', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('sqlalchemy', 'premailer', 'feedgen', 'pydantic', 'lxml') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    # a fresh interpreter is the point: what `pipeline --help` imports
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_a_run_that_finds_nothing_changed_imports_no_fetching_building_or_sending_library(project):
    """An unchanged `pipeline run` is a cron job's usual case: it must not pay for the libraries that
    only fetching sources, pinging a hub, building feeds, rendering a digest or sending need."""
    import subprocess
    import sys

    from .conftest import set_config

    set_config(project, delivery=None)
    code = ("import sys; from pipeline.cli import main; sys.argv = ['pipeline', 'run']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', [m for m in ('httpx', 'feedparser', 'premailer', 'feedgen', 'lxml', 'PIL', 'smtplib')"
            " if m in sys.modules])")
    subprocess.run([sys.executable, "-m", "pipeline", "run"], cwd=project, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True).stdout
    assert "nothing changed since the last run" in out and "LOADED []" in out


def test_without_a_postal_address_a_run_still_publishes_and_says_every_time_why_it_sends_nothing(project, secret):
    """The legal gate stops the email, not the feeds: readers still get the corrected story."""
    from .conftest import set_config

    config = load_config(set_config(project, **{"organisation.postal_address": ""}))
    add_subscribers(config, 2)
    story = project / "content" / "mesems-stem-cell-trial-results.md"
    story.write_text(story.read_text().replace('title: "', 'title: "Corrected: ', 1))
    for _ in range(2):  # not remembered as done: the second run says it again
        result = _invoke(project, "run")
        assert result.exit_code == 1 and "postal-address-missing" in result.output
    assert b"Corrected: " in (project / "public" / "rss.xml").read_bytes()
    with usecases.open_storage(config) as storage:
        assert storage.latest_edition() is None


def test_without_a_postal_address_nothing_is_queued_and_the_dry_run_says_why(project, config, secret):
    from .conftest import set_config

    config = load_config(set_config(project, **{"organisation.postal_address": ""}))
    add_subscribers(config, 2)
    dry = _invoke(project, "send", "--dry-run")
    assert "blocked until this is fixed" in dry.output and "postal" in dry.output
    result = CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), "send", "--force"])
    assert result.exit_code == 1 and "postal-address-missing" in result.output
    with usecases.open_storage(config) as storage:
        assert storage.latest_edition() is None  # nothing queued that could not go out
