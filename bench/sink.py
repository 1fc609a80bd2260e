"""An SMTP sink in its own process, so the server does not share a GIL with the sender being measured.

Run: python -m bench.sink  -> prints the port; on each line read from stdin, prints the
number of messages accepted so far; exits when stdin closes.
"""

from __future__ import annotations

import sys
import threading

from aiosmtpd.controller import Controller


class CountingHandler:
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += len(envelope.rcpt_tos)
        return "250 OK"


def main() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    print(port, flush=True)
    try:
        for _ in sys.stdin:
            print(handler.count, flush=True)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
