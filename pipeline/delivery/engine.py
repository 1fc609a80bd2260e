"""The send engine: one edition's ledger rows out over a few reused connections.

It depends only on a narrow ``Ledger`` (claim, begin, record, release, counts), a
``Transport`` and a function that renders one claimed row's message, so it can be
tested with an in-memory ledger.  Each outcome is recorded before the connection
sends its next message: a crash can leave at most one message per connection whose
acceptance was not recorded, and those are resent with the same Message-ID.
A temporary failure (4xx, a dropped connection) never holds a connection: the message goes
back to the ledger as deferred with its retry time (``retry_delay``, doubling per try, at most
``max_retry_delay``) and the connection moves on to the next recipient.  After the due rows
are sent, the send keeps going for deferred rows that come due within ``retry_window`` of its
start (greylisting relays accept the second try after a minute or so); later ones wait for
the next run.  A message is given up only after ``retry_for``; a relay that cannot be reached
stops the send.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from tqdm import tqdm

from ..clock import utcnow
from ..config import Delivery
from ..errors import PipelineError
from ..state.storage import DEFERRED, FAILED, PENDING, SENT, SKIPPED, Claim, Outcome
from .transports import Connection, PermanentError, TransientError, Transport

log = logging.getLogger(__name__)

IDLE_CLOSE = 5.0  # seconds a connection may sit idle (waiting for retries to come due) before it is closed


class Ledger(Protocol):
    """What the engine needs of the state: the send ledger of one edition, nothing else."""

    def claim(self, edition_id: str, limit: int, worker: str) -> list[Claim]: ...

    def begin_attempt(self, claim: Claim) -> bool: ...

    def record_results(self, results: list[Outcome]) -> None: ...

    def record_and_begin(self, outcome: Outcome, claim: Claim) -> bool:
        """``record_results([outcome])`` then ``begin_attempt(claim)``, in one transaction."""
        ...

    def release_stale(self, edition_id: str, claimed_before: datetime) -> int: ...

    def renew_leases(self, worker: str) -> int: ...

    def ledger_counts(self, edition_id: str) -> dict[str, int]: ...

    def next_retry(self, edition_id: str) -> datetime | None:
        """When the earliest deferred row of the edition is due (None: no row is deferred)."""
        ...


@dataclass(frozen=True)
class SendSettings:
    envelope_from: str
    batch_size: int = 200
    connections: int = 1
    rate_limit: float = 0.0
    retry_delay: timedelta = timedelta(seconds=2)  # first retry after a temporary failure; doubles per try
    max_retry_delay: timedelta = timedelta(hours=1)
    retry_window: timedelta = timedelta(minutes=10)  # keep going for deferred rows due this long after the start
    retry_for: timedelta = timedelta(days=3)
    lease: timedelta = timedelta(seconds=60)  # a claim not renewed for this long belongs to a dead worker
    exclusive: bool = True  # the caller holds the run lock on a one-machine database: take back every claim

    @classmethod
    def for_delivery(cls, delivery: Delivery, transport: Transport) -> SendSettings:
        smtp = delivery.smtp
        over_smtp = transport.name == "smtp"
        return cls(envelope_from=delivery.from_address, batch_size=delivery.batch_size,
                   connections=smtp.concurrency if over_smtp else 1, rate_limit=smtp.rate_limit if over_smtp else 0,
                   retry_delay=timedelta(seconds=smtp.retry_delay),
                   max_retry_delay=timedelta(seconds=smtp.max_retry_delay),
                   retry_window=timedelta(seconds=smtp.retry_window if over_smtp else 0),
                   retry_for=timedelta(hours=smtp.retry_for_hours),
                   lease=timedelta(seconds=delivery.lease_seconds))


@dataclass
class SendReport:
    edition_id: str
    sent: int = 0
    failed: int = 0
    deferred: int = 0  # rows this run left deferred (due again at their retry time)
    retried: int = 0  # temporary refusals this run met (each one put its row back in the queue)
    withdrawn: int = 0  # unsubscribed after their row was claimed: not sent
    done_before: int = 0  # rows an earlier run had already settled
    stopped: bool = False
    unreachable: str | None = None  # why the relay could not be reached, when that stopped the send
    failures: list[tuple[str, str]] = field(default_factory=list)
    next_retry: datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _deferred: set[int] = field(default_factory=set, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def settled(self, subscriber_id: int, status: str) -> None:
        """Follow one row's latest outcome in this run: ``deferred`` counts the rows still deferred."""
        with self._lock:
            if status == DEFERRED:
                self._deferred.add(subscriber_id)
            else:
                self._deferred.discard(subscriber_id)
            self.deferred = len(self._deferred)

    @property
    def troubled(self) -> bool:
        """Something needs an operator's eye: a failure, a deferral, or an unreachable relay."""
        return bool(self.failed or self.deferred or self.unreachable)


class RateLimiter:
    """Spaces messages evenly across all connections; 0 means no limit."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / per_second if per_second else 0.0
        self.clock, self.sleep = clock, sleep
        self.next = clock()
        self.lock = threading.Lock()

    def set_rate(self, per_second: float) -> None:
        with self.lock:
            self.interval = 1.0 / per_second if per_second else 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = self.clock()
            at = max(now, self.next)
            self.next = at + self.interval
        if at > now:
            self.sleep(at - now)


class Sender:
    """Sends one edition's due ledger rows; ``run`` returns when they are all settled or it was stopped."""

    def __init__(self, ledger: Ledger, edition_id: str, render: Callable[[Claim], bytes], transport: Transport,
                 settings: SendSettings, *, stop: threading.Event | None = None, progress: bool | None = None,
                 clock: Callable[[], datetime] = utcnow, worker: str | None = None,
                 share: Callable[[], int] | None = None, envelope_for: Callable[[Claim], str] | None = None,
                 sleep: Callable[[float], object] | None = None):
        self.ledger, self.edition_id, self.render = ledger, edition_id, render
        self.envelope_for = envelope_for  # per-message envelope sender (VERP); default settings.envelope_from
        self.transport, self.settings, self.clock = transport, settings, clock
        self.stop = stop or threading.Event()
        self.abort = threading.Event()  # an unexpected error or an unreachable relay: every worker stops
        self.error: BaseException | None = None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.share = share  # how many workers share the rate limit (from their heartbeats)
        self.limiter = RateLimiter(settings.rate_limit / max(1, share() if share else 1))
        self.worker = worker or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.report = SendReport(edition_id)
        self._finished = threading.Event()
        # Waiting for deferred rows to come due; a test passes one that moves its clock instead.
        self.sleep: Callable[[float], object] = sleep or self.stop.wait
        self._outstanding = 0  # messages handed to the connections whose outcome is not yet recorded
        self._settled = threading.Condition()

    def run(self) -> SendReport:
        report = self.report
        # Holding the run lock on a one-machine database, every row still 'sending' belongs to a sender
        # that died; where workers share the database, only rows whose lease ran out do.
        released = self.ledger.release_stale(self.edition_id, claimed_before=self._stale_before())
        if released:
            log.warning("edition %s: %d messages were in flight when a sender stopped; sending them again "
                        "with their original Message-ID", self.edition_id, released)
        counts = self.ledger.ledger_counts(self.edition_id)
        report.done_before = counts[SENT] + counts[FAILED] + counts[SKIPPED]
        work: queue.Queue[tuple[Claim, bytes]] = queue.Queue(maxsize=self.settings.connections * 4)
        bar = tqdm(total=counts[PENDING] + counts[DEFERRED], unit="msg", desc=f"edition {self.edition_id}",
                   disable=not self.progress, file=sys.stderr, leave=False)
        threads = [threading.Thread(target=self._work, args=(work, bar), name=f"sender-{n}", daemon=True)
                   for n in range(self.settings.connections)]
        keeper = threading.Thread(target=self._keep_leases, name="lease-keeper", daemon=True)
        for thread in [*threads, keeper]:
            thread.start()
        unsent: list[Claim] = []
        try:
            self._feed(work, unsent, until=self.clock() + self.settings.retry_window)
        finally:
            self._finished.set()
            for thread in [*threads, keeper]:
                thread.join()
            bar.close()
            while True:  # whatever the workers did not take goes back, unsent
                try:
                    unsent.append(work.get_nowait()[0])
                except queue.Empty:
                    break
            self._hand_back(unsent)
        if self.error is not None:
            raise PipelineError(f"edition {self.edition_id}: sending stopped: {self.error}") from self.error
        report.stopped = self.stop.is_set()
        return report

    def _stale_before(self) -> datetime:
        return self.clock() if self.settings.exclusive else self.clock() - self.settings.lease

    def _keep_leases(self) -> None:
        """While sending: renew this worker's leases, take back rows whose worker died, and
        follow the number of live workers sharing the rate limit."""
        interval = max(0.05, self.settings.lease.total_seconds() / 3)
        while not self._finished.wait(interval):
            try:
                self.ledger.renew_leases(self.worker)
                if not self.settings.exclusive:
                    taken = self.ledger.release_stale(self.edition_id, claimed_before=self._stale_before())
                    if taken:
                        log.warning("edition %s: took back %d messages from a worker whose lease ran out",
                                    self.edition_id, taken)
                if self.share is not None and self.settings.rate_limit:
                    self.limiter.set_rate(self.settings.rate_limit / max(1, self.share()))
            except Exception as exc:  # noqa: BLE001 - the next beat tries again; sending goes on
                log.warning("edition %s: lease renewal failed: %s", self.edition_id, exc)

    def _feed(self, work: queue.Queue, unsent: list[Claim], until: datetime) -> None:
        """Claim rows and render their messages ahead of the connections, until none are due and
        no deferred row comes due before ``until``."""
        while not self.stop.is_set() and not self.abort.is_set():
            claims = self.ledger.claim(self.edition_id, self.settings.batch_size, self.worker)
            if not claims:
                if self._wait_for_retries(until):
                    continue
                return
            for position, claim in enumerate(claims):
                if self.stop.is_set() or self.abort.is_set():
                    unsent.extend(claims[position:])
                    return
                try:
                    message = self.render(claim)
                except Exception as exc:  # noqa: BLE001 - one bad address must never stop the edition
                    log.warning("edition %s: cannot build the message for %s: %s", self.edition_id, claim.email, exc)
                    self._record(Outcome(claim, FAILED, f"could not build the message: {exc}", claim.attempts))
                    self.report.add(failed=1)
                    continue
                self._taken(1)
                while True:
                    try:
                        work.put((claim, message), timeout=0.05)
                        break
                    except queue.Full:
                        if self.abort.is_set() or self.stop.is_set():
                            self._taken(-1)
                            unsent.extend(claims[position:])
                            return

    def _taken(self, change: int) -> None:
        with self._settled:
            self._outstanding += change
            if not self._outstanding:
                self._settled.notify_all()

    def _wait_for_retries(self, until: datetime) -> bool:
        """Nothing is due: once every message in flight has its outcome recorded, wait for the
        earliest deferred row if it comes due before ``until``.  True when there may be rows to claim."""
        with self._settled:
            while self._outstanding and not (self.abort.is_set() or self.stop.is_set()):
                self._settled.wait(0.05)
        if self.abort.is_set() or self.stop.is_set():
            return False
        due = self.ledger.next_retry(self.edition_id)
        if due is None or due > until:
            return False
        wait = (due - self.clock()).total_seconds()
        if wait > 0:
            log.info("edition %s: waiting %.1fs for deferred messages to come due", self.edition_id, wait)
            self.sleep(wait)
        return not self.stop.is_set()

    def _work(self, work: queue.Queue, bar: tqdm) -> None:
        """One connection's loop.  A message's outcome is recorded in the same transaction that
        begins the next message's attempt when that one is already waiting (one commit per message
        instead of two), and on its own otherwise: never later than the next send."""
        try:
            connection = self.transport.connect()
        except Exception as exc:  # noqa: BLE001 - reported by run(), never a hang
            self._fail(exc)
            return
        unrecorded: Outcome | None = None
        idle_since: float | None = None
        announces = getattr(connection, "announces", False)
        held: tuple[Claim, bytes] | None = None  # the next message, whose envelope went out ahead of it
        try:
            while True:
                try:
                    if held is not None:
                        (claim, message), held = held, None
                    else:
                        claim, message = work.get_nowait() if unrecorded else work.get(timeout=0.05)
                except queue.Empty:
                    if unrecorded is not None:
                        outcome, unrecorded = unrecorded, None
                        self._record(outcome)
                        self._taken(-1)
                        continue
                    if self._finished.is_set() or self.abort.is_set():
                        return
                    # Waiting for deferred messages to come due holds no connection open for long.
                    now = time.monotonic()
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since > IDLE_CLOSE:
                        connection.close()  # opened again by its next send
                        idle_since = float("inf")
                    continue
                idle_since = None
                if self.stop.is_set() or self.abort.is_set():
                    if unrecorded is not None:
                        outcome, unrecorded = unrecorded, None
                        self._record(outcome)
                        self._taken(-1)
                    self._hand_back([claim])
                    self._taken(-1)
                    continue
                previous, unrecorded = unrecorded, None
                if announces:
                    try:
                        held = work.get_nowait()
                    except queue.Empty:
                        pass
                try:
                    unrecorded = self._send_one(connection, claim, message, previous, held)
                except Exception as exc:  # noqa: BLE001 - stop every worker; run() raises it
                    self._fail(exc)
                    self._hand_back([claim])
                    unrecorded = None
                if previous is not None:
                    self._taken(-1)  # recorded with this message's attempt
                if unrecorded is None:
                    self._taken(-1)  # withdrawn or handed back: nothing to record
                bar.update(1)
        except Exception as exc:  # noqa: BLE001 - a ledger that fails on a lone record
            self._fail(exc)
        finally:
            if unrecorded is not None:
                try:
                    self._record(unrecorded)
                except Exception as exc:  # noqa: BLE001 - left 'sending': the next run sends it again
                    self._fail(exc)
                self._taken(-1)
            if held is not None:
                self._hand_back([held[0]])
                self._taken(-1)
            connection.close()

    def _fail(self, exc: BaseException) -> None:
        with self.report._lock:
            first = self.error is None
            if first:
                self.error = exc
        if first:  # the other connections stop because of it: one error, said once
            log.error("edition %s: sending stopped: %s", self.edition_id, exc)
        self.abort.set()

    def _record(self, outcome: Outcome) -> None:
        self.ledger.record_results([outcome])
        self.report.settled(outcome.claim.subscriber_id, outcome.status)

    def _hand_back(self, claims: list[Claim]) -> None:
        """Unsent claims go back to their earlier state for the next run; a ledger that is down
        leaves them 'sending', and the next run takes them back all the same."""
        if not claims:
            return
        try:
            self.ledger.record_results([Outcome(c, PENDING if c.attempts == 0 or c.first_attempt_at is None
                                                else DEFERRED, None, c.attempts, self.clock()) for c in claims])
        except Exception as exc:  # noqa: BLE001
            log.warning("edition %s: could not hand back %d claims (%s); the next run takes them back",
                        self.edition_id, len(claims), exc)

    def retry_at(self, attempts: int, now: datetime) -> datetime:
        """When a message refused temporarily on its ``attempts``-th try is tried again: ``retry_delay``
        after the first, doubling with each try, at most ``max_retry_delay`` apart.  Doubling from a
        short first delay reaches a greylisting relay's delay G within 2G of the first try, whatever G is."""
        delay = self.settings.retry_delay * (2 ** min(max(0, attempts - 1), 30))
        return now + min(delay, self.settings.max_retry_delay)

    def _defer_or_give_up(self, claim: Claim, attempts: int, error: TransientError) -> Outcome:
        now = self.clock()
        first = claim.first_attempt_at or now
        if now - first >= self.settings.retry_for:
            reply = f"gave up after {attempts} attempts over {now - first}: {error}"
            log.warning("edition %s: %s failed: %s", self.edition_id, claim.email, reply)
            self.report.add(failed=1)
            return Outcome(claim, FAILED, reply, attempts)
        retry_at = self.retry_at(attempts, now)
        log.info("edition %s: %s deferred until %s: %s", self.edition_id, claim.email,
                 retry_at.isoformat(timespec="seconds"), error)
        self.report.add(retried=1)
        return Outcome(claim, DEFERRED, str(error), attempts, retry_at)

    def _envelope_from(self, claim: Claim) -> str:
        return self.envelope_for(claim) if self.envelope_for else self.settings.envelope_from

    def _begin(self, claim: Claim, previous: Outcome | None) -> bool:
        if previous is None:
            return self.ledger.begin_attempt(claim)
        began = self.ledger.record_and_begin(previous, claim)
        self.report.settled(previous.claim.subscriber_id, previous.status)
        return began

    def _send_one(self, connection: Connection, claim: Claim, message: bytes,
                  previous: Outcome | None = None, following: tuple[Claim, bytes] | None = None) -> Outcome | None:
        """Record ``previous`` (this connection's last outcome) and send one message; returns its
        outcome for the caller to record before the next send, or None when there is nothing to record."""
        if not self._begin(claim, previous):
            self.report.add(withdrawn=1)  # unsubscribed since the claim: not sent
            return None
        attempts = claim.attempts + 1
        envelope_from = self._envelope_from(claim)
        self.limiter.wait()
        try:
            if following is None:
                reply = connection.send(envelope_from, claim.email, message, key=str(claim.subscriber_id))
            else:  # the next message's envelope goes out with this body (PIPELINING)
                then = (self._envelope_from(following[0]), following[0].email)
                reply = connection.send(envelope_from, claim.email, message,  # type: ignore[call-arg]
                                        key=str(claim.subscriber_id), then=then)
        except PermanentError as exc:
            if exc.whole_send:  # the server refuses us, not this recipient: stop, fail nobody
                raise PipelineError(f"the mail server refuses the sender: {exc}") from None
            log.warning("edition %s: %s refused: %s", self.edition_id, claim.email, exc)
            self.report.add(failed=1)
            return Outcome(claim, FAILED, str(exc), attempts)
        except TransientError as exc:
            if exc.unreachable and not self.abort.is_set():
                self.report.unreachable = str(exc)
                log.error("edition %s: the mail server cannot be reached (%s); deferring the rest of "
                          "the edition to a later run", self.edition_id, exc)
                self.abort.set()
            # Back to the queue with its retry time; this connection moves on to the next recipient.
            return self._defer_or_give_up(claim, attempts, exc)
        self.report.add(sent=1)
        return Outcome(claim, SENT, reply, attempts)
