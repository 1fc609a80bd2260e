"""The pre-send lint gate, rule by rule: each with an example that fails and one that passes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline.items import Item
from pipeline.mail.lint import lint_feed, lint_html, lint_message, lint_text

from .conftest import add_subscribers, run_cli, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink

GOOD = """<!DOCTYPE html><html lang="en"><head><title>News</title><style>p{{color:red}}</style></head><body>
<div class="preheader">Preview text</div>
<img src="https://example.org/logo.png" alt="Logo" width="200">
<a href="https://example.org/story">Story</a> <a href="mailto:news@example.org">Write</a> <a href="tel:1-800-344-4867">Call</a>
{extra}
<a href="https://example.org/unsubscribe?token=abc">Unsubscribe</a>
</body></html>"""


def rules(findings) -> set[str]:
    return {f.rule for f in findings}


def test_a_good_digest_passes():
    assert lint_html(GOOD.format(extra="")) == []


@pytest.mark.parametrize(("rule", "bad"), [
    ("html-size", GOOD.format(extra="<p>" + "x" * 110_000 + "</p>")),
    ("unsubscribe-clipped", GOOD.format(extra="<p>" + "x" * 110_000 + "</p>")),
    ("missing-unsubscribe", GOOD.format(extra="").replace(">Unsubscribe<", ">Manage<").replace("unsubscribe?", "prefs?")),
    ("style-size", GOOD.format(extra="").replace("p{color:red}", "p{color:red}" * 1500)),
    ("forbidden-element", GOOD.format(extra="<script>alert(1)</script>")),
    ("forbidden-element", GOOD.format(extra='<form action="https://example.org/"><input></form>')),
    ("forbidden-element", GOOD.format(extra='<iframe src="https://example.org/"></iframe>')),
    ("external-stylesheet", GOOD.format(extra='<link rel="stylesheet" href="https://example.org/s.css">')),
    ("img-alt", GOOD.format(extra='<img src="https://example.org/a.png" width="10">')),
    ("img-width", GOOD.format(extra='<img src="https://example.org/a.png" alt="a">')),
    ("link-scheme", GOOD.format(extra='<a href="/relative">r</a>')),
    ("link-scheme", GOOD.format(extra='<a href="javascript:alert(1)">j</a>')),
    ("link-scheme", GOOD.format(extra='<img src="cid:logo" alt="l" width="1">')),
    ("missing-lang", GOOD.format(extra="").replace(' lang="en"', "")),
    ("missing-title", GOOD.format(extra="").replace("<title>News</title>", "")),
    ("missing-preheader", GOOD.format(extra="").replace('<div class="preheader">Preview text</div>', "")),
])
def test_each_rule_catches_its_problem_and_says_where(rule, bad):
    findings = [f for f in lint_html(bad) if f.rule == rule]
    assert findings, lint_html(bad)
    assert all(str(f).startswith("digest.html") and f": {rule}: " in str(f) for f in findings)


def test_findings_carry_the_line_number():
    bad = GOOD.format(extra="\n\n<img src='https://example.org/x.png' width='1'>")
    (finding,) = [f for f in lint_html(bad) if f.rule == "img-alt"]
    assert finding.where == "digest.html:7"


ITEM = Item(id="urn:x:1", slug="x", title="MESEMS results", link="https://example.org/mesems",
            published=datetime(2021, 11, 4, tzinfo=timezone.utc), summary="s", content_html="<p>x</p>")


def test_text_part_must_carry_each_title_and_link():
    assert lint_text("MESEMS results\nRead more: https://example.org/mesems\n", [ITEM]) == []
    assert rules(lint_text("Nothing here\n", [ITEM])) == {"text-missing-item"}
    assert len(lint_text("MESEMS results only\n", [ITEM])) == 1


MESSAGE = (b"From: a@example.org\r\nTo: b@example.org\r\nList-Unsubscribe: <https://example.org/u?t=1>, "
           b"<mailto:u@example.org>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n")


def test_list_unsubscribe_must_be_plain_ascii_on_the_wire():
    assert lint_message(MESSAGE) == []
    folded = MESSAGE.replace(b"<https://example.org/u?t=1>", b"=?utf-8?q?=3Chttps=3A//example=2Eorg/u=3Ft=3D1=3E?=")
    assert rules(lint_message(folded)) == {"list-unsubscribe-ascii"}
    assert rules(lint_message(MESSAGE.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""))) == {
        "list-unsubscribe-missing"}


def test_feed_items_with_relative_urls_are_caught(config):
    from pipeline.publish.feeds import build_rss
    from pipeline.sources import read_content

    good = build_rss(read_content(config), config)
    assert lint_feed(good, "rss.xml") == []
    bad = good.replace(b"<link>https://www.nationalmssociety.org/news-and-magazine/news/mesems-stem-cell-trial-results</link>",
                       b"<link>/news/mesems</link>", 1)
    assert [f.detail for f in lint_feed(bad, "rss.xml")] == ["/news/mesems"]
    bad_html = good.replace(b"<![CDATA[<p>", b'<![CDATA[<p><img src="pic.png" alt="p">', 1)
    assert [f.detail for f in lint_feed(bad_html, "rss.xml")] == ["src='pic.png'"]


def test_pipeline_lint_passes_on_the_shipped_digest(project):
    result = run_cli(project, "lint")
    assert result.returncode == 0, result.stderr
    assert "no problems found" in result.stdout


def test_pipeline_lint_lists_problems_and_fails(project):
    (project / "templates" / "digest.html").write_text(
        (project / "templates" / "digest.html").read_text().replace(' alt="{{ site.logo.alt }}"', ""))
    result = run_cli(project, "lint")
    assert result.returncode == 1
    assert "img-alt" in result.stderr and "fix them or use --force" in result.stderr


def test_send_stops_on_a_failed_check_and_force_overrides(project, secret):
    (project / "templates" / "digest.html").write_text(
        (project / "templates" / "digest.html").read_text().replace(' alt="{{ site.logo.alt }}"', ""))
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 2)
        stopped = run_cli(project, "send")
        assert stopped.returncode == 1 and "img-alt" in stopped.stderr
        assert handler.received == []
        forced = run_cli(project, "send", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "sending despite a failed check" in forced.stderr
    assert len(handler.received) == 2
