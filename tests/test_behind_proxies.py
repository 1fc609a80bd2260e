"""Per-client limits hold per client behind a real reverse proxy: nginx and Caddy (apt) run deploy/nginx.conf
and deploy/Caddyfile (the blocks docs/how-to/proxy-and-tls.md shows) with TLS on a loopback port, in front of
the web app on waitress. Clients
connect from different loopback addresses (127.0.0.2, 127.0.0.3, ...), so nginx sees and forwards really
different client addresses; the app trusts only the proxy (web.trusted_proxies: [127.0.0.1])."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from pipeline.config import load_config
from pipeline.service.http_server import WebServer
from pipeline.usecases import open_storage

from .conftest import REPO, set_config
from .test_signup import Clock, signup_app

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
CADDY = shutil.which("caddy")
PROGRAMS = {"nginx": NGINX, "caddy": CADDY}

PUBLIC_HOST = "www.nationalmssociety.org"  # the fixture's site.base_url host
OTHER_HOST = "news.example.org"  # a second name the same server answers to


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the public names and 127.0.0.1 (cryptography), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PUBLIC_HOST)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(PUBLIC_HOST), x509.DNSName(OTHER_HOST),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def nginx_conf(folder: Path, listen: int, public: Path, app_port: int, cert: Path, key: Path) -> str:
    """deploy/nginx.conf as shipped, with only its port, certificate, folder and upstream made the test's, inside
    the few lines nginx needs to run unprivileged in a temporary folder, in the foreground."""
    server = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    for shipped, ours in (("listen 443 ssl;", f"listen 127.0.0.1:{listen} ssl;\n    ssl_certificate {cert};\n"
                                              f"    ssl_certificate_key {key};"),
                          ("/srv/newsletter/public/", f"{public}/"),
                          ("http://127.0.0.1:8025", f"http://127.0.0.1:{app_port}")):
        assert shipped in server, f"deploy/nginx.conf no longer says {shipped!r}"
        server = server.replace(shipped, ours)
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root, workers would become nobody, who cannot read tmp
    return (f"{user}pid {folder / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\n"
            f"http {{\n    access_log off;\n{temp}\n{server}}}\n")


class Browser:
    """One client machine: HTTPS to nginx from its own loopback address, trusting the test's certificate."""

    def __init__(self, port: int, address: str, context: ssl.SSLContext):
        self.port, self.address, self.context = port, address, context

    def request(self, method: str, path: str, host: str = PUBLIC_HOST, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.context,
                                                 source_address=(self.address, 0))
        try:
            connection.request(method, path, body=body, headers={"Host": host, **(headers or {})})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def sign_up(self, clock: Clock, email: str, *, origin: str = f"https://{PUBLIC_HOST}", host: str = PUBLIC_HOST,
                headers: dict[str, str] | None = None) -> int:
        """Open the form, take its stamp, fill it in (the app's clock moves on), send it as a browser does."""
        status, page = self.request("GET", "/news-feed/subscribe", host=host)
        assert status == 200, page
        stamp = re.search(r'name="stamp" value="([^"]+)"', page)
        assert stamp is not None
        clock.advance(seconds=5)
        form = urlencode({"email": email, "stamp": stamp.group(1)}).encode()
        status, _ = self.request("POST", "/news-feed/subscribe", host=host, body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Origin": origin, **(headers or {})})
        return status


def caddyfile(listen: int, public: Path, app_port: int, cert: Path, key: Path) -> str:
    """deploy/Caddyfile as shipped, with only its site address (a loopback port, the test's certificate), folder
    and upstream made the test's; no admin endpoint, no HTTP redirect listener."""
    site = (REPO / "deploy" / "Caddyfile").read_text(encoding="utf-8")
    for shipped, ours in (("www.example.org {", f"https://{PUBLIC_HOST}:{listen}, https://{OTHER_HOST}:{listen}, "
                                                 f"https://127.0.0.1:{listen} {{\n\tbind 127.0.0.1\n"
                                                 f"\ttls {cert} {key}"),
                          ("/srv/newsletter/public", str(public)),
                          ("127.0.0.1:8025", f"127.0.0.1:{app_port}")):
        assert shipped in site, f"deploy/Caddyfile no longer says {shipped!r}"
        site = site.replace(shipped, ours)
    return "{\n\tadmin off\n\tauto_https disable_redirects\n}\n\n" + site


def _start(kind: str, folder: Path, listen: int, public: Path, app_port: int) -> subprocess.Popen:
    program = PROGRAMS[kind]
    if program is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"{kind} is not installed; .ci/run installs it (apt-get install {kind})")
        pytest.skip(f"{kind} not installed (apt-get install {kind})")
    cert, key = folder / "cert.pem", folder / "key.pem"
    if kind == "nginx":
        conf = folder / "nginx.conf"
        conf.write_text(nginx_conf(folder, listen, public, app_port, cert, key))
        command = [program, "-p", str(folder), "-c", str(conf), "-g", "daemon off; master_process off;"]
        env = None
    else:
        conf = folder / "Caddyfile"
        conf.write_text(caddyfile(listen, public, app_port, cert, key))
        command = [program, "run", "--config", str(conf), "--adapter", "caddyfile"]
        env = {**os.environ, "HOME": str(folder), "XDG_CONFIG_HOME": str(folder), "XDG_DATA_HOME": str(folder)}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(params=["nginx", "caddy"])
def behind_proxy(request, project, secret, tmp_path):
    """The web app (its clock the test's) on waitress, trusting the proxy only, and the proxy running its file
    from deploy/ with TLS in front of it; yields a factory of clients at given loopback addresses, and the clock."""
    config = load_config(set_config(project, **{"signup.check_deliverability": False,
                                                "web.trusted_proxies": ["127.0.0.1"]}))
    assert config.signup.ip_limit == 10  # the shipped limit the test counts to
    folder = tmp_path / request.param
    folder.mkdir()
    cert, _ = _certificate(folder)
    clock = Clock()
    storage = open_storage(config)
    server = WebServer(signup_app(config, storage, clock), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    listen = _free_port()
    process = None
    try:
        process = _start(request.param, folder, listen, config.path("output"), server.server_port)
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else process.returncode
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{request.param} does not listen on {listen} after 30 s"
                time.sleep(0.05)  # polling a condition in another process
        yield (lambda address: Browser(listen, address, context)), clock, config
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        server.shutdown()
        storage.close()


def test_twenty_clients_behind_a_proxy_are_twenty_clients(behind_proxy):
    browser, clock, config = behind_proxy
    statuses = [browser(f"127.0.0.{n}").sign_up(clock, f"reader{n}@example.org") for n in range(2, 22)]
    assert statuses == [200] * 20  # one proxy, twenty addresses: nobody shares another's limit


def test_the_eleventh_sign_up_from_one_client_behind_a_proxy_is_limited(behind_proxy):
    browser, clock, config = behind_proxy
    one = browser("127.0.0.30")
    statuses = [one.sign_up(clock, f"neighbour{n}@example.org") for n in range(11)]
    assert statuses == [200] * 10 + [429]  # signup.ip_limit: 10 an hour per client
    assert browser("127.0.0.31").sign_up(clock, "next-door@example.org") == 200  # the others are not locked out


def test_a_client_writing_its_own_x_forwarded_for_is_still_limited_by_its_address(behind_proxy):
    """The proxy appends (nginx) or sets (Caddy) the address it saw; the app walks from the right and never reaches what the client wrote."""
    browser, clock, config = behind_proxy
    forger = browser("127.0.0.40")
    statuses = [forger.sign_up(clock, f"forged{n}@example.org",
                               headers={"X-Forwarded-For": f"198.51.100.{n}", "Forwarded": f"for=198.51.100.{n}"})
                for n in range(11)]
    assert statuses == [200] * 10 + [429]


def test_behind_https_the_public_origin_is_the_apps_own_and_plain_http_is_another(behind_proxy):
    """The proxy forwards X-Forwarded-Proto: https and the host the browser asked for; the form's Origin check sees
    https://news.example.org (a name site.base_url does not give) as the app's own origin."""
    browser, clock, config = behind_proxy
    client = browser("127.0.0.50")
    assert client.sign_up(clock, "secure@example.org", host=OTHER_HOST, origin=f"https://{OTHER_HOST}") == 200
    assert client.sign_up(clock, "plain@example.org", host=OTHER_HOST, origin=f"http://{OTHER_HOST}") == 403


def test_the_documented_block_is_the_shipped_file():
    guide = (REPO / "docs" / "how-to" / "proxy-and-tls.md").read_text(encoding="utf-8")
    [block] = re.findall(r"^```nginx\n(.*?)^```", guide, re.DOTALL | re.MULTILINE)
    assert block == (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")


def test_the_documented_caddy_block_is_the_shipped_file_and_caddy_reads_it_as_written(tmp_path):
    guide = (REPO / "docs" / "how-to" / "proxy-and-tls.md").read_text(encoding="utf-8")
    [block] = re.findall(r"^```caddyfile\n(.*?)^```", guide, re.DOTALL | re.MULTILINE)
    assert block == (REPO / "deploy" / "Caddyfile").read_text(encoding="utf-8")
    if CADDY is None:
        if os.environ.get("CI"):
            raise RuntimeError("caddy is not installed; .ci/run installs it (apt-get install caddy)")
        pytest.skip("caddy not installed (apt-get install caddy)")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    adapted = subprocess.run([CADDY, "adapt", "--config", str(REPO / "deploy" / "Caddyfile"), "--adapter",
                              "caddyfile"], capture_output=True, text=True, env=env, timeout=60)
    assert adapted.returncode == 0, adapted.stderr
    assert '"upstreams":[{"dial":"127.0.0.1:8025"}]' in adapted.stdout  # the app, as the guide says
