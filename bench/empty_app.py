"""The benchmarks' baseline server: an empty WSGI app on the web app's own server and settings.

    python -m bench.empty_app --config site/config.yaml --port 8026

Run as its own process, as ``pipeline serve-web`` is, so the load generator's threads share no
interpreter (and no GIL) with either server and both are measured the same way.
"""

from __future__ import annotations

import argparse


def nothing(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def main() -> None:
    from pipeline.config import load_config
    from pipeline.service.http_server import WebServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web = load_config(args.config).web
    server = WebServer(nothing, "127.0.0.1", args.port, threads=web.threads, idle_timeout=web.idle_timeout,
                       header_timeout=web.header_timeout, connection_limit=web.connection_limit)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
