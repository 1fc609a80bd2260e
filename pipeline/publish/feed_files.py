"""Every feed document of a run, from the builders in ``feeds.py``: the main feeds, one set per tag
feed (``TagFeed``), the RFC 5005 archive documents (complete pages cached, never rebuilt) and a
readable HTML page per feed.  One entry point, ``feed_files``.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config
from ..items import Item, newest_first, tag_slug
from ..program import program_fingerprint
from ..state.files import open_private
from .digest import environment_for
from .feeds import (
    ARCHIVE_FOLDER,
    FEED_PAGE,
    FEED_TEMPLATE,
    JSON_FILE,
    TAGS_FOLDER,
    FeedEntries,
    FeedSpec,
    build_json_feed,
    build_rss_and_atom,
    feed_ttl,
    last_updated,
    main_spec,
)

if TYPE_CHECKING:
    from .stream import MemorySink

log = logging.getLogger(__name__)


# -- every feed of a run ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagFeed:
    """A tag with a feed of its own; its slug is its folder under tags/."""

    slug: str
    label: str
    items: tuple[Item, ...] = field(repr=False)

    @property
    def folder(self) -> str:
        return f"{TAGS_FOLDER}{self.slug}/"


def tag_feeds(items: list[Item], config: Config) -> list[TagFeed]:
    """The tags that get feeds: the allow-list, else every tag with at least topics.min_items items."""
    settings = config.feeds.topics
    if not settings.enabled:
        return []
    by_slug: dict[str, list[Item]] = {}
    spellings: dict[str, Counter] = {}
    for item in newest_first(items):
        for slug in dict.fromkeys(tag_slug(tag) for tag in item.tags):
            by_slug.setdefault(slug, []).append(item)
        for tag in item.tags:
            spellings.setdefault(tag_slug(tag), Counter())[tag] += 1
    allowed = {tag_slug(tag) for tag in settings.allow} if settings.allow is not None else None
    chosen = []
    for slug in sorted(by_slug):
        if allowed is not None and slug not in allowed:
            continue
        if allowed is None and len(by_slug[slug]) < settings.min_items:
            continue
        label = min(spellings[slug].items(), key=lambda pair: (-pair[1], pair[0]))[0]  # commonest spelling
        chosen.append(TagFeed(slug, label, tuple(by_slug[slug])))
    return chosen




def topic_spec(topic: TagFeed, config: Config) -> FeedSpec:
    site = config.site
    return FeedSpec(folder=topic.folder, title=f"{site.title}: {topic.label}",
                    description=f"Items tagged “{topic.label}” from {site.title}.", page=topic.folder,
                    hub=config.feeds.websub_hub, ttl=feed_ttl(config))




def feed_archive_pages(items: list[Item], config: Config) -> list[list[Item]]:
    """Items older than the main feed, in pages of feeds.limit counted from the oldest.

    Counting from the oldest keeps every full page's items fixed forever; only the
    newest page fills up, and it may be empty (so the last full page already has the
    next-archive link it will always have).
    """
    limit = config.feeds.limit
    older = list(reversed(newest_first(items)[limit:]))  # oldest first
    if not older:
        return []
    pages = [older[start:start + limit] for start in range(0, len(older), limit)]
    if len(pages[-1]) == limit:
        pages.append([])
    return [newest_first(page) for page in pages]


def archive_file(kind: str, number: int, feed: FeedSpec | None = None) -> str:
    """Archive page ``number`` of ``feed`` (the main feed by default) in format ``kind`` (rss or atom),
    relative to the output folder: ``feed-archive/`` in the feed's own folder."""
    return f"{feed.folder if feed else ''}{ARCHIVE_FOLDER}{kind}-{number}.xml"


def archive_base(config: Config) -> bytes:
    """What every archive document depends on besides its items and spec: the program and the config."""
    return hashlib.sha256(f"{program_fingerprint()}\0{config.model_dump_json()}".encode()).digest()


def archive_key(base: bytes, page: list[Item], rss_spec: FeedSpec, atom_spec: FeedSpec,
                origins: dict[str, str] | None = None) -> str:
    """A key of everything an archive page's two documents are made from (see ``ArchiveCache``)."""
    digest = hashlib.sha256(base + pickle.dumps((rss_spec, atom_spec), protocol=5))
    origins = origins or {}
    for item in page:
        origin = origins.get(item.id)
        digest.update(b"o" + origin.encode() if origin is not None else b"j" + item.model_dump_json().encode())
        digest.update(b"\0")
    return digest.hexdigest()


class ArchiveCache:
    """Built archive documents from earlier runs, in the state folder, by a hash of everything a
    document is made from: its items, its spec (links, names), the config and the program.

    A full archive page never changes (pages count from the oldest item), so after one edit of
    10,000 items only the newest page and the main feeds are built again.  Only ``app.run``
    saves it (``save_archive_cache``); a dry run reads it and writes nothing."""

    FILE = "archive-cache.pickle"

    def __init__(self, config: Config):
        self.path = config.path("state") / self.FILE
        self.base = archive_base(config)
        self.old: dict[str, tuple[bytes, bytes]] = {}
        try:
            with self.path.open("rb") as f:
                stored = pickle.load(f)
            if isinstance(stored, dict):
                self.old = stored
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - a damaged cache only means building again
            log.warning("archive cache %s unreadable (%s); building every archive page", self.path, exc)
        self.used: dict[str, tuple[bytes, bytes]] = {}
        self.built = 0

    def get_or_build(self, page: list[Item], rss_spec: FeedSpec, atom_spec: FeedSpec,
                     build: Callable[[], tuple[bytes, bytes]],
                     origins: dict[str, str] | None = None) -> tuple[bytes, bytes]:
        # Items by their JSON, not their pickle: a pickle's bytes depend on which objects happen to be
        # shared (a freshly parsed item and the same item from the parse cache differ) and on the
        # order of sets (pydantic's fields-set), which changes with each process's string hashing:
        # keyed by pickle, no new process ever found a page.  JSON depends on the values only.
        # An item read from a content file is known by its origin (``read_content``), which is cheaper
        # than its JSON (a tenth of a rebuild at 10,000 items) and changes whenever the item can.
        key = archive_key(self.base, page, rss_spec, atom_spec, origins)
        data = self.old.get(key)
        if data is None:
            data = build()
            self.built += 1
        self.used[key] = data
        return data

    def save(self) -> None:
        if self.used.keys() == self.old.keys():
            return
        with open_private(self.path) as f:
            pickle.dump(self.used, f, protocol=pickle.HIGHEST_PROTOCOL)


_archive_caches: dict[Path, ArchiveCache] = {}


def _archive_specs(pages: list[list[Item]], number: int, page: list[Item], config: Config,
                   feed: FeedSpec, full_text: bool = True) -> tuple[FeedSpec, FeedSpec]:
    """The RSS and Atom specs of ``feed``'s archive page ``number`` (1 is the oldest); ``full_text``
    whether its entries carry the stories' text."""
    site = config.site
    specs = []
    for kind, main_file in (("rss", feed.rss_file), ("atom", feed.atom_file)):
        links = [("current", site.url(feed.path(main_file)))]
        if number > 1:
            links.append(("prev-archive", site.url(archive_file(kind, number - 1, feed))))
        if number < len(pages):
            links.append(("next-archive", site.url(archive_file(kind, number + 1, feed))))
        name = archive_file(kind, number).removeprefix(ARCHIVE_FOLDER)
        # The newest page may still be empty: dated by the newest archived item, never 1970.
        updated = None if page else max((last_updated(older) for older in pages if older), default=None)
        specs.append(FeedSpec(folder=feed.folder + ARCHIVE_FOLDER, archive=True, links=tuple(links), page=feed.page,
                              title=f"{feed.title or site.title} (archive {number})",
                              description=feed.description, rss_file=name, atom_file=name,
                              json_file=None, updated=updated, full_text=full_text))
    return specs[0], specs[1]


def save_archive_cache(config: Config) -> None:
    """Keep what this process built for the next run (and forget pages no longer made)."""
    cache = _archive_caches.pop(config.path("state"), None)
    if cache is not None:
        cache.save()


def archive_documents(pages: list[list[Item]], config: Config, origins: dict[str, str] | None = None,
                      sink: MemorySink | None = None, feed: FeedSpec | None = None,
                      entries: FeedEntries | None = None, full_text: bool = True) -> dict[str, bytes]:
    """RFC 5005 archived feeds for RSS and Atom of ``feed`` (the main feed by default), linked
    prev-archive/next-archive/current; ``origins`` as ``read_content`` gives them, for the cache's keys;
    ``entries`` the run's (``FeedEntries``); ``full_text`` whether the entries carry the stories' text
    (a topic's archive may carry their summaries only).  With a ``sink`` (a run) each page goes there by its key
    instead (``stream.VersionWriter.made``: a full page the live version holds is not built again) and
    the archive cache is neither read nor kept."""
    feed = feed or FeedSpec()
    if sink is not None:
        base = archive_base(config)
        out = config.path("output")
        built = [0]

        def build(page: list[Item], rss_spec: FeedSpec, atom_spec: FeedSpec) -> tuple[bytes, bytes]:
            built[0] += 1
            return build_rss_and_atom(page, config, rss_spec, atom_spec, entries)

        for number, page in enumerate(pages, start=1):
            rss_spec, atom_spec = _archive_specs(pages, number, page, config, feed, full_text)
            sink.made((out / rss_spec.path(rss_spec.rss_file), out / atom_spec.path(atom_spec.atom_file)),
                      archive_key(base, page, rss_spec, atom_spec, origins), partial(build, page, rss_spec, atom_spec))
        log.debug("feed archive%s: %d pages, %d built, the others kept in the live version",
                  f" of {feed.folder}" if feed.folder else "", len(pages), built[0])
        return {}
    cache = _archive_caches.get(config.path("state"))
    if cache is None:
        cache = _archive_caches[config.path("state")] = ArchiveCache(config)
    files: dict[str, bytes] = {}
    for number, page in enumerate(pages, start=1):
        rss_spec, atom_spec = _archive_specs(pages, number, page, config, feed, full_text)
        rss, atom = cache.get_or_build(page, rss_spec, atom_spec,
                                       partial(build_rss_and_atom, page, config, rss_spec, atom_spec, entries),
                                       origins)
        files[rss_spec.path(rss_spec.rss_file)] = rss
        files[atom_spec.path(atom_spec.atom_file)] = atom
    log.debug("feed archive%s: %d pages, %d built, the others from %s",
              f" of {feed.folder}" if feed.folder else "", len(pages), cache.built, cache.path.name)
    rss_first = feed.folder + ARCHIVE_FOLDER + "rss"
    return dict(sorted(files.items(), key=lambda pair: not pair[0].startswith(rss_first)))


def feed_page(items: list[Item], config: Config, spec: FeedSpec) -> bytes:
    """The feed as a web page: browsers are dropping XSLT, so a person who clicks a feed link
    still gets a readable page with the addresses to copy into a reader."""
    site = config.site
    env = environment_for(config)
    html = env.get_template(FEED_TEMPLATE).render(
        site=site, organisation=config.organisation, title=spec.title or site.title,
        description=spec.description or site.description, items=items,
        feeds=[("RSS", site.url(spec.path(spec.rss_file))), ("Atom", site.url(spec.path(spec.atom_file))),
               ("JSON Feed", site.url(spec.path(spec.json_file or JSON_FILE)))],
    )
    return html.encode("utf-8")


def feed_files(items: list[Item], config: Config, chosen_topics: list[TagFeed] | None = None,
               origins: dict[str, str] | None = None, sink: MemorySink | None = None) -> dict[str, bytes]:
    """Every feed document of a run, by path relative to the output folder.

    The main feed and per topic a feed of its own (tags/<slug>/), each the same way (``_one_feed``):
    RSS, Atom and JSON Feed of its newest feeds.limit items and an HTML page, and with feeds.archive
    (and for a topic feeds.topics.archive) the RFC 5005 archive documents of its older items behind
    them.  Each item's entry is made once (``FeedEntries``) and put into every document that lists it.
    ``chosen_topics`` when the caller has them already (``tag_feeds(items, config)``), ``origins`` as
    ``read_content`` gives them; with a ``sink`` the documents go there as they are made, not in the result.
    """
    files: dict[str, bytes] = {}
    keep = _keeper(config, files, origins, sink)
    if sink is None:  # one archive cache per call, shared by the main feed's archive and the topics'
        _archive_caches[config.path("state")] = ArchiveCache(config)
    entries = FeedEntries(config, config.path("state"))
    try:
        archived, topics = config.feeds.archive, config.feeds.topics
        files.update(_one_feed(newest_first(items), config, main_spec(config), FEED_PAGE, archived,
                               keep, entries, origins, sink))
        for topic in tag_feeds(items, config) if chosen_topics is None else chosen_topics:
            files.update(_one_feed(list(topic.items), config, topic_spec(topic, config), topic.folder + "index.html",
                                   archived and topics.archive, keep, entries, origins, sink,
                                   full_archive=topics.archive_text == "full"))
    finally:
        entries.close()
    return files


def _one_feed(items: list[Item], config: Config, spec: FeedSpec, page_name: str, archived: bool, keep,
              entries: FeedEntries, origins: dict[str, str] | None, sink: MemorySink | None,
              full_archive: bool = True) -> dict[str, bytes]:
    """One feed's documents from its ``items`` (newest first): the window, its page and, when ``archived``,
    its archive (with the stories' text when ``full_archive``, else their summaries)."""
    site = config.site
    window = items[: config.feeds.limit]
    pages = feed_archive_pages(items, config) if archived else []
    rss_spec = atom_spec = spec
    if pages:
        newest = len(pages)
        rss_spec = replace(spec, links=(*spec.links, ("prev-archive", site.url(archive_file("rss", newest, spec)))))
        atom_spec = replace(spec, links=(*spec.links, ("prev-archive", site.url(archive_file("atom", newest, spec)))))

    def build() -> tuple[bytes, ...]:
        json_feed = (build_json_feed(window, config, spec),) if spec.json_file else ()
        return (*build_rss_and_atom(window, config, rss_spec, atom_spec, entries), *json_feed,
                feed_page(window, config, spec))

    keep(window, rss_spec, atom_spec, [*feed_set_names(spec), page_name], build)
    return archive_documents(pages, config, origins, sink, spec, entries, full_archive) if pages else {}


def feed_set_names(spec: FeedSpec) -> list[str]:
    """The files ``feed_set`` makes for ``spec``, in its order."""
    names = [spec.path(spec.rss_file), spec.path(spec.atom_file)]
    return names + [spec.path(spec.json_file)] if spec.json_file else names


def _keeper(config: Config, files: dict[str, bytes], origins: dict[str, str] | None, sink: MemorySink | None):
    """How ``feed_files`` keeps a group of documents made from ``items``: in ``files``, or with a ``sink``
    (a run) by a key of the items, the specs, the templates, the config and the program, so that a group
    whose key the live version holds is not made again."""
    if sink is None:
        def into_files(items: list[Item], rss_spec: FeedSpec, atom_spec: FeedSpec, names: list[str],
                       build: Callable[[], tuple[bytes, ...]]) -> None:
            files.update(zip(names, build(), strict=True))
        return into_files
    from .stories import PageCache  # the feed pages are rendered from the same templates as the story pages

    base = hashlib.sha256(archive_base(config) + PageCache.base_of(config).encode()).digest()
    out = config.path("output")

    def into_sink(items: list[Item], rss_spec: FeedSpec, atom_spec: FeedSpec, names: list[str],
                  build: Callable[[], tuple[bytes, ...]]) -> None:
        sink.made([out / name for name in names], archive_key(base, items, rss_spec, atom_spec, origins), build)
    return into_sink
