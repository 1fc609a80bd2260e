"""A raw-socket SMTP sink in its own process, for throughput: it does not cap the rate.

aiosmtpd parses and copies every message in Python and caps near 500 msg/s on this kind
of machine, so a sender measured against it measures aiosmtpd.  This sink speaks just
enough SMTP (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) over asyncio protocols,
looks only for the end-of-data line, and answers every command with a success code.
Correctness tests keep aiosmtpd (tests/smtp_sink.py), which checks what it receives.

Run: python -m bench.sink [--no-pipelining] [--greylist SECONDS] [--record FILE]  -> prints the port; on
each line read from stdin, prints the number of messages accepted so far; exits when stdin closes.

``--greylist G`` answers 451 to each recipient's RCPT until G seconds have passed since its first try
(as postgrey does).  ``--record FILE`` writes every accepted message as it came over the wire
(dot-stuffed, without the final ``.``), each after a line ``<length> <mail from> <rcpt to>``: what the
baselines in bench/raw.py send again, so both sides send the same bytes; a line ``record PATH`` on
stdin records to PATH from then on.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import BinaryIO

END_OF_DATA = b"\r\n.\r\n"


class Counter:
    def __init__(self, greylist: float = 0.0, record: BinaryIO | None = None) -> None:
        self.count = 0
        self.greylist = greylist
        self.first_try: dict[bytes, float] = {}
        self.record = record


class SmtpProtocol(asyncio.Protocol):
    """One SMTP session: commands line by line, then the DATA phase until CRLF.CRLF."""

    def __init__(self, counter: Counter, pipelining: bool):
        self.counter = counter
        # Like the relays we send to (Postfix, Exim, SES...), PIPELINING is offered unless told not to.
        self.ehlo = b"250-sink\r\n" + (b"250-PIPELINING\r\n" if pipelining else b"") + \
            b"250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 0\r\n"
        self.buffer = b""
        self.in_data = False
        self.transport: asyncio.Transport | None = None
        self.envelope: list[bytes] = [b""]
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = []
        while True:
            if self.in_data:
                end = self.buffer.find(END_OF_DATA)
                if end < 0:
                    # Keep only what could still be the start of the end marker.
                    if self.counter.record is not None:
                        self.body.append(self.buffer[:-4])
                    self.buffer = self.buffer[-4:]
                    break
                if self.counter.record is not None:
                    self._record(self.buffer[:end + 2])
                self.buffer = self.buffer[end + len(END_OF_DATA):]
                self.in_data = False
                self.envelope = [b""]
                self.counter.count += 1
                replies.append(b"250 2.0.0 queued\r\n")
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            line, self.buffer = self.buffer[:line_end], self.buffer[line_end + 2:]
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                replies.append(self.ehlo)
            elif verb == b"DATA" and self.envelope[1:] == [] and self.counter.greylist:
                replies.append(b"554 5.5.1 No valid recipients\r\n")  # as relays answer when all were refused
            elif verb == b"DATA":
                self.in_data = True
                self.buffer = b"\r\n" + self.buffer  # so a message of just "." still ends at CRLF.CRLF
                replies.append(b"354 go ahead\r\n")
            elif verb == b"MAIL":
                self.envelope = [line[10:].strip(b"<>")]
                replies.append(b"250 OK\r\n")
            elif verb == b"RCPT":
                recipient = line[8:].strip(b"<>")
                if self.counter.greylist:
                    now = time.monotonic()
                    if now - self.counter.first_try.setdefault(recipient, now) < self.counter.greylist:
                        replies.append(b"451 4.7.1 Greylisted, try again later\r\n")
                        continue
                self.envelope.append(recipient)
                replies.append(b"250 OK\r\n")
            elif verb == b"RSET":
                self.envelope = [b""]
                replies.append(b"250 OK\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 bye\r\n")
                assert self.transport is not None
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            else:
                replies.append(b"250 OK\r\n")
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))

    def _record(self, tail: bytes) -> None:
        """One message as it came (the DATA phase began with the CRLF put before it: dropped)."""
        assert self.counter.record is not None
        data = b"".join([*self.body, tail])[2:]
        self.body = []
        sender, *recipients = self.envelope
        self.counter.record.write(b"%d %s %s\n" % (len(data), sender, b",".join(recipients)) + data)


async def _call(function) -> None:
    function()


def main() -> None:
    args = sys.argv[1:]
    greylist = float(args[args.index("--greylist") + 1]) if "--greylist" in args else 0.0
    record = open(args[args.index("--record") + 1], "wb") if "--record" in args else None  # noqa: SIM115
    counter = Counter(greylist, record)
    pipelining = "--no-pipelining" not in sys.argv
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: SmtpProtocol(counter, pipelining), "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    print(port, flush=True)
    for line in sys.stdin:
        if line.startswith("record "):  # record to another file from now on (what came so far is kept)
            def switch(path: str = line[7:].strip()) -> None:
                if counter.record is not None:
                    counter.record.close()
                counter.record = open(path, "wb")  # noqa: SIM115 - closed at the next switch or exit
            asyncio.run_coroutine_threadsafe(_call(switch), loop).result()
        elif counter.record is not None:
            asyncio.run_coroutine_threadsafe(_call(counter.record.flush), loop).result()
        print(counter.count, flush=True)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    if counter.record is not None:
        counter.record.close()


if __name__ == "__main__":
    main()
