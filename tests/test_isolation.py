"""The suite cannot touch the project it is run in: it builds every project in a temporary folder from
tests/fixtures/project/, so a working tree made one's own (its own organisation, stories and relay)
runs the same suite, and no test message can reach the relay that working tree configures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import REPO, snapshot

# Modules that exercise the shared fixtures the way the rest of the suite does: the MESEMS content
# (parsing, feeds), in-process and subprocess runs, and sending over SMTP to the tests' own sink.
REPRESENTATIVE = ["tests/test_content.py", "tests/test_feed_metadata.py", "tests/test_delivery.py",
                  "tests/test_app.py"]
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
                                    "public", "public.versions", ".state", "outbox")


def made_their_own(tree: Path, relay_port: int) -> None:
    """What a new user does first: their organisation and relay in config.yaml, their stories in content/
    (the MESEMS story retitled, one story gone, one added that does not parse), and a project that has run."""
    config = tree / "config.yaml"
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["site"]["title"] = "Riverside Food Bank News"
    data["organisation"].update(name="Riverside Food Bank", postal_address="12 Mill Lane, Riverside, RV1 2AB")
    data["feeds"]["limit"] = 1
    data["delivery"]["transport"] = "smtp"
    data["delivery"]["smtp"].update(host="127.0.0.1", port=relay_port, security="none", max_attempts=1)
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    content = tree / "content"
    story = content / "mesems-stem-cell-trial-results.md"
    story.write_text(story.read_text(encoding="utf-8").replace("MESEMS", "Harvest"), encoding="utf-8")
    (content / "ms-navigators-are-here-to-help.md").unlink()
    (content / "volunteer-day.md").write_text("---\ntitle: Volunteer day\ndate: [not, a, date\n---\nCome along.\n",
                                              encoding="utf-8")
    for folder in (".state", "public"):
        (tree / folder).mkdir()
        (tree / folder / "mine.txt").write_text(f"the user's own {folder}\n", encoding="utf-8")


def test_the_suite_passes_and_sends_nothing_in_a_working_tree_made_ones_own(tmp_path):
    tree = tmp_path / "checkout"  # a copy: the real working tree is only read
    shutil.copytree(REPO, tree, ignore=NOT_COPIED)
    with socket.socket() as relay:  # the user's relay: every connection to it stays in its backlog
        relay.bind(("127.0.0.1", 0))
        relay.listen(64)
        made_their_own(tree, relay.getsockname()[1])
        before = {folder: snapshot(tree / folder) for folder in ("content", ".state", "public")}
        config_before = (tree / "config.yaml").read_bytes()
        env = {**os.environ, "PIPELINE_CONFIG": str(tree / "config.yaml"), "PYTHONDONTWRITEBYTECODE": "1"}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p",
                                 "no:cacheprovider", "-k", "not postgresql", *REPRESENTATIVE],
                                cwd=tree, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert " passed" in result.stdout and " failed" not in result.stdout
        relay.setblocking(False)
        try:
            connection, peer = relay.accept()
        except BlockingIOError:
            pass  # nobody connected
        else:
            connection.close()
            raise AssertionError(f"a test connected to the relay the working tree configures (from {peer})")
    assert {folder: snapshot(tree / folder) for folder in before} == before
    assert (tree / "config.yaml").read_bytes() == config_before
    assert not (tree / "outbox").exists() and not (tree / "public.versions").exists()
