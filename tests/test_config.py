"""config.yaml: the organisation lives here, and mistakes are named by file and key."""

from __future__ import annotations

import re

import pytest
import yaml

from pipeline.config import load_config
from pipeline.errors import ConfigError

from .conftest import run_cli


def _edit(project, change):
    path = project / "config.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_shipped_config_holds_the_organisation(config):
    org = config.organisation
    assert org.name == "National Multiple Sclerosis Society"
    assert (org.founded, org.phone, org.legal) == (1946, "1-800-344-4867", "EIN 13-5661935.")
    assert [paragraph.heading for paragraph in org.about] == ["About multiple sclerosis",
                                                              "About the National MS Society"]
    assert [label for label, _ in org.social.links()] == ["Facebook", "X (formerly Twitter)", "Instagram", "YouTube"]


def test_missing_key_names_file_and_key(project):
    path = _edit(project, lambda d: d["organisation"].pop("website"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: organisation.website: field required"


@pytest.mark.parametrize(("key", "replacement"), [
    ("ein", "replaced by organisation.legal (free text"),
    ("about_ms", "replaced by organisation.about (a list of {heading, text} paragraphs)"),
    ("about_society", "replaced by organisation.about (a list of {heading, text} paragraphs)"),
])
def test_a_retired_organisation_key_is_named_with_what_replaces_it(project, key, replacement):
    path = _edit(project, lambda d: d["organisation"].update({key: "13-5661935"}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: organisation.{key}: no longer a setting; {replacement}")
    assert "\n" not in str(caught.value)


def test_an_organisation_needs_nothing_specific_to_a_country_or_a_cause(project):
    path = _edit(project, lambda d: d.update(organisation={"name": "Riverside Food Bank",
                                                           "website": "https://riverside.example.org"}))
    org = load_config(path).organisation
    assert (org.phone, org.founded, org.mission, org.legal, org.about) == (None, None, None, None, [])
    assert org.copyright_line == "© Riverside Food Bank"


def test_unknown_key_is_refused(project):
    path = _edit(project, lambda d: d["site"].update(titel="typo"))
    with pytest.raises(ConfigError, match=r"site.titel: unknown field"):
        load_config(path)


def test_relative_base_url_is_refused(project):
    path = _edit(project, lambda d: d["site"].update(base_url="/news/"))
    with pytest.raises(ConfigError, match=r"site.base_url: must be an absolute http\(s\) URL"):
        load_config(path)


def test_language_is_normalised_to_a_feed_language_tag(project):
    path = _edit(project, lambda d: d["site"].update(language="en_US"))
    assert load_config(path).site.language == "en-us"


def test_paths_are_relative_to_the_config_file(project, tmp_path):
    config = load_config(project / "config.yaml")
    assert config.path("content") == (project / "content").resolve()
    assert config.path("output") == (project / "public").resolve()


def test_cli_names_the_config_problem_without_traceback(project):
    _edit(project, lambda d: d["organisation"].pop("name"))
    result = run_cli(project, "run")
    assert result.returncode == 1
    assert "organisation.name: field required" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "public").exists()


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_a_source_without_a_name_gets_one_from_its_url(project):
    path = _edit(project, lambda d: d.update(sources=[{"url": "https://research.example.org/blog/feed.xml"},
                                                      {"name": "partner", "url": "https://partner.example.org/"}]))
    assert [s.name for s in load_config(path).sources] == ["research-example-org-blog-feed-xml", "partner"]


def test_two_sources_with_one_name_are_refused(project):
    path = _edit(project, lambda d: d.update(sources=[{"name": "a", "url": "https://x.example.org/"},
                                                      {"name": "a", "url": "https://y.example.org/"}]))
    with pytest.raises(ConfigError, match="sources: duplicate name 'a'"):
        load_config(path)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("digest.unsubscribe_url", "https://x.example/u\r\nBcc: a@b.c", "digest.unsubscribe_url: must not contain"),
    ("digest.unsubscribe_url", "https://x.example/>, <https://evil.test/x", "digest.unsubscribe_url: must not contain"),
    ("digest.subject", "{site_title} {nope}", "digest.subject: unknown field {nope}"),
    ("digest.intro", "News from {org}", "digest.intro: unknown field {org}"),
    ("delivery.unsubscribe_mailto", "not an address", "delivery.unsubscribe_mailto: must contain an email address"),
    ("delivery.from", "News <news@>", "delivery.from: "),
    ("delivery.list_id", "News", "delivery.list_id: must end with the list's id"),
])
def test_header_values_that_would_break_sending_are_refused_by_validate(project, key, value, message):
    from pipeline.errors import ConfigError

    from .conftest import set_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(set_config(project, **{key: value}))


def test_an_internationalised_sender_domain_and_unsubscribe_host_become_ascii(project):
    from .conftest import set_config

    config = load_config(set_config(project, **{"delivery.from": "Bücher News <news@bücher.example>",
                                                 "digest.unsubscribe_url": "https://bücher.example/abmelden"}))
    assert config.delivery.from_address == "news@xn--bcher-kva.example"
    assert config.digest.unsubscribe_url == "https://xn--bcher-kva.example/abmelden"


@pytest.mark.parametrize(("key", "value", "message"), [
    ("site.item_link", "https://x.example/news/{nope}", "site.item_link: unknown field {nope}"),
    ("signup.consent_text", "Yes, email me {nope}", "signup.consent_text: unknown field {nope}"),
    ("digest.subject", "{site_title:d}", "digest.subject: {site_title:d}: write plain fields"),
    ("digest.intro", "From {organisation!z}", "digest.intro: {organisation!z}: write plain fields"),
    ("digest.subject", "{lead_title.upper}", "digest.subject: {lead_title.upper}: write plain fields"),
])
def test_templates_in_the_config_may_only_use_plain_known_fields(project, key, value, message):
    from .conftest import set_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(set_config(project, **{key: value}))


def test_a_setting_given_twice_is_refused_naming_its_path_and_line(project):
    path = project / "config.yaml"
    text = path.read_text()
    assert "\nschedule:\n" in text
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("timezone:") and lines[i].startswith("      "))
    lines.insert(at + 1, lines[at])  # the same job's timezone pasted twice
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"config.yaml:{at + 2}: schedule\.jobs\.[a-z-]+\.timezone: given twice"):
        load_config(path)


def test_keys_that_only_look_alike_are_not_a_repetition_and_aliases_are_looked_at_once(monkeypatch):
    from pipeline import yaml_keys

    assert yaml_keys.repeated_key(yaml.compose("a: 1\n'1': x\n1: y\n")) is None  # the string '1', the number 1
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 7)]
    calls = []
    walk = yaml_keys.repeated_key
    monkeypatch.setattr(yaml_keys, "repeated_key", lambda *args: calls.append(1) or walk(*args))
    assert yaml_keys.repeated_key(yaml.compose("\n".join(levels) + "\n")) is None
    assert len(calls) < 200  # walked as a tree, the aliases would make it a million visits


@pytest.mark.parametrize("base", ["https://www.nationalmssociety.org/news-feed/", "https://example.org/a/./b/",
                                  "https://example.org/news?x=1", "https://example.org/a//b/"])
@pytest.mark.parametrize("path", ["rss.xml", "stories/mesems/", "images//x.jpg", "a/./b", "../up", "/root",
                                  "images/MS%20walk%20%C3%A9.jpg", "tags/living-with-ms/atom.xml", "x?y", "a.b.c"])
def test_a_site_url_is_what_urljoin_makes_of_the_base_and_the_path(config, base, path):
    from urllib.parse import urljoin

    config.site.url("rss.xml")  # a copy must not keep what was worked out for the first base
    site = config.site.model_copy(update={"base_url": base})
    assert site.url(path) == urljoin(base, path)
