"""`pipeline run` from the command line: what it writes, and that reruns and failures change nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pipeline.cli import cli
from pipeline.publish.atomic import write_atomic

from .conftest import REPO, override_template, run_cli, snapshot, write_item

TOPICS = [f"tags/{slug}/{name}" for slug in ("clinical-trials", "living-with-ms", "research")
          for name in ("atom.xml", "feed.json", "index.html", "rss.xml")]
STORIES = ["site.css", "stories/index.html",
           *(f"stories/{slug}/index.html" for slug in ("mesems-stem-cell-trial-results", "ms-navigators-are-here-to-help",
                                                      "questions-for-your-neurology-appointment",
                                                      "what-a-phase-2-trial-can-tell-us")),
           *(f"stories/tags/{slug}/index.html" for slug in ("clinical-trials", "explainer", "health-care",
                                                          "living-with-ms", "programs-and-services", "research",
                                                          "stem-cells"))]
OUTPUTS = sorted([*STORIES, "archive/index.html", "atom.xml", "digest.html", "digest.txt", "feed.html", "feed.json", "feed.xsl",
                  "icons/facebook.png", "icons/instagram.png", "icons/x.png", "icons/youtube.png",
                  "images/mesems-trial-design.png", "index.html", "logo.png", "rss.xml", *TOPICS])


def test_run_writes_the_feeds_and_the_digest(project):
    result = run_cli(project, "run", check=True)
    assert sorted(snapshot(project / "public")) == OUTPUTS
    for name in OUTPUTS:
        assert f"wrote  public/{name}" in result.stdout


def test_second_run_changes_no_byte_and_touches_no_file(project):
    run_cli(project, "run", check=True)
    before = snapshot(project / "public")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (project / "public").iterdir()}
    result = run_cli(project, "run", check=True)
    assert snapshot(project / "public") == before
    assert {p.name: p.stat().st_mtime_ns for p in (project / "public").iterdir()} == mtimes
    assert result.stdout.startswith("nothing changed since the last run: outputs are up to date")


def test_unchanged_run_still_repairs_an_output_changed_by_hand(project):
    run_cli(project, "run", check=True)
    before = snapshot(project / "public")
    (project / "public" / "rss.xml").write_text("damaged")
    (project / "public" / "digest.txt").unlink()
    result = run_cli(project, "run", check=True)
    assert "wrote  public/rss.xml" in result.stdout and "wrote  public/digest.txt" in result.stdout
    assert snapshot(project / "public") == before


def test_template_change_rebuilds(project):
    run_cli(project, "run", check=True)
    css = override_template(project, "digest.css")
    css.write_text(css.read_text().replace("max-width: 600px", "max-width: 601px"))
    result = run_cli(project, "run", check=True)
    assert "wrote  public/digest.html" in result.stdout and "public/rss.xml" not in result.stdout
    assert re.search(r"unchanged  \d+ other files \(-v lists them\)", result.stdout)


def test_verbose_run_lists_every_unchanged_file(project):
    run_cli(project, "run", check=True)
    css = override_template(project, "digest.css")
    css.write_text(css.read_text().replace("max-width: 600px", "max-width: 601px"))
    result = run_cli(project, "-v", "run", "--no-send", check=True)
    assert "unchanged  public/rss.xml" in result.stdout and "other files" not in result.stdout


def test_first_subscriber_after_an_unchanged_run_gets_the_edition(project, secret):
    run_cli(project, "run", check=True)
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    result = run_cli(project, "run", check=True)
    assert "sent 1, failed 0" in result.stdout


def test_failed_run_leaves_previous_outputs_intact(project):
    run_cli(project, "run", check=True)
    before = snapshot(project / "public")
    write_item(project, "broken", 'title: "Half written"\ndate: not yet')
    result = run_cli(project, "run")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: content/broken.md:3: date:")
    assert snapshot(project / "public") == before


def test_dry_run_writes_nothing(project):
    result = run_cli(project, "run", "--dry-run", check=True)
    assert "would write  public/rss.xml" in result.stdout
    assert not (project / "public").exists()


def test_validate_checks_everything_and_writes_nothing(project):
    result = run_cli(project, "validate", check=True)
    assert "4 content items ok" in result.stdout
    assert not (project / "public").exists()


def test_adding_an_item_changes_the_outputs(project):
    run_cli(project, "run", check=True)
    before = snapshot(project / "public")
    write_item(project, "newer", 'title: "A newer story"\ndate: 2021-11-10T09:00:00-05:00')
    run_cli(project, "run", check=True)
    after = snapshot(project / "public")
    changed = {name for name in OUTPUTS if after[name] != before[name]}
    # not the static pages, nor topic feeds or tag pages of tags the new item does not have, nor other story pages
    assert changed == {"atom.xml", "digest.html", "digest.txt", "feed.html", "feed.json", "rss.xml",
                       "stories/index.html"}
    assert b"A newer story" in after["rss.xml"]
    assert b"A newer story" in after["stories/newer/index.html"] and "stories/newer/index.html" not in before


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "rss.xml"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["rss.xml"]  # no temporary file left behind


def _command_paths(group: click.Group = cli, parent: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the command line, as the words that name it (none for the group itself)."""
    paths = [parent]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*parent, name))
        else:
            paths.append((*parent, name))
    return paths


COMMANDS = _command_paths()


def _name(command: tuple[str, ...]) -> str:
    return " ".join(("pipeline", *command))


@pytest.mark.parametrize("command", COMMANDS, ids=_name)
def test_every_command_has_help(project, command):
    result = run_cli(project, *command, "--help", check=True)
    assert "Usage: pipeline" in result.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c], ids=_name)
def test_every_command_is_documented_in_the_command_reference(command):
    # The generated reference (python -m pipeline.docgen) has a heading per command: ## `pipeline subscribers add`.
    page = (REPO / "docs" / "reference" / "commands.md").read_text(encoding="utf-8")
    assert re.search(rf"`{re.escape(_name(command))}[ `]", page)


@pytest.mark.parametrize("launcher", [[str(Path(sys.executable).parent / "pipeline")], [sys.executable, "-m", "pipeline"]],
                         ids=["console script", "python -m pipeline"])
def test_console_script_and_python_m_pipeline_start(launcher):
    result = subprocess.run([*launcher, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("pipeline, version")


def test_console_script_reports_a_user_error_in_one_line_and_exits_1(tmp_path):
    script = Path(sys.executable).parent / "pipeline"
    result = subprocess.run([str(script), "--config", str(tmp_path / "missing.yaml"), "validate"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1, result.stderr


def test_default_file_transport_writes_one_eml_per_subscriber(project, secret):
    from email import message_from_bytes, policy

    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    run_cli(project, "subscribers", "add", "bob@example.org", "--confirmed", check=True)
    result = run_cli(project, "run", check=True, env={**os.environ, "PIPELINE_SECRET": secret})
    assert "sent 2, failed 0" in result.stdout
    (edition,) = (project / "outbox").iterdir()
    messages = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(edition.glob("*.eml"))]
    assert sorted(m["To"] for m in messages) == ["ann@example.org", "bob@example.org"]
    again = run_cli(project, "run", check=True, env={**os.environ, "PIPELINE_SECRET": secret})
    assert "no new items since the last edition" in again.stdout and "sent" not in again.stdout


def test_send_dry_run_sends_and_records_nothing(project, secret):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    result = run_cli(project, "send", "--dry-run", check=True)
    assert "would send the new edition to 1 subscribers" in result.stdout
    assert not (project / "outbox").exists()
    assert "would create the edition" in run_cli(project, "send", "--dry-run", check=True).stdout


def test_send_dry_run_names_the_pre_send_checks_that_would_stop_the_send(project, secret):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    write_item(project, "insecure-photo", 'title: "A clinic photo over plain http"\ndate: 2025-01-07T09:00:00Z\n'
                                          'image: {url: "http://insecure.example.com/pic.png", alt: "The clinic"}')
    result = run_cli(project, "send", "--dry-run", check=True)
    assert re.search(r"^but the pre-send checks stop it \(unless --force\): digest\.html:\d+: img-insecure: image "
                     r"source 'http://insecure\.example\.com/pic\.png' is not https$", result.stdout, re.M)


def test_changing_only_an_image_in_the_content_folder_rebuilds(project, config):
    from pipeline import usecases

    picture = project / "content" / "images" / "extra.bin"
    picture.parent.mkdir(exist_ok=True)
    picture.write_bytes(b"first")
    usecases.run(config, progress=False)
    assert usecases.run(config, progress=False).unchanged
    picture.write_bytes(b"second")
    assert not usecases.run(config, progress=False).unchanged


def test_a_story_saved_while_a_run_builds_is_published_by_the_next_run(project, config, monkeypatch):
    """The run fingerprints and parses the same bytes, read once at its start: an edit saved after
    that must not be recorded as already built (the next run would say "nothing changed")."""
    from pipeline import usecases
    from pipeline.usecases import runs as run_module

    usecases.run(config, progress=False)
    story = project / "content" / "mesems-stem-cell-trial-results.md"
    original = story.read_text()
    read_content = run_module.read_content

    def editor_saves_mid_run(*args, **kwargs):
        items = read_content(*args, **kwargs)
        story.write_text(original.replace('title: "', 'title: "Updated - ', 1))
        return items

    (project / "content" / "new.md").write_text("---\ntitle: Another story\ndate: 2021-11-05T09:00:00Z\n---\nA body.\n")
    monkeypatch.setattr(run_module, "read_content", editor_saves_mid_run)
    usecases.run(config, progress=False)
    monkeypatch.undo()
    assert b"Updated -" not in (project / "public" / "rss.xml").read_bytes()
    outcome = usecases.run(config, progress=False)
    assert not outcome.unchanged
    assert b"Updated -" in (project / "public" / "rss.xml").read_bytes()


def test_an_unchanged_run_without_subscribers_says_so(project):
    run_cli(project, "run", check=True)
    again = run_cli(project, "run", check=True)
    assert again.stdout.startswith("nothing changed since the last run")
    assert "edition: - (no subscribers)" in again.stdout


def test_outputs_no_longer_made_are_removed_so_an_incremental_build_equals_a_cold_one(project, tmp_path):
    """Deleting the story that kept a topic at min_items must take the topic's feeds down too (they
    would go on publishing the deleted story), as a build from scratch would never have made them."""
    import shutil

    from .conftest import set_config

    set_config(project, **{"feeds.limit": 2})
    run_cli(project, "run", check=True)
    assert (project / "public" / "tags" / "living-with-ms" / "rss.xml").exists()
    (project / "content" / "ms-navigators-are-here-to-help.md").unlink()
    dry = run_cli(project, "run", "--dry-run", check=True)
    assert "would remove  public/tags/living-with-ms/rss.xml" in dry.stdout
    assert (project / "public" / "tags" / "living-with-ms" / "rss.xml").exists()  # a dry run removes nothing
    result = run_cli(project, "run", check=True)
    assert "    removed  public/tags/living-with-ms/rss.xml" in result.stdout
    assert not (project / "public" / "tags" / "living-with-ms").exists()

    cold = tmp_path / "cold"  # the same project, with no public/ and no build caches
    shutil.copytree(project, cold, ignore=lambda folder, names: ["public"] if Path(folder) == project else [])
    for cache in ("content-cache.sqlite", "archive-cache.pickle", "outputs.json"):
        (cold / ".state" / cache).unlink(missing_ok=True)
    run_cli(cold, "run", check=True)
    assert snapshot(cold / "public") == snapshot(project / "public")


def test_an_output_changed_by_hand_that_is_no_longer_made_is_left_alone(project):
    from .conftest import set_config

    run_cli(project, "run", check=True)
    page = project / "public" / "tags" / "living-with-ms" / "index.html"
    page.write_text("my own notes")
    set_config(project, **{"feeds.topics.min_items": 10})  # no topic has ten stories: none is made
    result = run_cli(project, "run", check=True)
    assert page.read_text() == "my own notes" and "removed  public/tags/living-with-ms/index.html" not in result.stdout
    assert not (project / "public" / "tags" / "living-with-ms" / "rss.xml").exists()


def test_a_changed_program_with_the_same_version_number_rebuilds(project, config, monkeypatch):
    """An operator who upgrades with `git pull` (or a new library) keeps the version number but
    must not keep feeds the old code made."""
    from pipeline import program, usecases

    usecases.run(config, progress=False)
    assert usecases.run(config, progress=False).unchanged
    monkeypatch.setattr(program, "_code_and_libraries", lambda: "the code after a git pull")
    assert not usecases.run(config, progress=False).unchanged


def test_the_program_fingerprint_changes_with_any_module_or_installed_library(tmp_path):
    from pipeline.program import _code_and_libraries

    package, site = tmp_path / "package", tmp_path / "site-packages"
    (package / "sub").mkdir(parents=True)
    site.mkdir()
    (package / "a.py").write_text("A = 1\n")
    (package / "sub" / "b.py").write_text("B = 1\n")
    (site / "jinja2-3.1.4.dist-info").mkdir()
    first = _code_and_libraries(package, (str(site),))
    (package / "sub" / "b.py").write_text("B = 2\n")
    _code_and_libraries.cache_clear()  # a new process
    second = _code_and_libraries(package, (str(site),))
    (site / "jinja2-3.1.4.dist-info").rename(site / "jinja2-3.1.5.dist-info")
    _code_and_libraries.cache_clear()
    third = _code_and_libraries(package, (str(site),))
    assert len({first, second, third}) == 3


def test_a_public_folder_reached_through_a_link_loses_no_file_it_still_makes(project):
    """Operators move public/ elsewhere and leave a link: files recorded under the old name are the
    same files, still made, and must not be taken for leftovers."""
    run_cli(project, "run", check=True)
    (project / "public").rename(project / "www")
    (project / "public").symlink_to(project / "www")
    story = project / "content" / "mesems-stem-cell-trial-results.md"
    story.write_text(story.read_text().replace('title: "', 'title: "Corrected: ', 1))
    result = run_cli(project, "run", check=True)
    assert "removed" not in result.stdout
    assert (project / "www" / "index.html").exists() and (project / "www" / "rss.xml").exists()


def test_outputs_made_while_sending_was_blocked_are_still_removed_when_no_longer_made(project, secret):
    from pipeline.config import load_config

    from .conftest import add_subscribers, set_config

    config = load_config(set_config(project, **{"organisation.postal_address": ""}))
    add_subscribers(config, 1)
    assert run_cli(project, "run").returncode == 1  # published, then refused to send
    assert (project / "public" / "tags" / "living-with-ms" / "rss.xml").exists()
    (project / "content" / "ms-navigators-are-here-to-help.md").unlink()
    assert run_cli(project, "run").returncode == 1
    assert not (project / "public" / "tags" / "living-with-ms").exists()


def test_the_program_fingerprint_does_not_depend_on_the_working_directory(tmp_path):
    import subprocess
    import sys

    (tmp_path / "other_project.egg-info").mkdir()  # a checkout holds its own egg-info
    code = "from pipeline.program import program_fingerprint; print(program_fingerprint())"
    here = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    there = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert here.stdout == there.stdout and len(here.stdout.strip()) == 64
