"""Shared fixtures: a throw-away project in a temporary folder, made from tests/fixtures/project/
(a frozen copy of the shipped config and the MESEMS content); the templates are the package's, which a
test overrides by name with ``override_template``.

Nothing here reads or writes the working tree's config.yaml, content/, .state/ or public/: a
project made one's own (another organisation, another relay, other stories) runs the same suite,
and the suite cannot send to the relay that project configures (tests/test_isolation.py proves it)."""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]  # the code and its docs; never the project files at its root
FIXTURE_PROJECT = Path(__file__).resolve().parent / "fixtures" / "project"  # config.yaml and content/
# The templates are the program's shipped defaults (code under test, like pipeline/), not project data.


# The seed gives no postal address and no image files; a sendable test project needs both.
TEST_POSTAL_ADDRESS = "Test fixture address, 1 Example Street, Example City, EX 00000"


def write_image(path: Path, width: int, height: int, colour: str = "#4a6d8c") -> Path:
    """A real image file of this size (Pillow), for the image checks and the published copies."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)
    return path


@pytest.fixture(autouse=True)
def _logging_as_before():
    """In-process commands configure logging (level, handlers); each test starts from the same state."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


# Test modules whose tests run on both state backends.  The rest (feeds, content, config, lint,
# digest rendering, the browser, the in-memory engine) never touch the database in a way that
# could differ, so they run once.
BOTH_BACKENDS = {"test_app", "test_archive", "test_crash", "test_delivery", "test_delivery_trust", "test_postgres",
                 "test_greylisting", "test_run", "test_schedule", "test_signup", "test_signup_queue", "test_sources", "test_storage", "test_subscribers",
                 "test_suppression", "test_topics", "test_web", "test_web_unsubscribes"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        names = ["sqlite", "postgresql"] if module in BOTH_BACKENDS else ["sqlite"]
        if module == "test_postgres":
            names = ["postgresql"]
        metafunc.parametrize("backend", names, indirect=True)


@dataclass(frozen=True)
class Backend:
    name: str
    url: str  # the SQLAlchemy URL the test's state lives in


@pytest.fixture(scope="session")
def postgres_cluster():
    from .postgres import Cluster, server_binaries

    binaries = server_binaries()
    if binaries is None:
        message = "no PostgreSQL server binaries (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the PostgreSQL tests")
        pytest.skip(f"{message}; CI runs these")
    cluster = Cluster(binaries).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def backend(request, monkeypatch, tmp_path: Path) -> Backend:
    """The state database of one test: SQLite in the project's state folder, or a fresh PostgreSQL database
    (given to the code, and to any subprocess, through $PIPELINE_DATABASE_URL)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_cluster").new_database()
        monkeypatch.setenv("PIPELINE_DATABASE_URL", url)
        return Backend("postgresql", url)
    monkeypatch.delenv("PIPELINE_DATABASE_URL", raising=False)
    return Backend("sqlite", f"sqlite:///{tmp_path / 'site' / '.state' / 'pipeline.db'}")


@pytest.fixture
def project(tmp_path: Path, backend: Backend) -> Path:
    """A project in a temporary folder (config, templates and content) that a test may change freely."""
    return make_project(tmp_path / "site")


def make_project(root: Path) -> Path:
    """Copy the fixture project (config, content and assets: the wordmark and the story's image) into
    root, adding the one thing the seed lacks and sending requires: a postal address."""
    root.mkdir(parents=True)
    shutil.copy(FIXTURE_PROJECT / "config.yaml", root / "config.yaml")
    shutil.copytree(FIXTURE_PROJECT / "content", root / "content")
    shutil.copytree(FIXTURE_PROJECT / "assets", root / "assets")
    set_config(root, **{"organisation.postal_address": TEST_POSTAL_ADDRESS})
    return root


def override_template(project: Path, name: str) -> Path:
    """The project's own copy of a packaged template (templates/<name>), which then takes precedence."""
    from pipeline.publish.digest import PACKAGE_TEMPLATES

    own = project / "templates" / name
    own.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(PACKAGE_TEMPLATES / name, own)
    return own


@pytest.fixture
def config(project: Path) -> Config:
    return load_config(project / "config.yaml")


# What the pipeline reads from the environment: a developer's shell must not leak into a test.
PIPELINE_ENV = ("PIPELINE_CONFIG", "PIPELINE_DATABASE_URL", "PIPELINE_SECRET", "PIPELINE_SMTP_PASSWORD")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path: Path):
    """No pipeline variable from the developer's shell, and a working directory of the test's own: a
    relative ``config.yaml`` (the command line's default) can never name the working tree's."""
    for name in PIPELINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@dataclass
class CliResult:
    """What an operator sees: the exit status and the two output streams."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


# click < 8.2 mixes stderr into stdout unless told not to; later versions always keep them apart.
_RUNNER_OPTIONS = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}


def run_cli(project: Path, *args: str, check: bool = False, timeout: float = 120,
            env: Mapping[str, str | None] | None = None) -> CliResult:
    """Run the command line in this process as an operator would in a shell at ``project``.

    Same arguments, output, ``Error: ...`` lines and exit status as the console script, without
    starting an interpreter.  ``env`` sets (or, with None, unsets) variables for this command
    only.  The command runs in a worker thread so that a hang fails the test after ``timeout``
    seconds instead of stopping the suite.
    """
    from pipeline.cli import cli

    outcome = []

    def invoke() -> None:
        runner = CliRunner(**_RUNNER_OPTIONS)
        outcome.append(runner.invoke(cli, ["--config", str(project / "config.yaml"), *args], prog_name="pipeline",
                                     env=env))

    previous = os.getcwd()
    os.chdir(project)
    try:
        with logging_restored():
            worker = threading.Thread(target=invoke, name=f"pipeline {' '.join(args)}", daemon=True)
            worker.start()
            worker.join(timeout)
    finally:
        os.chdir(previous)
    if worker.is_alive():
        raise AssertionError(f"pipeline {' '.join(args)} still running after {timeout} s")
    (invoked,) = outcome
    stderr = invoked.stderr
    if invoked.exception is not None and not isinstance(invoked.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*invoked.exc_info))  # as the interpreter would print it
    result = CliResult(args, invoked.exit_code, invoked.stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@contextmanager
def logging_restored() -> Iterator[None]:
    """Undo what the command's logging set-up did to this process: its handlers write to
    streams that are closed once the command returns, and its levels would leak into later tests."""
    from pipeline.logs import QUIET_LIBRARIES

    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in (root.name, *QUIET_LIBRARIES)}
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def write_item(project: Path, slug: str, front_matter: str, body: str = "A body paragraph.\n") -> Path:
    path = project / "content" / f"{slug}.md"
    path.write_text(f"---\n{front_matter.strip()}\n---\n{body}", encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


SECRET = "tS3cr3t-Hq8vZ2pX6mLw9KfR4nYb"


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
                "retry_window": 2, "timeout": 10, **smtp}
    path = set_config(project, **{"delivery.transport": "smtp"}, **{f"delivery.smtp.{k}": v for k, v in settings.items()})
    return load_config(path)


def add_subscribers(config: Config, count: int, prefix: str = "reader") -> list[str]:
    from pipeline.usecases import open_storage

    storage = open_storage(config)
    try:
        addresses = [f"{prefix}{n:05d}@example.org" for n in range(count)]
        storage.merge_subscribers([(address, None, {}) for address in addresses])
        return addresses
    finally:
        storage.close()
