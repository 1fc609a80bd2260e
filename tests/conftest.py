"""Shared fixtures: a throw-away copy of the real project (config, templates, the MESEMS content)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]


# The seed gives no postal address and no image files; a sendable test project needs both.
TEST_POSTAL_ADDRESS = "Test fixture address, 1 Example Street, Example City, EX 00000"


def write_image(path: Path, width: int, height: int, colour: str = "#4a6d8c") -> Path:
    """A real image file of this size (Pillow), for the image checks and the published copies."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the repository's config, templates and content that a test may change freely."""
    return make_project(tmp_path / "site")


def make_project(root: Path) -> Path:
    """Copy config, templates and content into root, adding what the seed lacks and sending requires:
    a postal address, the MESEMS story's image file and a local logo file, each at its declared size."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "config.yaml", root / "config.yaml")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "content", root / "content")
    write_image(root / "content" / "images" / "mesems-trial.jpg", 1200, 630)
    write_image(root / "assets" / "logo.png", 200, 60, "#ffffff")
    set_config(root, **{"organisation.postal_address": TEST_POSTAL_ADDRESS, "site.logo.file": "assets/logo.png"})
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


SECRET = "test-secret-0123456789abcdef"


@pytest.fixture
def secret(monkeypatch) -> str:
    monkeypatch.setenv("PIPELINE_SECRET", SECRET)
    return SECRET


def set_config(project: Path, **changes) -> Path:
    """Change config.yaml keys given as dotted paths, e.g. set_config(p, **{"delivery.transport": "smtp"})."""
    import yaml

    path = project / "config.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def use_smtp(project: Path, port: int, **smtp) -> Config:
    settings = {"host": "127.0.0.1", "port": port, "security": "none", "concurrency": 2, "retry_delay": 0.01,
                "timeout": 10, **smtp}
    path = set_config(project, **{"delivery.transport": "smtp"}, **{f"delivery.smtp.{k}": v for k, v in settings.items()})
    return load_config(path)


def add_subscribers(config: Config, count: int, prefix: str = "reader") -> list[str]:
    from pipeline.build import open_storage

    storage = open_storage(config)
    try:
        addresses = [f"{prefix}{n:05d}@example.org" for n in range(count)]
        storage.merge_subscribers([(address, None, {}) for address in addresses])
        return addresses
    finally:
        storage.close()
