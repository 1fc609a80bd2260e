"""One stream of items from local content and every remote source, without duplicates."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..items import Item


def canonical_link(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def merge_items(*groups: list[Item]) -> list[Item]:
    """One stream: the first item with a given id or canonical link wins (local content first).

    Only an item's own link identifies it: items that fell back to their source's home
    page share that link without being the same story.
    """
    seen_ids: set[str] = set()
    seen_links: set[str] = set()
    merged = []
    for group in groups:
        for item in group:
            link = canonical_link(item.link) if item.own_link else None
            if item.id in seen_ids or (link is not None and link in seen_links):
                continue
            seen_ids.add(item.id)
            if link is not None:
                seen_links.add(link)
            merged.append(item)
    return merged
