"""The parse cache of content files: a stale entry must never come back (edit, rename, delete, config, version)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

import pipeline
from pipeline.config import load_config
from pipeline.errors import ContentError
from pipeline.sources import local
from pipeline.sources.local import ParseCache, read_content

from .conftest import set_config, write_item

VALID = 'title: "A title"\ndate: 2021-11-05T10:00:00-04:00'


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """The files really parsed (not taken from the cache), in order."""
    seen: list[str] = []
    real = local._parse_item

    def spy(path, raw, config, shown):
        seen.append(path.name)
        return real(path, raw, config, shown)

    monkeypatch.setattr(local, "_parse_item", spy)
    return seen


def _stored_names(config) -> set[str]:
    with closing(sqlite3.connect(config.path("state") / ParseCache.FILE)) as db:
        return {name for (name,) in db.execute("SELECT name FROM files")}


def _read(config, parses):
    parses.clear()
    return {item.slug: item for item in read_content(config, remember=True)}


def test_a_second_read_parses_nothing_and_gives_the_same_items(config, parses):
    first = _read(config, parses)
    assert len(parses) == len(first) > 1
    second = _read(config, parses)
    assert parses == [] and second == first


def test_an_edited_file_is_parsed_again_and_only_it(project, config, parses):
    write_item(project, "story", VALID)
    before = _read(config, parses)
    write_item(project, "story", VALID.replace("A title", "A better title"))
    after = _read(config, parses)
    assert parses == ["story.md"] and after["story"].title == "A better title"
    assert {k: v for k, v in after.items() if k != "story"} == {k: v for k, v in before.items() if k != "story"}


def test_a_renamed_file_is_a_new_item_and_the_old_name_is_gone(project, config, parses):
    path = write_item(project, "old-name", VALID)
    _read(config, parses)
    path.rename(project / "content" / "new-name.md")
    items = _read(config, parses)
    assert parses == ["new-name.md"] and "new-name" in items and "old-name" not in items
    assert "new-name" in items["new-name"].link


def test_a_deleted_file_is_gone_and_dropped_from_the_cache(project, config, parses):
    path = write_item(project, "doomed", VALID)
    assert "doomed" in _read(config, parses)
    path.unlink()
    assert "doomed" not in _read(config, parses) and parses == []
    assert "doomed.md" not in _stored_names(config)
    write_item(project, "doomed", VALID)  # and back again: parsed afresh, not resurrected
    assert "doomed" in _read(config, parses) and parses == ["doomed.md"]


def test_a_config_change_parses_everything_again(project, config, parses):
    write_item(project, "story", VALID)
    first = _read(config, parses)
    changed = load_config(set_config(project, **{"site.item_link": "https://news.example.net/{slug}"}))
    second = _read(changed, parses)
    assert len(parses) == len(first)
    assert second["story"].link.startswith("https://news.example.net/") and second["story"] != first["story"]


def test_a_new_program_version_parses_everything_again(config, parses, monkeypatch):
    first = _read(config, parses)
    monkeypatch.setattr(pipeline, "__version__", "999.0")
    _read(config, parses)
    assert len(parses) == len(first)


def test_a_broken_file_is_never_cached_and_reports_the_same_line(project, config, parses):
    write_item(project, "broken", 'title: "A title"\ndate: [2021')
    for _ in range(2):
        with pytest.raises(ContentError) as caught:
            read_content(config, remember=True)
        assert str(caught.value).startswith("content/broken.md:3: front matter is not valid YAML")


def test_a_read_without_remember_writes_no_cache(config, parses):
    read_content(config)
    assert not (config.path("state") / ParseCache.FILE).exists()


def test_a_damaged_cache_is_only_a_slower_read(config, parses):
    first = _read(config, parses)
    (config.path("state") / ParseCache.FILE).write_bytes(b"not a database" * 100)
    assert _read(config, parses) == first and len(parses) == len(first)


def test_a_dry_read_after_a_saved_one_leaves_the_cache_as_it_was(project, config, parses):
    _read(config, parses)
    before = _stored_names(config)
    write_item(project, "draft", VALID)
    read_content(config)  # no remember: a dry run's read
    assert _stored_names(config) == before and "draft.md" not in before


def test_a_cache_that_cannot_be_written_costs_a_parse_not_the_run(config, parses, monkeypatch, caplog):
    from pipeline.state import parse_cache

    def full_disk(self):
        raise sqlite3.OperationalError("database or disk is full")

    working = parse_cache.ParsedFileCache._flush
    monkeypatch.setattr(parse_cache.ParsedFileCache, "_flush", full_disk)
    first = _read(config, parses)
    assert first and "not updated (database or disk is full)" in caplog.text
    monkeypatch.setattr(parse_cache.ParsedFileCache, "_flush", working)
    assert _read(config, parses) == first and len(parses) == len(first)  # parsed again, none lost


def test_a_cache_of_an_older_version_is_replaced(config, parses):
    old = config.path("state") / ParseCache.OLD_FILE
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"a pickle of every item")
    first = _read(config, parses)
    assert not old.exists() and _stored_names(config) == {f"{slug}.md" for slug in first}


def test_read_content_lets_go_of_each_storys_bytes_as_it_reads_it(config):
    from pipeline.sources.local import scan_content

    files = scan_content(config)
    items = read_content(config, files=files)
    assert items and all(file.raw is None for file in files)


def test_a_link_from_the_content_folder_to_its_parent_does_not_stop_a_run(project, config):
    """Symlinked folders are not followed (as glob did): a loop must not break publishing or sending."""
    from pipeline import usecases

    (project / "content" / "images").mkdir(exist_ok=True)
    (project / "content" / "images" / "up").symlink_to("..")
    outcome = usecases.run(config, progress=False)
    assert outcome.written and not outcome.unchanged


def test_the_scan_keeps_the_bytes_of_stories_only(project):
    from pipeline.sources.local import scan_folder

    (project / "content" / "images").mkdir(exist_ok=True)
    (project / "content" / "images" / "episode.mp3").write_bytes(b"\0" * 100_000)
    files = {file.name: file for file in scan_folder(project / "content")}
    assert files["images/episode.mp3"].raw is None and len(files["images/episode.mp3"].digest) == 64
    assert all(file.raw is not None for name, file in files.items() if name.endswith(".md") and "/" not in name)


def _cache_holding(path, key: str, item: bytes):
    """A parse cache file holding ``a.md`` (digest d1) parsed under ``key``."""
    from pipeline.state.parse_cache import ParsedFileCache

    cache = ParsedFileCache(path, key, writable=True)
    cache.put("a.md", "d1", item)
    cache.save()
    return path


def test_a_reader_is_never_served_rows_committed_under_another_key_while_it_reads(tmp_path):
    from pipeline.state.parse_cache import ParsedFileCache

    path = _cache_holding(tmp_path / "cache.sqlite", "config-1", b"parsed under config 1")
    reader = ParsedFileCache(path, "config-1", writable=False)
    assert reader.get("a.md", "d1") == b"parsed under config 1"
    writer = ParsedFileCache(path, "config-2", writable=True)  # a run after the config changed
    writer.put("a.md", "d1", b"parsed under config 2")
    writer.save()
    assert reader.get("a.md", "d1") is None  # the reader's key is no longer the file's
    reader.close()


def test_a_reader_reads_beside_a_run_that_is_writing(tmp_path):
    from pipeline.state.parse_cache import ParsedFileCache

    path = _cache_holding(tmp_path / "cache.sqlite", "k", b"item a")
    run = ParsedFileCache(path, "k", writable=True)
    for n in range(2000):  # more than SQLite's page cache: written to the file before the commit
        run.put(f"s{n}.md", "d", b"x" * 2000)
    reader = ParsedFileCache(path, "k", writable=False)
    assert reader.get("a.md", "d1") == b"item a" and reader.get("s1.md", "d") is None
    run.save()
    reader.close()


def test_a_cache_damaged_inside_is_made_again_by_the_next_run(config, parses, caplog):
    first = _read(config, parses)
    path = config.path("state") / ParseCache.FILE
    data = bytearray(path.read_bytes())
    page = 4096
    data[page:] = b"\xff" * (len(data) - page)  # the header reads; every page after it is noise
    path.write_bytes(bytes(data))
    assert _read(config, parses) == first and len(parses) == len(first)
    assert "malformed" in caplog.text or "not a database" in caplog.text
    assert _read(config, parses) == first and parses == []  # made again: the next read parses nothing


def test_items_parsed_or_from_the_cache_share_one_set_of_field_names_and_a_copy_changes_only_itself(config, parses):
    """pydantic keeps the names of the fields given per instance (728 bytes a story); stories given the
    same fields share one set, whether parsed now or unpickled from the cache."""
    parsed = list(_read(config, parses).values())
    cached = list(_read(config, parses).values())
    assert parses == []
    given = {frozenset(item.model_fields_set) for item in parsed}
    shared = {id(item.model_fields_set) for item in parsed + cached}
    assert len(shared) == len(given)
    before = set(cached[0].model_fields_set)
    changed = cached[0].model_copy(update={"citation": "A citation."})
    assert "citation" in changed.model_fields_set and cached[0].model_fields_set == before
    assert parsed[0].model_fields_set == before
