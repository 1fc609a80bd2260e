"""Fetching one remote feed politely and within bounds: conditional GET with the stored ETag and
Last-Modified, a whole-fetch deadline, a size limit on the decompressed body, a descriptive
User-Agent, redirects followed (a permanent one moves the source)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Fetch
from ..state.storage import SourceState

if TYPE_CHECKING:
    import httpx

PERMANENT_REDIRECTS = {301, 308}


class SourceError(Exception):
    """Why one source gave nothing new this time."""


@dataclass
class Fetched:
    status: int
    body: bytes = b""
    content_type: str = ""
    url: str = ""
    etag: str | None = None
    last_modified: str | None = None
    moved_to: str | None = None



def fetch(client: httpx.Client, url: str, settings: Fetch, state: SourceState | None) -> Fetched:
    import httpx  # at the point of use: only runs that fetch sources pay for importing it

    headers = {}
    if state:
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
    deadline = time.monotonic() + settings.timeout
    try:
        with client.stream("GET", url, headers=headers) as response:
            moved = None
            for hop in response.history:
                if hop.status_code in PERMANENT_REDIRECTS:
                    moved = str(response.url)
            if response.status_code == 304:
                return Fetched(304, url=str(response.url), moved_to=moved,
                               etag=response.headers.get("etag") or (state.etag if state else None),
                               last_modified=response.headers.get("last-modified")
                               or (state.last_modified if state else None))
            if response.status_code >= 400:
                raise SourceError(f"HTTP {response.status_code} {response.reason_phrase}")
            declared = response.headers.get("content-length")
            if (declared and declared.isdigit() and int(declared) > settings.max_bytes
                    and "content-encoding" not in response.headers):
                raise SourceError(f"response of {declared} bytes is over the limit of {settings.max_bytes} bytes")
            chunks, size = [], 0
            for chunk in response.iter_bytes():  # decompressed: the limit holds for gzip bombs too
                size += len(chunk)
                if size > settings.max_bytes:
                    raise SourceError(f"response is over the limit of {settings.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise SourceError(f"timed out after {settings.timeout:g}s")
                chunks.append(chunk)
            return Fetched(response.status_code, b"".join(chunks), response.headers.get("content-type", ""),
                           str(response.url), response.headers.get("etag"), response.headers.get("last-modified"),
                           moved)
    except httpx.TimeoutException:
        raise SourceError(f"timed out after {settings.timeout:g}s") from None
    except httpx.TooManyRedirects:
        raise SourceError("too many redirects") from None
    except httpx.HTTPError as exc:
        raise SourceError(f"{type(exc).__name__}: {exc}") from None


def make_client(settings: Fetch) -> httpx.Client:
    import httpx  # start-up: only a run that fetches a source needs it

    timeout = httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0))
    return httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=5,
                        headers={"User-Agent": settings.user_agent, "Accept-Encoding": "gzip, deflate",
                                 "Accept": "application/atom+xml, application/rss+xml, application/feed+json, "
                                           "application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5"})
