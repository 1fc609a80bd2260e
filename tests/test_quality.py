"""The code stays typed and lint-clean: mypy and ruff run with the settings in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tool(*args: str) -> subprocess.CompletedProcess:
    # A separate process is the point: these are the project's own command-line checks.
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    result = _tool("ruff", "check", "pipeline", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing():
    result = _tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
