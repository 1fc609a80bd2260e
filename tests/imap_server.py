"""A real Dovecot IMAP (and POP3) server on 127.0.0.1, in a temporary folder, with one test user and a maildir.

Debian's ``dovecot-imapd`` and ``dovecot-pop3d`` (``.ci/run`` installs them).  Dovecot runs in the foreground (``-F``)
with its own config, base and state folders, so it never touches a system instance; mail
processes run as ``nobody``, since Dovecot refuses root for mail access.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .smtp_sink import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-test-password-123"


@dataclass
class ImapServer:
    host: str
    port: int
    pop3_port: int
    user: str
    password: str
    folder: Path
    process: subprocess.Popen

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def dovecot_missing_message() -> str | None:
    if not Path(DOVECOT).exists() or not Path("/usr/lib/dovecot/pop3").exists():
        return "Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d; .ci/run does it)"
    if os.geteuid() != 0:
        return "the Dovecot fixture needs root (to run mail processes as nobody)"
    return None


def require_dovecot() -> None:
    """Skip where Dovecot cannot run on a developer's machine; in CI (CI=true) that is a failure."""
    problem = dovecot_missing_message()
    if problem:
        if os.environ.get("CI"):  # as the PostgreSQL fixture: set on CI machines, and by .ci/run
            pytest.fail(problem)
        pytest.skip(problem)


def _wait_for_greeting(port: int, process: subprocess.Popen, deadline: float, greeting: bytes = b"* OK") -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"dovecot exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(greeting):
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            # Dovecot is starting: wait for its socket to be ready (no fixed sleep; poll with a bound).
            process_wait = min(0.05, max(0.0, deadline - time.monotonic()))
            try:
                process.wait(timeout=process_wait)
            except subprocess.TimeoutExpired:
                pass


def start_dovecot() -> ImapServer:
    folder = Path(tempfile.mkdtemp(prefix="dovecot-test-"))
    folder.chmod(0o755)  # dovecot's unprivileged login and mail processes must reach their sockets
    for name in ("run", "state", "mail"):
        (folder / name).mkdir()
    os.chown(folder / "mail", 65534, 65534)
    (folder / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    port, pop3_port = free_port(), free_port()
    (folder / "dovecot.conf").write_text(f"""
protocols = imap pop3
listen = 127.0.0.1
base_dir = {folder}/run
state_dir = {folder}/state
instance_name = dovecot-test-{port}
log_path = {folder}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{folder}/mail/%u
first_valid_uid = 1
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={folder}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
pop3_uidl_format = %08Xv%08Xu
""")
    process = subprocess.Popen([DOVECOT, "-F", "-c", str(folder / "dovecot.conf")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    server = ImapServer("127.0.0.1", port, pop3_port, USER, PASSWORD, folder, process)
    try:
        _wait_for_greeting(port, process, time.monotonic() + 20)
        _wait_for_greeting(pop3_port, process, time.monotonic() + 20, b"+OK")
    except Exception as exc:
        stop_dovecot(server)
        raise RuntimeError(f"Dovecot did not start: {exc}\n{server.log()}") from None
    return server


def stop_dovecot(server: ImapServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    shutil.rmtree(server.folder, ignore_errors=True)


def append(server: ImapServer, raw: bytes, folder: str = "INBOX") -> None:
    """Deliver a message into the user's mailbox over IMAP APPEND, as a mail client would."""
    import imaplib

    with imaplib.IMAP4(server.host, server.port, timeout=10) as client:
        client.login(server.user, server.password)
        status, _ = client.append(folder, "", None, raw)
        assert status == "OK"
