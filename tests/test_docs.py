"""The docs cannot go stale: the reference is generated from the code, the tutorial is run, every page is linked.

The tutorial's ```sh blocks run in order, each in a fresh bash with ``-e``, in a copy of the shipped project
(the committed tree, never the working tree's config, content or state). An HTML comment on the line before a
block changes how it runs:

- ``<!-- docs-test: skip (why) -->``: not run (cloning, installing from PyPI, servers that run until Ctrl-C);
- ``<!-- docs-test: background (why) -->``: started in the background, and the next block waits until the port
  it listens on (the block's ``127.0.0.1:<port>``) accepts connections; stopped when the tutorial ends.

The tutorial's SMTP port (1025) is replaced by a free one, so the test never meets another server.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import click
import feedparser
import pytest

from pipeline import docgen
from pipeline.cli import cli
from pipeline.config import Config

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TUTORIAL = DOCS / "tutorial.md"
TUTORIAL_SMTP_PORT = "1025"


# -- the generated reference ---------------------------------------------------------------------------------------

def test_the_command_and_config_references_are_what_the_code_generates():
    stale = [str(path.relative_to(REPO)) for path in docgen.stale_pages()]
    assert not stale, f"{', '.join(stale)} differ from the code; regenerate with `{docgen.REGENERATE}` and commit"


COMMANDS = [" ".join(("pipeline", *words)) for words, _ in docgen.walk_commands(cli)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_section_in_the_command_reference(command):
    page = (DOCS / "reference" / "commands.md").read_text(encoding="utf-8")
    assert f"\n## `{command}`\n" in page


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_what_it_does_in_its_help(command):
    words = command.split()[1:]
    found: click.Command = cli
    for word in words:
        found = found.commands[word]  # type: ignore[attr-defined]
    assert (found.help or "").strip(), f"{command}: give the command a docstring; --help and the reference show it"


def test_every_config_setting_has_a_description():
    missing = [setting.key for setting in docgen.walk_settings(Config) if not setting.description]
    assert not missing, ("settings without a description (add Field(description=...) or a docstring on the line "
                         f"under the field in pipeline/config.py): {', '.join(missing)}")


def test_a_setting_without_a_description_is_found(tmp_path):
    # The check above would pass a generator that found no settings at all; it finds each one, and a bare one.
    keys = {setting.key for setting in docgen.walk_settings(Config)}
    assert {"site.base_url", "delivery.smtp.port", "schedule.jobs.<name>.cron", "sources[].url",
            "topics.<name>.tags", "bounces.webhooks.ses.enabled"} <= keys
    assert "root" not in keys and "source_file" not in keys

    from pydantic import BaseModel

    class Bare(BaseModel):
        described: int = 1
        """A docstring under the field counts."""
        bare: int = 2

    assert [(s.key, s.description) for s in docgen.walk_settings(Bare)] == [
        ("described", "A docstring under the field counts."), ("bare", "")]


def test_the_config_reference_gives_type_default_and_bounds():
    page = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    assert ("| `delivery.smtp.concurrency` | integer (≥ 1, ≤ 32) | `2` | Parallel SMTP connections. |"
            in page.splitlines())
    assert "| `site.title` | string | required | The feeds' title and the digest's heading. |" in page.splitlines()


# -- pages and links -----------------------------------------------------------------------------------------------

def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_page_under_docs_is_linked_from_the_index():
    index = DOCS / "index.md"
    linked = {(index.parent / target.split("#")[0]).resolve() for target in _LINK.findall(index.read_text())}
    unlinked = [str(page.relative_to(REPO)) for page in _pages() if page != index and page.resolve() not in linked]
    assert not unlinked, f"add these pages to docs/index.md: {', '.join(unlinked)}"


@pytest.mark.parametrize("page", [REPO / "README.md", REPO / "ARCHITECTURE.md", *_pages()],
                         ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    targets = [t.split("#")[0] for t in _LINK.findall(page.read_text(encoding="utf-8"))
               if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    broken = [t for t in targets if t and not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(REPO)}: broken links: {', '.join(broken)}"


_SCHEMA_NOW = re.compile(r"\bat schema (\d+)")
_SCHEMA_ANY = re.compile(r"\bschema (\d+)\b")


def test_the_schema_the_docs_say_the_database_is_at_is_the_one_it_migrates_to():
    """"The database is at schema N" follows ``SCHEMA_VERSION``; any other "schema N" names a migration that exists."""
    from pipeline.state.schema import MIGRATIONS, SCHEMA_VERSION

    pages = [REPO / "ARCHITECTURE.md", *_pages()]
    said = {str(page.relative_to(REPO)): [int(n) for n in _SCHEMA_NOW.findall(page.read_text(encoding="utf-8"))]
            for page in pages}
    assert said["docs/how-to/desk.md"], "the desk's page says which schema the database is at"
    assert {page: versions for page, versions in said.items() if set(versions) - {SCHEMA_VERSION}} == {}
    named = {(str(page.relative_to(REPO)), int(n)) for page in pages
             for n in _SCHEMA_ANY.findall(page.read_text(encoding="utf-8"))}
    assert {(page, n) for page, n in named if n not in MIGRATIONS} == set()


def test_the_readme_is_a_front_page_not_the_manual():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    assert "docs/index.md" in readme and "docs/tutorial.md" in readme


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = ci[ci.index("# The README's test command, verbatim:") + 1]
    assert command in (REPO / "README.md").read_text(encoding="utf-8")


def test_the_benchmark_table_lives_in_the_benchmarks_reference():
    import bench.table

    page = bench.table.PAGE.read_text(encoding="utf-8")
    assert bench.table.PAGE == DOCS / "reference" / "benchmarks.md"
    table = page.split(bench.table.START, 1)[1].split(bench.table.END, 1)[0]
    assert "| case | pipeline | baseline (same run) | ratio |" in table


# -- commands and settings the docs name --------------------------------------------------------------------------

DOC_PAGES = [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted(DOCS.rglob("*.md"))]
_OPTION = re.compile(r"(?<![\w-])--?[a-zA-Z][-a-zA-Z]*")


def _code(text: str) -> list[str]:
    """The lines of code blocks (without shell comments) and the inline code spans of a page."""
    blocks = [block for _, block in re.findall(r"^( *)```[a-z]*\n(.*?)^\1```", text, re.DOTALL | re.MULTILINE)]
    prose = re.sub(r"^( *)```.*?^\1```", "", text, flags=re.DOTALL | re.MULTILINE)
    return [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()] + re.findall(
        r"`([^`\n]+)`", prose)


def _options(command: click.Command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)} | {"--help", "-h"}


def unknown_commands(text: str) -> list[str]:
    """Each `pipeline ...` the code of a page names that the command line does not have, or an option it lacks."""
    unknown = []
    for line in _code(text):
        for match in re.finditer(r"(?:^|bin/|-m )pipeline((?: -[-a-zA-Z]+(?: [A-Za-z./]+)?)*)((?: [a-z][a-z-]*){1,2})"
                                 r"([^|;&]*)", line):
            words = match.group(2).split()
            command: click.Command | None = cli.commands.get(words[0])
            if isinstance(command, click.Group) and len(words) > 1:
                command = command.commands.get(words[1])
            if command is None:
                unknown.append(f"pipeline {' '.join(words)}")
                continue
            unknown += [f"pipeline {option}" for option in _OPTION.findall(match.group(1)) if option not in _options(cli)]
            unknown += [f"pipeline {' '.join(words)} {option}" for option in _OPTION.findall(match.group(3))
                        if option not in _options(command) | _options(cli)]
    return unknown


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_command_the_docs_name_exists_with_the_options_they_give(page):
    assert unknown_commands(page.read_text(encoding="utf-8")) == []


def test_a_command_or_option_that_does_not_exist_is_found():
    text = ("Run `pipeline send --dry-run --frobnicate`, then `pipeline subscribers purge`.\n\n```sh\n"
            ".venv/bin/pipeline -v publish   # a comment naming pipeline nothing\n```\n")
    assert unknown_commands(text) == ["pipeline publish", "pipeline send --frobnicate", "pipeline subscribers purge"]


def _shipped_text(name: str) -> str:
    """A file as committed (the working tree's copy may be the user's own)."""
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"HEAD:{name}"], capture_output=True, text=True) \
        if shutil.which("git") and (REPO / ".git").exists() else None
    return shown.stdout if shown is not None and shown.returncode == 0 else (REPO / name).read_text(encoding="utf-8")


def _config_examples() -> list[tuple[str, str]]:
    examples = []
    for page in DOC_PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^( *)```yaml\n(.*?)^\1```", text, re.DOTALL | re.MULTILINE):  # also in a list item
            examples.append((f"{page.relative_to(REPO)}:{text[:match.start()].count(chr(10)) + 1}",
                             textwrap.dedent(match.group(2))))
    return examples


def _merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.mark.parametrize(("where", "example"), _config_examples(), ids=[where for where, _ in _config_examples()])
def test_every_config_example_in_the_docs_is_valid_in_the_shipped_config(where, example, tmp_path):
    import yaml

    from pipeline.config import load_config

    changes = yaml.safe_load(example)
    assert isinstance(changes, dict) and set(changes) <= set(Config.model_fields), f"{where}: not config.yaml keys"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_merge(yaml.safe_load(_shipped_text("config.yaml")), changes)), encoding="utf-8")
    load_config(path)  # a ConfigError names the key


def _story_examples() -> list[tuple[str, str]]:
    examples = []
    for page in DOC_PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```markdown\n(---\n.*?)^```", text, re.DOTALL | re.MULTILINE):
            examples.append((f"{page.relative_to(REPO)}:{text[:match.start()].count(chr(10)) + 1}", match.group(1)))
    return examples


@pytest.mark.parametrize(("where", "story"), _story_examples(), ids=[where for where, _ in _story_examples()])
def test_every_story_example_in_the_docs_is_a_valid_content_file(where, story, tmp_path):
    from .conftest import make_project, run_cli

    project = make_project(tmp_path / "site")
    (project / "content" / "example-story.md").write_text(story, encoding="utf-8")
    result = run_cli(project, "validate")
    assert result.returncode == 0, f"{where}: {result.stderr}"


# -- the tutorial --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    line: int
    code: str
    mode: str  # "run", "skip" or "background"


def tutorial_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    mode, start, code = "run", 0, None
    for number, line in enumerate(lines, 1):
        if code is None:
            marker = re.match(r"^<!-- docs-test: (\w+)", line)
            if marker:
                mode = marker.group(1)
                assert mode in ("skip", "background"), f"tutorial.md:{number}: unknown docs-test marker {mode!r}"
            elif line.startswith("```sh"):
                code, start = [], number
            elif line.strip():
                mode = "run"  # a marker applies to the block right after it only
        elif line.startswith("```"):
            blocks.append(Block(start, "\n".join(code), mode))
            mode, code = "run", None
        else:
            code.append(line)
    return blocks


def test_the_tutorial_marks_only_the_blocks_that_cannot_run():
    # Cloning, installing from PyPI, servers that run until Ctrl-C and the desk's password prompt; nothing else
    # may escape the test.  The desk's two (add-user, serve-web) are run as processes by the desk's end-to-end
    # browser test, tests/test_desk_browser.py::test_the_weekly_job_from_sign_in_to_one_recipients_history.
    not_run = [b for b in tutorial_blocks(TUTORIAL.read_text(encoding="utf-8")) if b.mode != "run"]
    for block in not_run:
        assert re.fullmatch(r"(git clone .*\n.*\n)?.*pip install .*|\.venv/bin/pipeline preview|"
                            r"\.venv/bin/python -m aiosmtpd -n -l 127\.0\.0\.1:\d+|"
                            r"\.venv/bin/pipeline desk add-user \S+ --role admin|"
                            r"\.venv/bin/pipeline serve-web --host 127\.0\.0\.1 --port \d+", block.code), block


def _shipped_project(root: Path) -> Path:
    """The project as a new user gets it: the committed tree (without git: the working tree's tracked folders)."""
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True) \
        if shutil.which("git") and (REPO / ".git").exists() else None
    if archive is not None and archive.returncode == 0:
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    else:
        shutil.copytree(REPO, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".state", "public", "outbox", "__pycache__", "*.egg-info"))
    # The suite's installed environment stands in for `python3 -m venv .venv && pip install -e .`.
    if sys.prefix != sys.base_prefix:
        (root / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    else:  # not in a virtual environment: the interpreter and the console script it installed
        (root / ".venv" / "bin").mkdir(parents=True)
        (root / ".venv" / "bin" / "python").symlink_to(sys.executable)
        (root / ".venv" / "bin" / "pipeline").symlink_to(Path(sys.executable).parent / "pipeline")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the background block exited with status {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on 127.0.0.1:{port} after {timeout} s"
            time.sleep(0.05)  # polling a condition in another process


def _shell_environment(home: Path) -> dict[str, str]:
    """A clean shell: nothing of the developer's PIPELINE_* settings, database URL or relay password."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
            "TMPDIR": str(home)}


def test_every_tutorial_block_runs_from_a_fresh_copy_to_a_digest_sent(tmp_path):
    project = _shipped_project(tmp_path / "newsletter-pipeline")
    port = str(_free_port())
    env = _shell_environment(tmp_path)
    background: list[tuple[subprocess.Popen, Path]] = []
    try:
        for block in tutorial_blocks(TUTORIAL.read_text(encoding="utf-8")):
            code = block.code.replace(TUTORIAL_SMTP_PORT, port)
            where = f"docs/tutorial.md:{block.line}"
            if block.mode == "skip":
                continue
            if block.mode == "background":
                log = tmp_path / f"background-{block.line}.log"
                with log.open("wb") as out:
                    # Unbuffered, as in the reader's terminal: what it printed is in the log when it is stopped.
                    process = subprocess.Popen(["bash", "-c", f"exec {code}"], cwd=project,
                                               env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True)
                background.append((process, log))
                _wait_for_port(int(port), process)
                continue
            result = subprocess.run(["bash", "-e", "-c", code], cwd=project, env=env, capture_output=True,
                                    text=True, timeout=180)
            assert result.returncode == 0, (f"{where}: exit {result.returncode}\n$ {code}\n"
                                            f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    finally:
        for process, _ in background:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)

    feed = feedparser.parse((project / "public" / "rss.xml").read_bytes())
    assert not feed.bozo
    assert "Walk MS Returns to 300 Cities in 2027" in [entry.title for entry in feed.entries]
    assert len(feed.entries) == 5

    [sent] = sorted((project / "outbox").glob("*/*.eml"))
    message = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)
    assert message["To"] == "you@example.org"
    assert "Walk MS Returns to 300 Cities in 2027" in message.get_body(("plain",)).get_content()

    # aiosmtpd's debugging handler prints each message it received between two marker lines.
    [(_, sink_log)] = background
    printed = sink_log.read_text(encoding="utf-8", errors="replace")
    [received] = re.findall(r"-+ MESSAGE FOLLOWS -+\n(.*?)\n-+ END MESSAGE -+", printed, re.DOTALL)
    test_copy = email.message_from_string(received, policy=email.policy.default)
    assert test_copy["Subject"].strip() == "[TEST] National MS Society News: Walk MS Returns to 300 Cities in 2027"
    assert test_copy["To"] == "you@example.org"
    assert test_copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
