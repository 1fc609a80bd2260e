"""The pre-send lint gate, rule by rule: each with an example that fails and one that passes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline.config import load_config
from pipeline.items import Item
from pipeline.mail.lint import (
    PREHEADER_PADDING,
    lint_config,
    lint_feed,
    lint_html,
    lint_images,
    lint_message,
    lint_sizes,
    lint_text,
)
from pipeline.sources import read_content

from .conftest import add_subscribers, override_template, run_cli, set_config, use_smtp, write_image
from .smtp_sink import RecordingHandler, SmtpSink

GOOD = """<!DOCTYPE html><html lang="en"><head><title>News</title><style>p{{color:red}}</style></head><body>
<div class="preheader">Preview text{padding}</div>
<img src="https://example.org/logo.png" alt="Logo" width="200" height="60">
<a href="https://example.org/story">Story</a> <a href="mailto:news@example.org">Write</a> <a href="tel:1-800-344-4867">Call</a>
{extra}
<a href="https://example.org/unsubscribe?token=abc">Unsubscribe</a>
</body></html>""".replace("{padding}", "\u200c\u00a0" * PREHEADER_PADDING)


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
    ("img-alt", GOOD.format(extra='<img src="https://example.org/a.png" width="10" height="10">')),
    ("img-width", GOOD.format(extra='<img src="https://example.org/a.png" alt="a" height="10">')),
    ("img-height", GOOD.format(extra='<img src="https://example.org/a.png" alt="a" width="10">')),
    ("img-insecure", GOOD.format(extra='<img src="http://example.org/a.png" alt="a" width="10" height="10">')),
    ("link-scheme", GOOD.format(extra='<a href="/relative">r</a>')),
    ("link-scheme", GOOD.format(extra='<a href="javascript:alert(1)">j</a>')),
    ("link-scheme", GOOD.format(extra='<img src="cid:logo" alt="l" width="1">')),
    ("missing-lang", GOOD.format(extra="").replace(' lang="en"', "")),
    ("missing-title", GOOD.format(extra="").replace("<title>News</title>", "")),
    ("missing-preheader", GOOD.format(extra="").replace("Preview text", "")),
    ("preheader-padding", GOOD.format(extra="").replace("\u200c\u00a0", "")),
    ("hidden-low-contrast", GOOD.format(extra='<p style="color:#fefefe">free money</p>')),
    ("hidden-low-contrast", GOOD.format(extra='<div style="display:none;color:#eef0f3">hidden words</div>')),
])
def test_each_rule_catches_its_problem_and_says_where(rule, bad):
    findings = [f for f in lint_html(bad) if f.rule == rule]
    assert findings, lint_html(bad)
    assert all(str(f).startswith("digest.html") and f": {rule}: " in str(f) for f in findings)


def test_findings_carry_the_line_number():
    bad = GOOD.format(extra="\n\n<img src='https://example.org/x.png' width='1' height='1'>")
    (finding,) = [f for f in lint_html(bad) if f.rule == "img-alt"]
    assert finding.where == "digest.html:7"


ITEM = Item(id="urn:x:1", slug="x", title="MESEMS results", link="https://example.org/mesems",
            published=datetime(2021, 11, 4, tzinfo=timezone.utc), summary="s", content_html="<p>x</p>")


UNSUBSCRIBE_LINE = "Unsubscribe: https://example.org/unsubscribe?token=abc\n"


def test_text_part_must_carry_each_title_and_link():
    assert lint_text("MESEMS results\nRead more: https://example.org/mesems\n" + UNSUBSCRIBE_LINE, [ITEM]) == []
    assert rules(lint_text("Nothing here\n" + UNSUBSCRIBE_LINE, [ITEM])) == {"text-missing-item"}
    assert len(lint_text("MESEMS results only\n" + UNSUBSCRIBE_LINE, [ITEM])) == 1


def test_text_part_must_carry_an_unsubscribe_link():
    text = "MESEMS results\nRead more: https://example.org/mesems\n"
    assert rules(lint_text(text, [ITEM])) == {"missing-unsubscribe"}
    assert lint_text(text + UNSUBSCRIBE_LINE, [ITEM]) == []


def test_a_missing_postal_address_is_a_finding_that_force_cannot_override(project):
    assert lint_config(load_config(project / "config.yaml")) == []
    set_config(project, **{"organisation.postal_address": None})
    (finding,) = lint_config(load_config(project / "config.yaml"))
    assert finding.rule == "postal-address-missing" and finding.blocking
    assert "organisation.postal_address" in str(finding) and "--force does not override" in str(finding)


SITE = "https://www.nationalmssociety.org/news-feed/"


def _img(src: str, width: int, height: int) -> str:
    return f'<html><body><img src="{src}" alt="a" width="{width}" height="{height}"></body></html>'


def test_a_local_image_without_a_file_is_a_finding(config):
    assert lint_images(_img(SITE + "images/mesems-trial-design.png", 550, 289), config) == []
    (finding,) = lint_images(_img(SITE + "images/no-such-photo.jpg", 550, 289), config)
    assert finding.rule == "img-missing" and "no-such-photo.jpg" in finding.detail


def test_images_elsewhere_are_not_looked_up(config):
    assert lint_images(_img("https://cdn.example.org/photo.jpg", 550, 289), config) == []


def test_an_image_shown_out_of_proportion_or_beyond_its_size_is_a_finding(config):
    assert rules(lint_images(_img(SITE + "images/mesems-trial-design.png", 550, 400), config)) == {"img-dimensions"}
    assert rules(lint_images(_img(SITE + "images/mesems-trial-design.png", 2400, 1260), config)) == {"img-dimensions"}


def test_a_declared_image_size_that_is_not_the_files_is_a_finding(project, config):
    items = read_content(config)
    assert lint_sizes(items, config) == []
    write_image(project / "content" / "images" / "mesems-trial-design.png", 1000, 630)
    (finding,) = lint_sizes(items, config)
    assert finding.rule == "img-dimensions" and "1200x630" in finding.detail and "1000x630" in finding.detail


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
    bad = good.replace(b"<link>https://www.nationalmssociety.org/news-feed/stories/mesems-stem-cell-trial-results/</link>",
                       b"<link>/news/mesems</link>", 1)
    assert [f.detail for f in lint_feed(bad, "rss.xml")] == ["/news/mesems"]
    bad_html = good.replace(b"<![CDATA[<p>", b'<![CDATA[<p><img src="pic.png" alt="p">', 1)
    assert [f.detail for f in lint_feed(bad_html, "rss.xml")] == ["src='pic.png'"]


def test_pipeline_lint_passes_on_the_shipped_digest(project):
    result = run_cli(project, "lint")
    assert result.returncode == 0, result.stderr
    assert "no problems found" in result.stdout


def test_pipeline_lint_lists_problems_and_fails(project):
    own = override_template(project, "digest.html")
    own.write_text(own.read_text().replace(' alt="{{ site.logo.alt }}"', ""))
    result = run_cli(project, "lint")
    assert result.returncode == 1
    assert "img-alt" in result.stderr and "fix them or use --force" in result.stderr


def test_pipeline_lint_names_the_missing_postal_address(project):
    set_config(project, **{"organisation.postal_address": None})
    result = run_cli(project, "lint")
    assert result.returncode == 1
    assert "postal-address-missing" in result.stderr and "--force does not override" in result.stderr


def test_send_without_a_postal_address_is_refused_even_with_force(project, secret):
    set_config(project, **{"organisation.postal_address": None})
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 2)
        forced = run_cli(project, "send", "--force")
        assert forced.returncode == 1 and "postal-address-missing" in forced.stderr
    assert handler.received == []


def test_send_stops_on_a_failed_check_and_force_overrides(project, secret):
    own = override_template(project, "digest.html")
    own.write_text(own.read_text().replace(' alt="{{ site.logo.alt }}"', ""))
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
