"""A rebuild is a cold build: after a story is edited, renamed or deleted, the output folder a run leaves is
byte for byte the one a run from nothing makes of the same content, and the documents that do not
contain the story are not even rewritten (their files are the previous version's, hard-linked)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline import usecases
from pipeline.config import load_config

from .conftest import set_config, snapshot, write_item

TAGS = ("research", "living with ms", "advocacy", "fundraising", "wellbeing")
STORIES = 30
OLD = "story-03"  # among the oldest: on a complete archive page, its topic feeds' archive and tag pages


def newsroom(project: Path) -> None:
    """Thirty stories of two or three tags each, small feed windows and pages: archive pages, topic
    feeds and paged listings all exist, as in a newsroom of thousands."""
    set_config(project, **{"feeds.limit": 5, "site.per_page": 4})
    for n in range(STORIES):
        tags = ", ".join(f'"{TAGS[(n + k) % len(TAGS)]}"' for k in range(2 + n % 2))
        write_item(project, f"story-{n:02d}",
                   f'title: "Story {n}"\ndate: 2021-{1 + n // 28:02d}-{1 + n % 28:02d}T09:00:00Z\ntags: [{tags}]',
                   f"Paragraph one of story {n}.\n\nParagraph two, with [a link](https://example.org/{n}).\n")


def build(project: Path) -> dict[str, bytes]:
    usecases.run(load_config(project / "config.yaml"), action="feeds")
    return snapshot(project / "public")


def cold_build(project: Path, where: Path) -> dict[str, bytes]:
    """What a run from nothing makes of the project's content now (the files keep their times)."""
    shutil.copytree(project, where, ignore=shutil.ignore_patterns("public", "public.versions", ".state"))
    return build(where)


def inodes(public: Path) -> dict[str, int]:
    return {str(p.relative_to(public)): p.stat().st_ino for p in public.rglob("*") if p.is_file()}


def test_a_rebuild_after_an_edit_is_the_cold_build_of_the_edited_content(project, tmp_path):
    newsroom(project)
    build(project)
    story = project / "content" / f"{OLD}.md"
    story.write_text(story.read_text().replace("Paragraph one", "Paragraph one, corrected,"))
    rebuilt = build(project)
    assert rebuilt == cold_build(project, tmp_path / "cold")
    assert [name for name, data in rebuilt.items()  # the edit reached its topics' archive pages too
            if name.startswith("tags/") and "/feed-archive/" in name and b"Paragraph one, corrected," in data]


def test_a_rebuild_after_a_rename_is_the_cold_build_of_the_renamed_content(project, tmp_path):
    newsroom(project)
    before = build(project)
    (project / "content" / f"{OLD}.md").rename(project / "content" / "story-03-renamed.md")
    after = build(project)
    assert after == cold_build(project, tmp_path / "cold")
    assert f"stories/{OLD}/index.html" in before and f"stories/{OLD}/index.html" not in after
    assert "stories/story-03-renamed/index.html" in after


def test_a_rebuild_after_a_delete_is_the_cold_build_without_the_story(project, tmp_path):
    newsroom(project)
    build(project)
    (project / "content" / f"{OLD}.md").unlink()
    after = build(project)
    assert after == cold_build(project, tmp_path / "cold")
    assert not any(b"Story 3<" in data or b"Story 3\"" in data for data in after.values())


def test_an_edit_rewrites_only_the_documents_that_contain_the_story(project):
    newsroom(project)
    before = build(project)
    public = (project / "public").resolve()
    linked = inodes(public)
    story = project / "content" / f"{OLD}.md"
    story.write_text(story.read_text().replace("Paragraph one", "Paragraph one, corrected,"))
    after = build(project)
    rewritten = {name for name, ino in inodes((project / "public").resolve()).items() if linked.get(name) != ino}
    # Every rewritten file shows the edit, and every file that shows it was rewritten.
    assert rewritten == {name for name, data in after.items() if b"Paragraph one, corrected," in data}
    assert f"stories/{OLD}/index.html" in rewritten
    assert any(name.startswith("archive/") or "-1.xml" in name for name in rewritten), sorted(rewritten)
    # Complete archive pages that do not hold the story are the previous version's files, untouched.
    untouched = [name for name in before if name.endswith(".xml") and "archive" in name and name not in rewritten]
    assert untouched and all(after[name] == before[name] for name in untouched)


def test_the_sites_digest_is_rendered_again_only_when_a_story_it_shows_changes(project, tmp_path):
    newsroom(project)
    config = load_config(project / "config.yaml")
    assert usecases.run(config, action="feeds").renders == 1
    old = project / "content" / f"{OLD}.md"  # older than the digest's newest digest.limit stories
    old.write_text(old.read_text().replace("Paragraph one", "Paragraph one, corrected,"))
    edited_old = usecases.run(config, action="feeds")
    assert edited_old.written and edited_old.renders == 0
    newest = project / "content" / f"story-{STORIES - 1:02d}.md"
    newest.write_text(newest.read_text().replace("Paragraph two", "Paragraph two, corrected,"))
    assert usecases.run(config, action="feeds").renders == 1
    assert b"Paragraph two, corrected," in (project / "public" / "digest.html").read_bytes()
    assert snapshot(project / "public") == cold_build(project, tmp_path / "cold")


def test_an_unchanged_rerun_writes_nothing_and_switches_no_version(project):
    newsroom(project)
    build(project)
    live = os.readlink(project / "public")
    build(project)
    assert os.readlink(project / "public") == live


def test_the_version_before_the_live_one_becomes_the_next_version_made_the_same_as_the_live_one(project, tmp_path):
    """A run reuses the spare version folder instead of copying the whole live tree and deleting the
    spare: whatever a killed run left in it (a stray file, a file where a folder was, a folder gone)
    is made the same as the live version before the run writes its changes."""
    newsroom(project)
    build(project)
    story = project / "content" / f"{OLD}.md"
    story.write_text(story.read_text().replace("Paragraph one", "Paragraph one, first edit,"))
    build(project)
    versions = project / "public.versions"
    live = (project / "public").resolve()
    (spare,) = [folder for folder in versions.iterdir() if folder != live]
    (spare / "left-by-a-killed-run.html").write_text("junk")
    shutil.rmtree(spare / "tags")
    (spare / "rss.xml").unlink()
    (spare / "rss.xml").mkdir()
    story.write_text(story.read_text().replace("first edit", "second edit"))
    after = build(project)
    assert not spare.exists() and len(list(versions.iterdir())) == 2
    assert after == cold_build(project, tmp_path / "cold")
    unchanged = [name for name, data in after.items() if b"second edit" not in data]
    inode = {name: os.stat(live / name).st_ino for name in unchanged if (live / name).exists()}
    now = (project / "public").resolve()
    assert inode and all(os.stat(now / name).st_ino == ino for name, ino in inode.items())
