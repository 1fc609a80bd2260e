"""The nginx example of docs/how-to/proxy-and-tls.md works: real nginx on loopback, in front of `serve-web`'s
server and the published folder, routes the app's paths to the app (without the folder) and serves the rest."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline import usecases
from pipeline.service.web import make_web_server
from pipeline.usecases import open_storage

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "how-to" / "proxy-and-tls.md"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)

if NGINX is None:
    if os.environ.get("CI"):
        raise RuntimeError("nginx is not installed; .ci/run installs it (apt-get install nginx)")
    pytestmark = pytest.mark.skip(reason="nginx not installed (apt-get install nginx)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _guide_server_block() -> str:
    [block] = re.findall(r"^```nginx\n(.*?)^```", GUIDE.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
    return block


def _nginx_conf(folder: Path, listen: int, public: Path, app_port: int) -> str:
    """The guide's server block, on a loopback port without TLS, inside the few lines nginx needs to run
    unprivileged in a temporary folder."""
    server = (_guide_server_block()
              .replace("listen 443 ssl;", f"listen 127.0.0.1:{listen};")
              .replace("/srv/newsletter/public/", f"{public}/")
              .replace("http://127.0.0.1:8025", f"http://127.0.0.1:{app_port}"))
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root, workers would become nobody, who cannot read tmp
    return (f"{user}daemon off;\nmaster_process off;\npid {folder / 'nginx.pid'};\nerror_log stderr;\n"
            f"events {{}}\nhttp {{\n    access_log off;\n{temp}\n{server}}}\n")


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stderr.read() if process.stderr else process.returncode
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nginx does not listen on {port} after {timeout} s"
            time.sleep(0.05)  # polling a condition in another process


def _get(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers={"Host": "www.nationalmssociety.org"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def behind_nginx(config, secret, tmp_path):
    """The project published, its web app on an ephemeral port, and nginx with the guide's block before both."""
    usecases.publish(config)
    storage = open_storage(config)
    server = make_web_server(config, storage, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    folder = tmp_path / "nginx"
    folder.mkdir()
    listen = _free_port()
    (folder / "nginx.conf").write_text(_nginx_conf(folder, listen, config.path("output"), server.server_port))
    process = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_port(listen, process)
        yield f"http://127.0.0.1:{listen}/news-feed/", config.path("output")
    finally:
        process.terminate()
        process.wait(timeout=30)
        server.shutdown()
        server.server_close()
        storage.close()


def test_the_published_folder_is_served_as_files(behind_nginx):
    base, public = behind_nginx
    status, headers, body = _get(base + "rss.xml")
    assert status == 200 and body == (public / "rss.xml").read_bytes()
    assert "Content-Security-Policy" not in headers  # nginx's file, not the app's page


def test_the_signup_form_comes_from_the_app_without_the_folder(behind_nginx):
    base, _ = behind_nginx
    status, headers, body = _get(base + "subscribe")
    assert status == 200
    assert b'name="email"' in body
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_an_unsubscribe_link_reaches_the_app(behind_nginx):
    base, _ = behind_nginx
    status, headers, body = _get(base + "unsubscribe?token=forged")
    assert status == 400  # the app's answer to a token it cannot read
    assert "Content-Security-Policy" in headers


def test_webhooks_reach_the_app(behind_nginx):
    base, _ = behind_nginx
    status, headers, body = _get(base + "webhooks/postmark", data=b"{}")
    assert status == 404  # the app's answer for a relay that is not configured, in the app's JSON
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["ok"] is False
