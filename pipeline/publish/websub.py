"""WebSub publishing: tell the hub which feeds changed, so subscribers get them at once.

Optional (``feeds.websub_hub``).  Pinging happens after the files are written, one
form POST per changed feed (``hub.mode=publish``, ``hub.url=<feed>``).  A hub that is
down or refuses costs one log line and never fails the run: readers still poll.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from .feeds import ARCHIVE_FOLDER, ATOM_FILE, JSON_FILE, RSS_FILE

log = logging.getLogger(__name__)

_FEED_NAMES = {RSS_FILE, ATOM_FILE, JSON_FILE}


@dataclass
class PingReport:
    pinged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    reason: str | None = None


def changed_feed_urls(config: Config, written: list[Path]) -> list[str]:
    """The public URLs of the subscribable feeds among the files just written (not archive documents,
    which never change once full and advertise no hub)."""
    out = config.path("output").resolve()  # the live version the written files are in
    urls = []
    for path in written:
        try:
            relative = Path(path).resolve().relative_to(out).as_posix()
        except ValueError:
            continue
        if Path(relative).name in _FEED_NAMES and not relative.startswith(ARCHIVE_FOLDER):
            urls.append(config.site.url(relative))
    return sorted(urls)


def ping_hub(config: Config, written: list[Path]) -> PingReport:
    """Ping the configured hub for every changed feed; never raises."""
    report = PingReport()
    hub = config.feeds.websub_hub
    if not hub:
        return report
    urls = changed_feed_urls(config, written)
    if not urls:
        return report
    import httpx  # here: most runs have no hub, or nothing new to announce

    try:
        headers = {"User-Agent": config.fetch.user_agent}
        with httpx.Client(timeout=config.feeds.websub_timeout, headers=headers) as client:
            for url in urls:
                try:
                    response = client.post(hub, data={"hub.mode": "publish", "hub.url": url})
                except httpx.TransportError as exc:  # down or too slow: the rest would fail the same way
                    report.failed.extend(u for u in urls if u not in report.pinged)
                    report.reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    break
                if response.is_success:
                    report.pinged.append(url)
                else:
                    report.failed.append(url)
                    report.reason = f"HTTP {response.status_code}"
    except Exception as exc:  # noqa: BLE001 - a hub must never fail the run
        report.failed = [u for u in urls if u not in report.pinged]
        report.reason = f"{type(exc).__name__}: {exc}"
    if report.failed:
        log.warning("WebSub hub %s: %d of %d pings failed (%s); readers will still poll the feeds",
                    hub, len(report.failed), len(urls), report.reason)
    else:
        log.info("WebSub hub %s: pinged for %d changed feeds", hub, len(report.pinged))
    return report
