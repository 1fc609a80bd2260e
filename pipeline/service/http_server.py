"""The production HTTP server of the web app: waitress, tuned so that slow clients cost nothing.

waitress reads every connection on one asynchronous loop and runs the app on a pool of threads, so an idle or
slow client holds a file descriptor, never a thread. What stock waitress lacks for a public endpoint is added here:

- a **request deadline**: a connection has ``web.header_timeout`` seconds from connecting (or from the first byte
  of each further request) to deliver a whole request; a client trickling headers one byte at a time (slowloris)
  is dropped then, however active it looks; idle kept-alive connections go after ``web.idle_timeout``;
- a **connection limit** high enough that a thousand such clients do not lock others out (``web.connection_limit``),
  with the process's open-file soft limit raised to match;
- the loop uses ``poll()``, not ``select()``, which cannot watch descriptors numbered above 1024;
- while it serves, the interpreter hands the GIL on every ``SWITCH_INTERVAL`` (1 ms) instead of 5 ms: a request
  thread that waits on the database gives up the GIL and, with the default, may wait up to 5 ms to get it back
  from a busy thread (the convoy effect); one-click unsubscribes ran at 650 req/s with the default and 1,600
  with 1 ms on the same machine (``bench/unsubscribe.py``), where an empty app changes by less than its noise.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from waitress.channel import HTTPChannel
from waitress.server import create_server

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.25  # how often the loop looks for clients past their deadline
SWITCH_INTERVAL = 0.001  # seconds between GIL hand-overs while serving (see the module's docstring)


class DeadlineChannel(HTTPChannel):
    """A waitress channel that knows since when it has been waiting for the request it is reading."""

    header_timeout = 10.0

    def __init__(self, server, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map)
        self.reading_since: float | None = time.monotonic()  # a new connection owes its first request

    def received(self, data):
        if self.reading_since is None and data:
            self.reading_since = time.monotonic()  # the first byte of a further request on a kept-alive connection
        result = super().received(data)
        if self.request is None:  # nothing half-read: the next deadline starts with the next byte
            self.reading_since = None
        return result

    def overdue(self, now: float) -> bool:
        """Still reading a request (or waiting for the first) after the deadline, with no request being served."""
        return (self.reading_since is not None and not self.requests
                and now - self.reading_since > self.header_timeout)


def raise_open_files(wanted: int) -> int:
    """Raise the soft limit on open files towards ``wanted`` (never above the hard limit); the limit now in force."""
    try:
        import resource  # POSIX only: the except below
    except ImportError:  # not on POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft if soft != resource.RLIM_INFINITY else wanted


class WebServer:
    """A WSGI app on tuned waitress (see the module's docstring). Request bodies over ``max_body`` are refused
    (413) before the app sees them."""

    def __init__(self, app, host: str, port: int, *, threads: int = 8, idle_timeout: int = 30,
                 header_timeout: float = 10.0, connection_limit: int = 4000, max_body: int = 1024 * 1024,
                 on_close: Callable[[], object] | None = None):

        spare = 64  # the database, the log, the listening socket, the trigger pipe
        files = raise_open_files(connection_limit + spare)
        if files < connection_limit + spare:
            log.warning("open-file limit %d: holding at most %d connections, not %d", files, files - spare,
                        connection_limit)
            connection_limit = max(10, files - spare)
        self.header_timeout = header_timeout
        self.server = create_server(app, host=host, port=port, threads=threads, max_request_body_size=max_body,
                                    channel_timeout=idle_timeout, cleanup_interval=max(1, idle_timeout // 2),
                                    connection_limit=connection_limit, asyncore_use_poll=True,
                                    ident="newsletter-pipeline", expose_tracebacks=False,
                                    clear_untrusted_proxy_headers=False)  # proxies are pipeline.service.proxies'
        channel = type("Channel", (DeadlineChannel,), {"header_timeout": header_timeout})
        self.server.channel_class = channel
        self.server_port = int(self.server.effective_port)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._on_close = on_close  # the app's own background work (the notice drainer), ended with the server

    def drop_overdue(self) -> int:
        """Close every connection past its request deadline; how many."""
        now = time.monotonic()
        dropped = 0
        for channel in list(self.server._map.values()):
            if isinstance(channel, DeadlineChannel) and channel.overdue(now):
                channel.handle_close()
                dropped += 1
        if dropped:
            log.info("dropped %d connection(s) that did not send a request within %g s", dropped,
                     self.header_timeout)
        return dropped

    def serve_forever(self, *_poll_interval: float) -> None:
        """Serve until ``shutdown`` (from another thread) or Ctrl-C; closing happens here, in the
        serving thread, so the event loop never polls a socket that another thread closed."""
        self._stop.clear()
        self._stopped.clear()
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL))
        loop = self.server.asyncore.loop
        next_sweep = time.monotonic() + SWEEP_SECONDS
        try:
            while not self._stop.is_set():
                loop(timeout=SWEEP_SECONDS, map=self.server._map, count=1, use_poll=True)
                if time.monotonic() >= next_sweep:
                    self.drop_overdue()
                    next_sweep = time.monotonic() + SWEEP_SECONDS
        finally:
            for channel in list(self.server._map.values()):
                channel.close()
            self.server.task_dispatcher.shutdown()
            sys.setswitchinterval(switch_interval)
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        try:
            self.server.pull_trigger()  # wake the loop at once
        except OSError:  # its trigger is already closed: the loop still sees the flag within its timeout
            pass
        self._stopped.wait(10)

    def server_close(self) -> None:
        if self._on_close is not None:
            self._on_close()
