"""A raw-socket SMTP sink in its own process, for throughput: it does not cap the rate.

aiosmtpd parses and copies every message in Python and caps near 500 msg/s on this kind
of machine, so a sender measured against it measures aiosmtpd.  This sink speaks just
enough SMTP (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) over asyncio protocols,
looks only for the end-of-data line, and answers every command with a success code.
Correctness tests keep aiosmtpd (tests/smtp_sink.py), which checks what it receives.

Run: python -m bench.sink [--no-pipelining]  -> prints the port; on each line read from stdin, prints the
number of messages accepted so far; exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
import threading

END_OF_DATA = b"\r\n.\r\n"


class Counter:
    def __init__(self) -> None:
        self.count = 0


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
                    self.buffer = self.buffer[-4:]
                    break
                self.buffer = self.buffer[end + len(END_OF_DATA):]
                self.in_data = False
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
            elif verb == b"DATA":
                self.in_data = True
                self.buffer = b"\r\n" + self.buffer  # so a message of just "." still ends at CRLF.CRLF
                replies.append(b"354 go ahead\r\n")
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


def main() -> None:
    counter = Counter()
    pipelining = "--no-pipelining" not in sys.argv
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: SmtpProtocol(counter, pipelining), "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    print(port, flush=True)
    for _ in sys.stdin:
        print(counter.count, flush=True)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


if __name__ == "__main__":
    main()
