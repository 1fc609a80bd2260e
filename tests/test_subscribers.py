"""Subscribers from the command line: validated, merged, and never resubscribed by an import."""

from __future__ import annotations

import csv
import io

from .conftest import run_cli


def _import(project, text: str):
    path = project / "list.csv"
    path.write_text(text, encoding="utf-8")
    return run_cli(project, "subscribers", "import", str(path), "--confirmed")


def test_add_normalises_and_lists(project):
    assert run_cli(project, "subscribers", "add", " Jane.Doe@Example.ORG ", "--name", "Jane", "--confirmed", check=True).stdout \
        == "jane.doe@example.org: added\n"
    assert run_cli(project, "subscribers", "list", check=True).stdout == "jane.doe@example.org\tsubscribed\tJane\n"


def test_invalid_address_is_refused(project):
    result = run_cli(project, "subscribers", "add", "not-an-address")
    assert result.returncode == 1 and result.stderr.startswith("Error: 'not-an-address':")


def test_import_merges_duplicates_keeps_columns_and_reports_bad_rows(project):
    result = _import(project, "Email,Name,Chapter\nann@example.org,Ann,Ohio\nANN@example.org,Ann B,\n"
                              "bad-address,Bob,\nzoe@example.org,,Texas\n")
    assert result.returncode == 0, result.stderr
    assert "added 2, updated 0, unchanged 0, kept unsubscribed 0, duplicates 1, invalid 1" in result.stdout
    assert "list.csv:4: 'bad-address'" in result.stderr
    exported = list(csv.DictReader(io.StringIO(run_cli(project, "subscribers", "export", check=True).stdout)))
    assert [(r["email"], r["name"], r["chapter"]) for r in exported] == [("ann@example.org", "Ann", "Ohio"),
                                                                        ("zoe@example.org", "", "Texas")]


def test_import_without_email_column_is_refused(project):
    result = _import(project, "name\nAnn\n")
    assert result.returncode == 1 and "needs an 'email' column" in result.stderr


def test_reimport_does_not_resubscribe_an_unsubscribed_address(project):
    _import(project, "email\nann@example.org\n")
    run_cli(project, "subscribers", "remove", "ann@example.org", check=True)
    result = _import(project, "email\nann@example.org\n")
    assert "kept unsubscribed 1" in result.stdout
    assert run_cli(project, "subscribers", "list", check=True).stdout == "ann@example.org\tunsubscribed\t\n"


def test_reimport_leaves_an_unsubscribed_persons_name_and_columns_as_they_were(project):
    _import(project, "email,name,chapter\nann@example.org,Ann,Ohio\n")
    run_cli(project, "subscribers", "remove", "ann@example.org", check=True)
    result = _import(project, "email,name,chapter\nann@example.org,Ann Other,Texas\n")
    assert "added 0, updated 0, unchanged 0, kept unsubscribed 1" in result.stdout
    exported = list(csv.DictReader(io.StringIO(run_cli(project, "subscribers", "export", check=True).stdout)))
    assert [(r["name"], r["chapter"], r["status"]) for r in exported] == [("Ann", "Ohio", "unsubscribed")]


def test_explicit_add_resubscribes(project):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    run_cli(project, "subscribers", "remove", "ann@example.org", check=True)
    assert run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True).stdout == "ann@example.org: resubscribed\n"


def test_export_to_a_file_round_trips(project, tmp_path):
    _import(project, "email,name\nann@example.org,Ann\n")
    out = tmp_path / "out.csv"
    run_cli(project, "subscribers", "export", "-o", str(out), check=True)
    assert out.read_text().splitlines()[0] == \
        "email,name,status,subscribed_at,unsubscribed_at,topics,confirmed_at,consent_history"
    assert out.read_text().splitlines()[1].startswith("ann@example.org,Ann,subscribed,")


def test_a_local_part_over_64_bytes_is_refused():
    import pytest

    from pipeline.addresses import AddressError, normalise_address

    assert normalise_address("a" * 64 + "@example.org") == "a" * 64 + "@example.org"
    with pytest.raises(AddressError, match="longer than 64 bytes"):
        normalise_address("a" * 65 + "@example.org")


def test_a_huge_csv_field_stops_the_import_with_its_line_and_keeps_the_rows_before(project):
    result = _import(project, "email,notes\nann@example.org,ok\nbob@example.org," + "x" * 200_000 + "\n")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and "list.csv:3: not readable as CSV" in error and "1 added" in error
    assert run_cli(project, "subscribers", "list", check=True).stdout.startswith("ann@example.org\t")


def test_debug_logging_never_shows_subscriber_addresses(project, caplog):
    import logging

    with caplog.at_level(logging.DEBUG):
        run_cli(project, "-vv", "subscribers", "add", "private.person@example.org", check=True)
        run_cli(project, "-vv", "subscribers", "list", check=True)
    assert "private.person" not in caplog.text


def test_importing_the_same_list_again_changes_nothing_and_says_so(project):
    rows = "email,name,chapter\nann@example.org,Ann,Ohio\nzoe@example.org,Zoe,Texas\n"
    _import(project, rows)
    again = _import(project, rows.replace("Zoe,Texas", "Zoe Q,Texas"))
    assert "added 0, updated 1, unchanged 1," in again.stdout


def test_adding_someone_already_subscribed_says_so(project):
    run_cli(project, "subscribers", "add", "jane.doe@example.org", "--name", "Jane", "--confirmed", check=True)
    again = run_cli(project, "subscribers", "add", "jane.doe@example.org", "--confirmed", check=True)
    assert again.stdout.strip() == "jane.doe@example.org: already subscribed"
    renamed = run_cli(project, "subscribers", "add", "jane.doe@example.org", "--name", "Jane D", "--confirmed",
                      check=True)
    assert renamed.stdout.strip() == "jane.doe@example.org: updated"


def test_adding_someone_already_subscribed_without_confirmed_sends_nothing_and_records_nothing(project):
    run_cli(project, "subscribers", "add", "jane.doe@example.org", "--confirmed", check=True)
    history = run_cli(project, "subscribers", "show", "jane.doe@example.org", check=True).stdout
    for flags in ([], ["--confirmed"]):
        again = run_cli(project, "subscribers", "add", "jane.doe@example.org", *flags, check=True)
        assert again.stdout.strip() == "jane.doe@example.org: already subscribed"
    assert run_cli(project, "subscribers", "show", "jane.doe@example.org", check=True).stdout == history
    assert not (project / "outbox" / "signup").exists()
