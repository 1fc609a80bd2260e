"""A page for every story of the content folder, the story index in pages, and a page per tag.

``stories/<slug>/`` holds a story's page: the whole story, its image, the whole citation, tags,
date, author, a canonical link (the item's link, the one the feeds and the digest give), Open
Graph and JSON-LD ``NewsArticle`` metadata, and the feeds.  ``stories/`` lists every story, newest
first, ``site.per_page`` to a page (``stories/page/2/``, ...); ``stories/tags/<slug>/`` lists the
stories of one tag the same way.  Remote items link to their source and get no page.

Each kind of page is rendered from one template compiled once per run.  A page's bytes depend only
on what it shows, so a page that shows the same as before is taken from ``.state/pages-cache.pickle``
instead of being rendered again: a story page by its story's origin (file name and content hash),
a listing by the fields it shows of each story (slug, title, summary, date, tags), both with the
templates, the config and the program.  An edit of one story's body renders that story's page only.
The pages share one stylesheet, ``site.css`` at the top of the output folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from ..config import Config
from ..items import Item, newest_first, tag_slug
from ..program import program_fingerprint
from ..sources.local import scan_folder
from ..state.files import open_private
from ..urls import STORIES_FOLDER, story_path
from .digest import ARCHIVE_FOLDER, PACKAGE_TEMPLATES, environment_for, longdate

if TYPE_CHECKING:
    from .feed_files import TagFeed
    from .stream import MemorySink

log = logging.getLogger(__name__)

STORY_TEMPLATE = "story.html"
LIST_TEMPLATE = "stories.html"
CARD_TEMPLATE = "story_card.html"  # one story in a listing (a macro, rendered once per story)
STYLESHEET = "site.css"
TAGS_FOLDER = f"{STORIES_FOLDER}tags/"
PAGE_FOLDER = "page/"
INDEX_FILE = "index.html"
UP_STORY = "../../"  # from stories/<slug>/ to the output folder, where the shared stylesheet is


@dataclass(frozen=True)
class TagLink:
    label: str
    url: str


@dataclass(frozen=True)
class Tag:
    """A tag as the story pages show it: its commonest spelling and its stories, newest first."""

    slug: str
    label: str
    items: tuple[Item, ...]

    @property
    def folder(self) -> str:
        return f"{TAGS_FOLDER}{self.slug}/"


@dataclass(frozen=True)
class Listing:
    """One page of a paginated list of stories (the story index or a tag page)."""

    title: str          # of the list, e.g. "All stories" or "Stories tagged “research”"
    folder: str         # the list's first page, relative to the output folder, ending with "/"
    number: int         # 1-based
    count: int          # pages in the list
    items: tuple[Item, ...]

    @staticmethod
    def page_folder(folder: str, number: int) -> str:
        return folder if number == 1 else f"{folder}{PAGE_FOLDER}{number}/"

    @property
    def path(self) -> str:
        return self.page_folder(self.folder, self.number) + INDEX_FILE

    def url(self, config: Config, number: int | None = None) -> str:
        return config.site.url(self.page_folder(self.folder, self.number if number is None else number))


_NEWEST = datetime.max.replace(tzinfo=timezone.utc)


def _oldest(listing: Listing) -> datetime:
    """When the oldest story of a listing page came out (an empty page: first)."""
    return listing.items[-1].published_utc if listing.items else _NEWEST


def paginate(items: Sequence[Item], per_page: int) -> list[tuple[Item, ...]]:
    """Items in pages of ``per_page``, newest first; an empty list still has its one (empty) page."""
    pages = [tuple(items[start:start + per_page]) for start in range(0, len(items), per_page)]
    return pages or [()]


def story_tags(items: Iterable[Item]) -> list[Tag]:
    """Every tag of these stories, by slug (tags differing only in case or accents share a page)."""
    by_slug: dict[str, list[Item]] = {}
    spellings: dict[str, Counter[str]] = {}
    for item in items:  # newest first already
        for tag in item.tags:
            slug = tag_slug(tag)
            spellings.setdefault(slug, Counter())[tag] += 1
            tagged = by_slug.setdefault(slug, [])
            if not tagged or tagged[-1] is not item:  # a story tagged twice with one slug is listed once
                tagged.append(item)
    return [Tag(slug, min(spellings[slug].items(), key=lambda pair: (-pair[1], pair[0]))[0], tuple(by_slug[slug]))
            for slug in sorted(by_slug)]


def _json_for_script(data: Any) -> Markup:
    """JSON safe inside a <script> element: no ``</script>``, no ``<!--`` can close or open anything."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def news_article(item: Item, config: Config) -> dict[str, Any]:
    """The schema.org ``NewsArticle`` of a story, as search engines read it from JSON-LD."""
    org, site = config.organisation, config.site
    publisher: dict[str, Any] = {"@type": "Organization", "name": org.name, "url": org.website}
    if site.logo is not None:
        publisher["logo"] = {"@type": "ImageObject", "url": site.logo.url, "width": site.logo.width,
                             "height": site.logo.height}
    own = {name.casefold() for name in (org.name, org.short_name, org.display_name) if name}
    if item.author is None or item.author.casefold() in own:
        author: dict[str, Any] = {"@type": "Organization", "name": item.author or org.name, "url": org.website}
    else:
        author = {"@type": "Person", "name": item.author}
    article: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "NewsArticle",
        "headline": item.title,
        "description": item.summary,
        "url": item.link,
        "mainEntityOfPage": {"@type": "WebPage", "@id": item.link},
        "datePublished": item.published.isoformat(),
        "dateModified": item.last_modified.isoformat(),
        "author": [author],
        "publisher": publisher,
        "inLanguage": site.language,
    }
    if item.image is not None:
        article["image"] = [item.image.url]
    if item.tags:
        article["keywords"] = list(item.tags)
    if item.citation:
        article["citation"] = item.citation
    return article


def og_locale(language: str) -> str:
    """Open Graph's locale form of a language tag: ``en-us`` -> ``en_US``."""
    primary, _, region = language.partition("-")
    return f"{primary}_{region.upper()}" if region else primary


class StoryPages:
    """The story pages of one run: the templates compiled once, the shared parts made once."""

    def __init__(self, items: list[Item], config: Config, chosen_topics: list[TagFeed] | None = None):
        self.config = config
        self.items = newest_first([item for item in items if item.local])
        self.tags = story_tags(self.items)
        self.tag_urls = {tag.slug: config.site.url(tag.folder) for tag in self.tags}
        self.topics = {topic.slug: topic for topic in chosen_topics or []}
        env = environment_for(config)
        self.env = env
        self.story_template = env.get_template(STORY_TEMPLATE)
        self.list_template = env.get_template(LIST_TEMPLATE)
        site = config.site
        self.common = {
            "site": site,
            "organisation": config.organisation,
            "feeds": [("RSS", "application/rss+xml", site.url("rss.xml")),
                      ("Atom", "application/atom+xml", site.url("atom.xml")),
                      ("JSON Feed", "application/feed+json", site.url("feed.json"))],
            "index_url": site.url(STORIES_FOLDER),
            "archive_url": site.url(f"{ARCHIVE_FOLDER}/") if config.delivery is not None else None,
            "og_locale": og_locale(site.language),
        }
        self.zone = ZoneInfo(config.digest.timezone)
        # Per tag slug, its link; per story, its links (a story is shown on 1 + len(tags) pages).
        links = {tag.slug: TagLink(tag.label, self.tag_urls[tag.slug]) for tag in self.tags}
        self._tag_links = {item.id: [links[slug] for slug in dict.fromkeys(tag_slug(tag) for tag in item.tags)]
                           for item in self.items}
        self._base = site.base_url
        self._card_macro = env.get_template(CARD_TEMPLATE).module.card  # type: ignore[attr-defined]
        self._cards: dict[str, str] = {}

    def story_url(self, item: Item) -> str:
        # base_url ends with "/" and a slug is [a-z0-9-]: the join is a concatenation (urljoin costs 50 µs).
        return f"{self._base}{STORIES_FOLDER}{item.slug}/"

    def shown_date(self, moment: datetime) -> str:
        """A date as readers in digest.timezone count days, as the digest shows it."""
        return longdate(moment.astimezone(self.zone))

    def tag_links(self, item: Item) -> list[TagLink]:
        return self._tag_links[item.id]

    def story(self, item: Item) -> bytes:
        page = self.story_template.render(
            **self.common, item=item, url=self.story_url(item), up=UP_STORY, date=self.shown_date(item.published),
            updated=self.shown_date(item.updated) if item.updated else None,
            tags=self.tag_links(item), json_ld=_json_for_script(news_article(item, self.config)),
        )
        return page.encode("utf-8")

    def listing(self, listing: Listing, feeds: list[tuple[str, str, str]] | None = None,
                tags: list[TagLink] | None = None) -> bytes:
        config = self.config
        entries = [(item, self.story_url(item), self.shown_date(item.published), self.tag_links(item))
                   for item in listing.items]
        page = self.list_template.render(
            **self.common, listing=listing, url=listing.url(config), up="../" * listing.path.count("/"),
            prev_url=listing.url(config, listing.number - 1) if listing.number > 1 else None,
            next_url=listing.url(config, listing.number + 1) if listing.number < listing.count else None,
            entries=entries, cards=[self.card(entry) for entry in entries], list_feeds=feeds, all_tags=tags,
        )
        return page.encode("utf-8")

    def card(self, entry: tuple[Item, str, str, list[TagLink]]) -> str:
        """A story's entry in a listing, rendered once: each story is listed on 1 + its tags' pages."""
        item = entry[0]
        card = self._cards.get(item.id)
        if card is None:
            card = self._cards[item.id] = self._card_macro(*entry)
        return card

    def forget_card(self, item: Item) -> None:
        """``item``'s card is shown on no further page."""
        self._cards.pop(item.id, None)

    def listings(self) -> list[tuple[Listing, list[tuple[str, str, str]] | None, list[TagLink] | None]]:
        """Every page of the story index and of each tag, with the feeds and tags each one shows."""
        per_page = self.config.site.per_page
        site = self.config.site
        out: list[tuple[Listing, list[tuple[str, str, str]] | None, list[TagLink] | None]] = []
        every_tag = [TagLink(tag.label, self.tag_urls[tag.slug]) for tag in self.tags]
        pages = paginate(self.items, per_page)
        for number, chosen in enumerate(pages, start=1):
            out.append((Listing("All stories", STORIES_FOLDER, number, len(pages), chosen), None,
                        every_tag if number == 1 else None))
        for tag in self.tags:
            topic = self.topics.get(tag.slug)
            feeds = None
            if topic is not None:
                feeds = [("RSS", "application/rss+xml", site.url(topic.folder + "rss.xml")),
                         ("Atom", "application/atom+xml", site.url(topic.folder + "atom.xml")),
                         ("JSON Feed", "application/feed+json", site.url(topic.folder + "feed.json"))]
            pages = paginate(tag.items, per_page)
            for number, chosen in enumerate(pages, start=1):
                out.append((Listing(f"Stories tagged “{tag.label}”", tag.folder, number, len(pages), chosen),
                            feeds, None))
        return out


class PageCache:
    """Rendered pages from earlier runs by a key of everything they show, in one pickle in the state folder.

    A story page's key is its story's origin (``read_content``: file name, content hash, config and
    program) with its tags' labels; a listing's, its place and the fields it shows of each story.
    The cache is discarded whole when the templates, the config or the program change, so the
    same key always gives the same bytes and nothing stale can come back.  Only ``app.run``
    saves it (``save_page_cache``), with only the pages of that run; a dry run writes nothing."""

    FILE = "pages-cache.pickle"
    FORMAT = 1

    def __init__(self, path: Path, base: str, entries: dict[str, bytes]):
        self.path, self.base = path, base
        self.old, self.new = entries, {}  # type: dict[str, bytes], dict[str, bytes]
        self.rendered = 0

    @classmethod
    def base_of(cls, config: Config) -> str:
        """What every page depends on besides what it shows: the templates, the config and the program."""
        templates = "".join(f"{file.name}\0{file.digest}\0" for folder in (config.path("templates"), PACKAGE_TEMPLATES)
                            for file in scan_folder(folder))
        return hashlib.sha256(f"{cls.FORMAT}\0{program_fingerprint()}\0{config.model_dump_json()}\0{templates}"
                              .encode()).hexdigest()

    @classmethod
    def load(cls, config: Config) -> PageCache:
        path = config.path("state") / cls.FILE
        base = cls.base_of(config)
        entries: dict[str, bytes] = {}
        try:
            with path.open("rb") as f:
                stored = pickle.load(f)
            if isinstance(stored, dict) and stored.get("base") == base:
                entries = stored["pages"]
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - a damaged cache is only a slower build
            log.warning("page cache %s unreadable (%s); rendering every page", path, exc)
        return cls(path, base, entries)

    def page(self, key: str, render: Callable[[], bytes]) -> bytes:
        data = self.old.get(key)
        if data is None:
            data = render()
            self.rendered += 1
        self.new[key] = data
        return data

    def save(self) -> None:
        if self.new.keys() == self.old.keys():
            return
        with open_private(self.path) as f:
            pickle.dump({"base": self.base, "pages": self.new}, f, protocol=pickle.HIGHEST_PROTOCOL)


_page_caches: dict[Path, PageCache] = {}


def save_page_cache(config: Config) -> None:
    """Keep what this process rendered for the next run (and forget pages no longer made)."""
    cache = _page_caches.pop(config.path("state"), None)
    if cache is not None:
        cache.save()


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def story_pages(items: list[Item], config: Config, chosen_topics: list[TagFeed] | None = None,
                origins: dict[str, str] | None = None, sink: MemorySink | None = None) -> dict[Path, bytes]:
    """Every story page, every page of the story index and of each tag, by path.

    With ``origins`` (as ``read_content`` gives them) a page is taken from the page cache when it
    shows the same stories as before; a page showing a story without a known origin is rendered.
    With a ``sink`` (a run, ``stream.VersionWriter``) each page goes there as it is made, by the same
    key: a page the live version holds from the same key is not rendered again, and no cache is kept
    in memory or in the state folder (the output folder is the cache)."""
    pages = StoryPages(items, config, chosen_topics)
    out = config.path("output")
    cache = PageCache.load(config) if origins and sink is None else None
    if cache is not None:
        _page_caches[config.path("state")] = cache
    base = PageCache.base_of(config) if origins and sink is not None else ""

    def origin(item: Item) -> str | None:
        return origins.get(item.id) if origins is not None else None

    made = [0, 0]  # pages planned, rendered (when the sink or the cache took the others)

    def rendered(render: Callable[[], bytes]) -> tuple[bytes]:
        made[1] += 1
        return (render(),)

    def keep(path: Path, key: str | None, render: Callable[[], bytes]) -> None:
        made[0] += 1
        if sink is not None:
            if key is None:
                sink.add(path, rendered(render)[0])
            else:
                sink.made((path,), _key(base, key), partial(rendered, render))
        elif cache is None or key is None:
            files[path] = render()
        else:
            files[path] = cache.page(key, render)

    # One stylesheet for every story page (a browser fetches it once), not a copy in each of 10,000 pages.
    files: dict[Path, bytes] = {}
    keep(out / STYLESHEET, None, lambda: pages.env.get_template(STYLESHEET).render().encode("utf-8"))
    for item in pages.items:
        known = origin(item)
        # The tags' labels come from every story (the commonest spelling), so they are part of the key.
        labels = "\0".join(link.label for link in pages.tag_links(item))
        keep(out / story_path(item.slug), None if known is None else _key("story", known, labels),
             partial(pages.story, item))
    listed: dict[str, str] = {}  # per story, the fields a listing shows of it (a story is on 1 + its tags' lists)

    def shown_of(item: Item) -> str:
        fields = listed.get(item.id)
        if fields is None:
            fields = listed[item.id] = (f"{item.slug}\0{item.title}\0{item.summary}\0{item.published.isoformat()}\0"
                                        + "\0".join(link.label for link in pages.tag_links(item)))
        return fields

    # Listing pages by their oldest story, newest first, so that a story's card (and the fields a listing
    # shows of it) is made at the first page showing it and dropped after the last: only the cards of a
    # window of stories are held at once (all of them were 60 MB at 30,000 stories).  Each page's bytes
    # do not depend on the order.
    listings = sorted(pages.listings(), key=lambda entry: _oldest(entry[0]), reverse=True)
    uses = Counter(item.id for listing, _feeds, _tags in listings for item in listing.items)
    for listing, feeds, tags in listings:
        # A listing shows a few fields of each story, so it is keyed by them (not by the stories'
        # origins): an edit of a story's body leaves its listings as they were.
        key = None
        if origins:
            labels = "\0".join(f"{link.label}\0{link.url}" for link in tags or [])
            feed_urls = "\0".join(url for _label, _type, url in feeds or [])
            shown = "\0".join(shown_of(item) for item in listing.items)
            key = _key("list", listing.title, listing.folder, str(listing.number), str(listing.count), labels,
                       feed_urls, shown)
        keep(out / listing.path, key, partial(pages.listing, listing, feeds, tags))
        for item in listing.items:
            uses[item.id] -= 1
            if not uses[item.id]:
                listed.pop(item.id, None)
                pages.forget_card(item)
    if cache is not None:
        log.debug("story pages: %d files, %d rendered, the others from %s", len(files), cache.rendered,
                  cache.path.name)
    elif sink is not None and origins:
        log.debug("story pages: %d files, %d rendered, the others kept in the live version", made[0], made[1] - 1)
    return files
