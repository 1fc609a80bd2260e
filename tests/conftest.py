"""Shared fixtures: a throw-away copy of the real project (config, templates, the MESEMS content)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the repository's config, templates and content that a test may change freely."""
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(REPO / "config.yaml", root / "config.yaml")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "content", root / "content")
    return root


@pytest.fixture
def config(project: Path) -> Config:
    return load_config(project / "config.yaml")


def run_cli(project: Path, *args: str, check: bool = False, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess, as an operator would."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"), *args],
        cwd=project, capture_output=True, text=True, timeout=timeout, **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def write_item(project: Path, slug: str, front_matter: str, body: str = "A body paragraph.\n") -> Path:
    path = project / "content" / f"{slug}.md"
    path.write_text(f"---\n{front_matter.strip()}\n---\n{body}", encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
