"""Every output file of a run, planned in memory, and the fingerprint that lets an unchanged run stop early.

Imports inside functions: each output's builder loads only when that output is planned, so an
unchanged run loads none of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING

import orjson

from ..clock import utcnow
from ..config import Config
from ..items import Item
from ..program import program_fingerprint
from ..sources.local import SourceFile, scan_folder
from ..state.files import write_private
from ..state.storage import Edition
from .versions import live_version, switch_point, versions_folder

if TYPE_CHECKING:  # the builders are imported by plan_outputs: the fingerprint alone needs none of them
    from .digest import PlannedDigest
    from .site import RenderDigest
    from .stream import MemorySink

FINGERPRINT_FILE = "outputs.json"
log = logging.getLogger(__name__)


def plan_outputs(items: list[Item], config: Config, editions: list[Edition], web_digest: PlannedDigest | None,
                 render: RenderDigest, origins: dict[str, str] | None = None,
                 sink: MemorySink | None = None) -> dict[Path, bytes]:
    """Every output file, by path, each given to ``sink`` as soon as it is made (by default a
    ``MemorySink``, which keeps the bytes: nothing is written here; a run passes a
    ``stream.VersionWriter``, which writes them into the next version and keeps none).

    ``web_digest`` is the digest the site shows (the latest edition's, else the newest
    items'), rendered only when the live version does not hold its copy already; ``render``
    gives the digest of an edition for its archive page; ``origins`` are what ``read_content``
    says the items were made from (keys of the feed archive cache and of the site's digest).
    """
    from .digest import HTML_FILE, TEXT_FILE, public_copy
    from .feed_files import feed_files, tag_feeds
    from .images import image_files
    from .site import archive_pages, site_pages
    from .stories import story_pages
    from .stream import MemorySink

    out = config.path("output")
    files = MemorySink() if sink is None else sink
    streamed = sink is not None  # the builders then give their keyed documents to the sink themselves
    chosen_topics = tag_feeds(items, config)  # the feeds and the home page list the same topics: found once
    for name, data in feed_files(items, config, chosen_topics, origins, sink=files if streamed else None).items():
        files.add(out / name, data)
    for path, data in site_pages(config, items, chosen_topics).items():
        files.add(path, data)
    for path, data in image_files(items, config).items():
        files.add(path, data)
    for path, data in story_pages(items, config, chosen_topics, origins, sink=files if streamed else None).items():
        files.add(path, data)
    if web_digest is not None:
        planned = web_digest
        files.made((out / HTML_FILE, out / TEXT_FILE),
                   digest_key(planned.items, planned.edition_id, planned.edition_date, config, origins),
                   lambda: public_copy(planned.render(), config))
    if config.delivery is not None:
        def keep(path: Path, chosen: list[Item], edition: Edition, build: Callable[[], bytes]) -> None:
            key = digest_key(chosen, edition.id, edition.created_at, config, origins)
            files.made((path,), key, lambda: (build(),))

        for path, data in archive_pages(editions, items, config, render, keep).items():
            files.add(path, data)
    return files


def digest_key(items: Iterable[Item], edition_id: str | None, edition_date: datetime | None, config: Config,
               origins: dict[str, str] | None) -> str:
    """A key of everything a digest's web copy is made from: its stories (by origin, else their JSON), its
    edition and date, the templates, the config and the program (``PageCache.base_of``)."""
    from .stories import PageCache

    origins = origins or {}
    digest = hashlib.sha256(f"digest\0{PageCache.base_of(config)}\0{edition_id}\0".encode())
    digest.update((edition_date.isoformat() if edition_date else "-").encode())
    for item in items:
        origin = origins.get(item.id)
        digest.update(b"\0o" + origin.encode() if origin is not None else b"\0j" + item.model_dump_json().encode())
    return digest.hexdigest()


def inputs_digest(config: Config, remote: list[Item], content: list[SourceFile]) -> bytes:
    """The files and items the outputs are made from, hashed once per run: config, templates,
    content files (as ``scan_content`` read them), remote items and the program (its code and
    libraries, not only its version number)."""
    digest = hashlib.sha256(program_fingerprint().encode())  # a git pull or a new library rebuilds
    digest.update(config.source_file.read_bytes())
    from .digest import PACKAGE_TEMPLATES

    for folder, files in ((b"templates", scan_folder(config.path("templates"))),
                          (b"package-templates", scan_folder(PACKAGE_TEMPLATES)), (b"content", content)):
        digest.update(folder + b"\0")
        for file in files:
            digest.update(f"{file.name}\0{file.digest}\0".encode())
    for item in remote:
        digest.update(item.model_dump_json().encode())
    return digest.digest()


def input_fingerprint(inputs: bytes, edition_ids: list[str], anyone_subscribed: bool) -> str:
    """Everything the outputs depend on: ``inputs_digest``, the editions and whether anyone is
    subscribed (both may change during a run, so this is taken again at its end)."""
    digest = hashlib.sha256(inputs)
    digest.update(json.dumps(edition_ids).encode())
    digest.update(b"subscribers" if anyone_subscribed else b"none")
    return digest.hexdigest()


def _record_path(config: Config) -> Path:
    return config.path("state") / FINGERPRINT_FILE


def _records(config: Config) -> dict[str, dict]:
    """What each kept version of the output folder holds, by version name ("" for a real folder)."""
    try:
        data = orjson.loads(_record_path(config).read_bytes())  # 60,000 entries at 10,000 stories
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    if "versions" not in data:  # written before versioned outputs: the record of the folder itself
        return {"": data}
    return dict(data["versions"])


def live_record(config: Config) -> dict:
    """The record of the set that is live now, whichever instant the last run was stopped at."""
    return _records(config).get(live_version(config.path("output")), {})


_live_record = live_record


# A file whose size and modification time are as recorded is taken as untouched without being read
# (as git's index does): at 10,000 story pages, hashing every output again was most of an unchanged run.
# A file modified within this long of being recorded could share its recorded time; it is always hashed.
RACY_NS = 100_000_000


def release_due(config: Config, now: datetime, record: dict | None = None) -> bool:
    """A scheduled story the live outputs (``record``, read when not given) leave out has come out since:
    they must be made again."""
    release_at = (_live_record(config) if record is None else record).get("release_at")
    return release_at is not None and datetime.fromisoformat(release_at) <= now


def outputs_unchanged(config: Config, fingerprint: str) -> bool:
    """True when the last run saw the same inputs and its outputs are still there, untouched."""
    record = _live_record(config)
    if record.get("fingerprint") != fingerprint:
        return False
    if release_due(config, utcnow(), record):
        return False  # a scheduled story is due: it is published now
    stats: dict[str, list[int]] = record.get("stats", {})
    recorded_at = record.get("recorded_at", 0)
    for name, expected in record.get("outputs", {}).items():
        try:
            stat = os.stat(name)
        except OSError:
            return False
        if not S_ISREG(stat.st_mode):
            return False
        known = stats.get(name)
        if known == [stat.st_size, stat.st_mtime_ns] and stat.st_mtime_ns < recorded_at - RACY_NS:
            continue
        if hashlib.sha256(Path(name).read_bytes()).hexdigest() != expected:
            return False
    return True


def remember_outputs(config: Config, fingerprint: str | None, files: dict[Path, bytes] | None, version: str, *,
                     release_at: datetime | None = None) -> None:
    """Record what ``version`` of the output folder holds, before it is switched in, beside the record of
    the live one: a run killed at any instant leaves the record of whichever set is live.  ``files`` None
    (a send, which adds archive pages only) keeps the live set's record for the new version.  Each file's
    size and time are read in the version folder itself, where the live name will lead once switched."""
    out = config.path("output")
    live = live_version(out)
    records = {name: record for name, record in _records(config).items() if name in (live, version)}
    if files is None:
        records[version] = records.get(live, {})
    else:
        from .stream import VersionWriter

        folder = versions_folder(switch_point(out)) / version if version else out
        # A VersionWriter knows the status of each file it wrote or found intact; the rest are read here.
        known: dict[str, list[int]] = files.file_stats if isinstance(files, VersionWriter) else {}
        prefix = os.fspath(out) + os.sep
        stats = {}
        for path in files:
            name = str(path)
            if name in known:
                stats[name] = known[name]
                continue
            if not name.startswith(prefix):
                continue
            try:
                stat = os.stat(os.path.join(folder, name[len(prefix):]))
            except OSError:
                continue
            stats[name] = [stat.st_size, stat.st_mtime_ns]
        record: dict = {"fingerprint": fingerprint, "stats": stats}
        if release_at is not None:  # a scheduled story is due then: the same inputs make other outputs
            record["release_at"] = release_at.isoformat()
        if isinstance(files, VersionWriter):  # its bytes are on disk: their digests were taken as written
            record.update(outputs={str(path): digest for path, digest in files.digests.items()}, keys=files.made_keys)
        else:
            record["outputs"] = {str(path): hashlib.sha256(data).hexdigest() for path, data in files.items()}
        records[version] = {**record, "recorded_at": time.time_ns()}
    # orjson: the record names every output three times (60,000 entries at 10,000 stories).
    write_private(_record_path(config), orjson.dumps({"versions": records}, option=orjson.OPT_SORT_KEYS))


def stale_outputs(config: Config, files: dict[Path, bytes]) -> list[Path]:
    """Files the last publishing run wrote that this one no longer makes: a topic that fell below
    ``min_items``, archive pages after ``feeds.limit`` changed, an image no story uses.  Left in place
    they would keep publishing what was deleted.  Only files of the output folder that are still
    exactly as written are named (an edit by hand is left alone); the edition pages under
    ``archive/`` never are (older ones are kept, not rebuilt, by design)."""
    recorded: dict[str, str] = _live_record(config).get("outputs", {})
    planned = {str(path) for path in files}  # by name first: resolving 10,000 story pages costs seconds
    candidates = [(name, expected) for name, expected in sorted(recorded.items()) if name not in planned]
    if not candidates:
        return []
    out = config.path("output").resolve()
    editions = out / "archive"
    made = {path.resolve() for path in files}  # by where they are: a recorded name may reach one by a link
    stale = []
    for name, expected in candidates:
        path = Path(name)
        if not path.is_absolute() or not path.is_file():
            continue
        where = path.resolve()
        if where in made or not where.is_relative_to(out) or where.is_relative_to(editions):
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() == expected:
            stale.append(path)
        else:
            log.warning("%s is no longer made but was changed by hand since; left in place", path)
    return stale
