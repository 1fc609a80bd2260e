"""The sending baselines, as processes like the command they are compared with: the messages a
`pipeline send` put on the wire (recorded by ``bench/sink.py --record``) sent again, the same bytes
to the same sink, without the pipeline.

    python -m bench.raw smtplib FILE PORT     # smtplib.sendmail in a loop over one connection
    python -m bench.raw pipelined FILE PORT   # a raw socket, RFC 2920: one round trip per message

``pipelined`` writes each message's body, its end and the next message's MAIL, RCPT and DATA in one
write, then reads the four replies: what a client that waits for every reply it must can do at best.
"""

from __future__ import annotations

import smtplib
import socket
import sys
from collections.abc import Iterator
from pathlib import Path


def records(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(envelope sender, recipient, message as on the wire: dot-stuffed, ending in CRLF)."""
    with path.open("rb") as stream:
        while header := stream.readline():
            length, sender, recipient = header.split(b" ")
            yield sender.decode(), recipient.strip().decode(), stream.read(int(length))


def unstuffed(wire: bytes) -> bytes:
    body = wire.replace(b"\r\n..", b"\r\n.")
    return body[1:] if body.startswith(b"..") else body


def with_smtplib(path: Path, port: int) -> int:
    sent = 0
    with smtplib.SMTP("127.0.0.1", port) as client:
        for sender, recipient, wire in records(path):
            client.sendmail(sender, [recipient], unstuffed(wire))
            sent += 1
    return sent


class Replies:
    def __init__(self, sock: socket.socket):
        self.file = sock.makefile("rb")

    def read(self) -> int:
        while True:  # a multi-line reply ends at the line with a space after the code
            line = self.file.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            if line[3:4] != b"-":
                return int(line[:3])


def pipelined(path: Path, port: int) -> int:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        replies = Replies(sock)
        replies.read()
        sock.sendall(b"EHLO bench\r\n")
        replies.read()
        sent = 0
        pending: bytes | None = None  # the last message's body, sent with the next envelope
        for sender, recipient, wire in records(path):
            envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()
            sock.sendall(envelope if pending is None else pending + b".\r\n" + envelope)
            if pending is not None:
                assert replies.read() == 250
                sent += 1
            codes = replies.read(), replies.read(), replies.read()
            assert codes == (250, 250, 354), codes
            pending = wire
        if pending is not None:
            sock.sendall(pending + b".\r\nQUIT\r\n")
            assert replies.read() == 250
            sent += 1
            replies.read()
    return sent


def main() -> None:
    how, path, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    sent = {"smtplib": with_smtplib, "pipelined": pipelined}[how](path, port)
    print(sent)


if __name__ == "__main__":
    main()
