"""deploy/: every scheduled line runs as written. Each crontab line is run by /bin/sh in a scratch project
(the job real, mail written by the file transport), each systemd unit passes `systemd-analyze verify`,
and the run unit's ExecStart starts each timer's job."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, SECRET, make_project, run_cli

DEPLOY = REPO / "deploy"
SERVER_ROOT = "/srv/newsletter"
PIPELINE_SCRIPT = Path(sys.executable).parent / "pipeline"


def test_global_options_work_after_the_command(project):
    log = project / "after.log"
    result = run_cli(project, "run", "--no-send", "--log-file", str(log), "--log-format", "json", "-v")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(line["level"] == "INFO" for line in lines)


def test_a_global_option_after_the_command_overrides_the_default(project, tmp_path):
    """`--config` after the command is the file used, as if it came first."""
    elsewhere = tmp_path / "missing.yaml"
    result = run_cli(project, "validate", "--config", str(elsewhere))
    assert result.returncode == 1
    assert f"{elsewhere}: no such file" in result.stderr


def _crontab_jobs() -> list[tuple[dict[str, str], str, str]]:
    """(environment, schedule, command) of each job line, with the variables set above it."""
    variables: dict[str, str] = {}
    jobs = []
    for line in (DEPLOY / "crontab").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assignment = re.match(r"^([A-Z_]+)=(.*)$", line)
        if assignment:
            variables[assignment[1]] = assignment[2]
            continue
        fields = line.split(None, 5)
        jobs.append((dict(variables), " ".join(fields[:5]), fields[5]))
    return jobs


@pytest.fixture
def server(tmp_path) -> Path:
    """A scratch copy of the project laid out as deploy/ expects: its venv's script and pipeline.env."""
    root = make_project(tmp_path / "srv" / "newsletter")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "pipeline").symlink_to(PIPELINE_SCRIPT)
    example = (DEPLOY / "pipeline.env.example").read_text()
    (root / "pipeline.env").write_text(re.sub(r"(?m)^PIPELINE_SECRET=.*$", f"PIPELINE_SECRET={SECRET}", example))
    (root / "pipeline.env").chmod(0o600)
    run_cli(root, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    return root


def test_the_crontab_names_only_jobs_the_config_schedules():
    from pipeline.config import load_config

    jobs = set(load_config(REPO / "config.yaml").schedule.jobs)
    named = {re.search(r"--job (\S+)", command)[1] for _env, _when, command in _crontab_jobs()}
    assert named == jobs


@pytest.mark.parametrize("job", _crontab_jobs(), ids=lambda job: re.search(r"--job (\S+)", job[2])[1])
def test_every_crontab_line_runs_as_written(server, job):
    variables, _schedule, command = job
    shell = variables.get("SHELL", "/bin/sh")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(server), **variables}
    done = subprocess.run([shell, "-c", command.replace(SERVER_ROOT, str(server))], env=env, cwd="/",
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "No such option" not in done.stderr
    assert (server / ".state" / "pipeline.log").read_text().strip()  # --log-file after the command was used
    assert not (server / ".state" / "secret").exists()  # the secret came from pipeline.env, exported


def test_the_weekly_crontab_line_sends_the_digest(server):
    (weekly,) = [job for job in _crontab_jobs() if "--job weekly-digest" in job[2]]
    variables, _schedule, command = weekly
    subprocess.run([variables.get("SHELL", "/bin/sh"), "-c", command.replace(SERVER_ROOT, str(server))],
                   env={"PATH": "/usr/bin:/bin", **variables}, check=True, capture_output=True, timeout=180)
    (message,) = (server / "outbox").rglob("*.eml")
    assert b"To: ann@example.org" in message.read_bytes()


def _units() -> list[Path]:
    return sorted(DEPLOY.glob("*.service")) + sorted(DEPLOY.glob("*.timer"))


def _installed_units(tmp_path: Path, server: Path) -> Path:
    folder = tmp_path / "units"
    folder.mkdir()
    for unit in _units():
        text = unit.read_text().replace(f"{SERVER_ROOT}/.venv/bin/pipeline", str(PIPELINE_SCRIPT))
        (folder / unit.name).write_text(text.replace(SERVER_ROOT, str(server)))
    return folder


def _verifiable(folder: Path) -> list[str]:
    """Each unit as systemd would load it: a template through each instance its timers start."""
    names = [path.name for path in sorted(folder.iterdir()) if "@." not in path.name]
    return [str(folder / name) for name in names]


NEEDS_SYSTEMD = pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                                   reason="no systemd-analyze (apt-get install systemd); CI runs this")


@NEEDS_SYSTEMD
def test_every_systemd_unit_passes_systemd_analyze_verify(tmp_path, server):
    folder = _installed_units(tmp_path, server)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *_verifiable(folder)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if str(folder) in line or "newsletter" in line]
    assert ours == []


@NEEDS_SYSTEMD
def test_verify_would_catch_a_command_that_does_not_exist(tmp_path, server):
    """The check above is not vacuous: a unit whose ExecStart names no program fails it."""
    folder = _installed_units(tmp_path, server)
    broken = folder / "newsletter-pipeline.service"
    broken.write_text(re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/nonexistent/pipeline", broken.read_text()))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "/nonexistent/pipeline" in done.stderr


def _exec_start(unit: Path) -> str:
    (line,) = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


@pytest.mark.parametrize("timer", sorted(DEPLOY.glob("newsletter-pipeline-run@*.timer")), ids=lambda p: p.name)
def test_each_timer_starts_a_job_the_run_unit_runs(tmp_path, server, timer):
    instance = timer.name.removeprefix("newsletter-pipeline-run@").removesuffix(".timer")
    folder = _installed_units(tmp_path, server)
    command = shlex.split(_exec_start(folder / "newsletter-pipeline-run@.service").replace("%i", instance))
    env = {"PATH": "/usr/bin:/bin", "PIPELINE_SECRET": SECRET}
    done = subprocess.run(command, cwd=server, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("unit", ["newsletter-pipeline.service", "newsletter-pipeline-bounces.service"])
def test_the_long_running_units_name_a_command_the_cli_has(tmp_path, server, unit):
    """The services run until stopped, so their ExecStart is parsed by the CLI (its --help), not run."""
    folder = _installed_units(tmp_path, server)
    command = shlex.split(_exec_start(folder / unit))
    done = subprocess.run([*command, "--help"], cwd=server, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: pipeline {command[-1]}")
