"""The state folder, the secrets and the content folder are guarded: nobody but the pipeline's user
reads the list, weak or patterned secrets are refused, old tokens retire, no link shows an id."""

from __future__ import annotations

import os
import stat
from datetime import date, datetime, timedelta, timezone

import pytest

from pipeline import usecases
from pipeline.environment import previous_secrets, weak_secret
from pipeline.errors import ConfigError, ContentError
from pipeline.mail.signup_tokens import make_preferences_token, read_preferences_token
from pipeline.mail.tokens import LEGACY_TOKENS_UNTIL, b64, make_token, read_token

from .conftest import add_subscribers, run_cli


def _mode(path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_run_makes_the_state_folder_0700_and_every_file_in_it_0600(config, secret):
    add_subscribers(config, 2)
    usecases.run(config, progress=False)
    state = config.path("state")
    files = [path for path in state.rglob("*") if path.is_file()]
    assert {p.name for p in files} >= {"pipeline.db", "pipeline.lock", "outputs.json", "content-cache.sqlite"}
    assert _mode(state) == 0o700
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_a_state_folder_left_readable_is_named_by_status_and_tightened_by_the_next_run(project, config, secret):
    usecases.run(config, progress=False)
    state = config.path("state")
    os.chmod(state, 0o755)
    os.chmod(state / "outputs.json", 0o644)
    result = run_cli(project, "status")
    assert result.returncode == 0
    assert f"{state / 'outputs.json'}: mode 0644, readable by others; it should be 0600" in result.stderr
    assert "State folder: 2 entries readable by others" in result.stdout
    usecases.run(config, progress=False)
    assert _mode(state) == 0o700 and _mode(state / "outputs.json") == 0o600
    assert "State folder: private (folder 0700, files 0600)" in run_cli(project, "status").stdout


@pytest.mark.parametrize(("value", "problem"), [
    ("test-secret-0123456789abcdef", "a visible pattern (the sequence '01234')"),
    ("Zq8!Zq8!Zq8!Zq8!Zq8!Zq8!Zq8!Zq8!", "fewer than 10 different characters"),
    ("k3Jd9QwPzzzzx7LmA2vB", "a visible pattern ('z' repeated)"),
    ("9f86d081884c7d659a2feaa0c55ad0", "about 120 bits of entropy by its length and alphabet, below 128"),
])
def test_a_secret_with_a_pattern_or_under_128_bits_is_refused(value, problem):
    assert problem in weak_secret(value)


def test_random_secrets_of_the_usual_forms_pass():
    assert weak_secret("d21b75aeace81a0f1eded966c35bf5e8") is None  # secrets.token_hex(16): 128 bits
    assert weak_secret("rLvUHYFsjSg76mUtBHrS_UeYZGJeTklbl8LUrtHMnyM") is None  # secrets.token_urlsafe(32)


def test_a_weak_previous_secret_is_refused_like_the_current_one(monkeypatch):
    monkeypatch.setenv("PIPELINE_SECRET_PREVIOUS", "rLvUHYFsjSg76mUtBHrS_UeYZGJeTklbl8LUrtHMnyM,0123456789abcdef")
    with pytest.raises(ConfigError, match=r"\$PIPELINE_SECRET_PREVIOUS holds a secret that is it has a visible "
                                          r"pattern \(the sequence '01234'\)"):
        previous_secrets("PIPELINE_SECRET")


def test_a_link_signed_with_the_previous_secret_still_opens_the_preferences_page():
    old, new = b"rLvUHYFsjSg76mUtBHrS_UeYZGJeTklbl8LUrtHMnyM", b"d21b75aeace81a0f1eded966c35bf5e8"
    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    token = make_preferences_token(old, 4242, now + timedelta(days=365))
    assert read_preferences_token(new, token, now) == (None, "invalid")
    assert read_preferences_token(new, token, now, previous=[old]) == (4242, "")
    assert read_preferences_token(new, token, now + timedelta(days=366), previous=[old]) == (None, "expired")


def test_a_preferences_token_shows_no_subscriber_id():
    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    secret = b"rLvUHYFsjSg76mUtBHrS_UeYZGJeTklbl8LUrtHMnyM"
    first, second = (make_preferences_token(secret, n, now + timedelta(days=365)) for n in (4242, 4243))
    for token in (first, second):
        assert "4242" not in token and "39u" not in token  # the id, in decimal and in base36
    assert first.split(".")[0] == "p1" and first.split(".")[1][:8] != second.split(".")[1][:8]


def test_version_0_1_unsubscribe_tokens_work_until_their_retirement_date_and_not_after():
    import hashlib
    import hmac

    secret, email = b"rLvUHYFsjSg76mUtBHrS_UeYZGJeTklbl8LUrtHMnyM", "jane.doe@example.org"
    signature = hmac.new(secret, b"unsubscribe\x00" + email.encode(), hashlib.sha256).digest()[:18]
    legacy = f"{b64(email.encode())}.{b64(signature)}"
    assert read_token(secret, legacy, today=LEGACY_TOKENS_UNTIL) == email
    assert read_token(secret, legacy, today=LEGACY_TOKENS_UNTIL + timedelta(days=1)) is None
    assert read_token(secret, make_token(secret, email), today=date(2040, 1, 1)) == email  # current ones never retire


def test_a_story_that_is_a_link_out_of_the_content_folder_is_refused(project, config, tmp_path):
    outside = tmp_path / "private-notes.md"
    outside.write_text("---\ntitle: Board minutes\ndate: 2026-12-01T09:00:00Z\n---\nNot for publication.\n")
    (project / "content" / "minutes.md").symlink_to(outside)
    with pytest.raises(ContentError, match=r"content/minutes.md: a symbolic link to .*private-notes.md, outside "
                                           r"content/; refused"):
        usecases.run(config, progress=False)
    assert not (project / "public").exists()


def test_a_link_inside_the_content_folder_is_fine(project, config):
    images = project / "content" / "images"
    images.mkdir(exist_ok=True)
    (images / "alias.md").symlink_to(project / "content" / "mesems-stem-cell-trial-results.md")
    usecases.run(config, progress=False)
    assert (project / "public" / "rss.xml").is_file()
