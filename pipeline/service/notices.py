"""The web server's notice drainer: the thread that sends the mail sign-up forms queued.

A form's request only queues its mail (``signup.Signups.subscribe``), so no answer waits on the
relay and a new address's answer takes as long as a known one's.  This thread sends the queue
right after each request, and looks again every ``POLL_SECONDS`` for retries that came due and
for notices another process left behind (queued just before it stopped, or claimed by a drainer
that died: its lease runs out).  On PostgreSQL, the drainers of several web servers share one
queue; each notice goes out once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

POLL_SECONDS = 30.0


class NoticeDrainer:
    """Runs ``deliver`` (``Signups.deliver_queued``) on its own thread, each time it is woken and every
    ``poll_seconds``; started by ``start`` or by the first ``wake``."""

    def __init__(self, deliver: Callable[[], object], poll_seconds: float = POLL_SECONDS):
        self.deliver, self.poll_seconds = deliver, poll_seconds
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="notice-drainer", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        """Something was queued: send it now (the caller does not wait)."""
        self.start()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the pass in progress and end the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the pass: a wake during it makes another pass
            try:
                self.deliver()
            except Exception:  # noqa: BLE001 - a broken pass (database gone for a moment) must not end the thread
                log.exception("sending queued sign-up mail failed; trying again in %g s", self.poll_seconds)
            self._wake.wait(self.poll_seconds)
