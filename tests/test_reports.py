"""`pipeline status --json` is the typed report, field for field: monitoring reads these keys."""

from __future__ import annotations

import dataclasses
import json

from click.testing import CliRunner

from pipeline import usecases
from pipeline.cli import cli
from pipeline.reports import EditionRow, StatusReport

from .conftest import add_subscribers


def test_status_json_has_exactly_the_typed_reports_fields(project, config, secret):
    add_subscribers(config, 3)
    usecases.run(config, progress=False)
    result = CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), "status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {f.name for f in dataclasses.fields(StatusReport)}
    assert set(report["last_edition"]) == {f.name for f in dataclasses.fields(EditionRow)}
    assert report["last_edition"]["sent"] == 3 and report["subscribers"]["subscribed"] == 3
    assert report["runs"][0]["status"] == "ok" and report["state_permissions"] == []
