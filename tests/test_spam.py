"""SpamAssassin's view of the message a subscriber gets (Debian's spamassassin, local tests only: -L)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from .conftest import run_cli

SPAMASSASSIN = shutil.which("spamassassin")

if SPAMASSASSIN is None:
    if os.environ.get("CI"):
        raise RuntimeError("spamassassin is not installed; .ci/run installs it (apt-get install spamassassin)")
    pytestmark = pytest.mark.skip(reason="spamassassin not installed (apt-get install spamassassin)")


def _report(message: bytes) -> tuple[float, dict[str, float]]:
    """The total score and each rule's points from `spamassassin -L -t` (local tests, no network)."""
    result = subprocess.run([SPAMASSASSIN, "-L", "-t"], input=message, capture_output=True, timeout=120, check=True)
    report = result.stdout.decode("utf-8", "replace").split("Content analysis details:", 1)[1]
    total = float(re.search(r"\(\s*(-?[\d.]+) points", report).group(1))
    rules = {name: float(points) for points, name in re.findall(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s", report, re.MULTILINE)}
    return total, rules


@pytest.fixture
def sent_message(project, secret) -> bytes:
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    run_cli(project, "run", check=True)
    (message,) = (project / "outbox").glob("*/*.eml")
    return message.read_bytes()


def test_the_sent_message_scores_below_one_with_no_html_rule(sent_message):
    total, rules = _report(sent_message)
    assert "HTML_MESSAGE" in rules  # the report was read: SpamAssassin saw the HTML part
    assert total < 1.0, rules
    assert {name: points for name, points in rules.items() if name.startswith("HTML_") and points > 0} == {}
