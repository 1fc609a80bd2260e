"""The editor's desk over HTTP (Flask's WSGI test client on the real app and the real state database):
accounts, sessions, the attacks it refuses, stories as content files, the digest, sending and the audit log."""

from __future__ import annotations

import io
import os
import re
import threading
from datetime import timedelta

import feedparser
import pytest

from pipeline import usecases
from pipeline.desk.accounts import add_user
from pipeline.desk.sending import start_send
from pipeline.environment import database_url
from pipeline.sources import read_content
from pipeline.sources.local import read_item
from pipeline.state.desk import DeskStore
from pipeline.state.lock import run_lock

from .conftest import add_subscribers, run_cli, set_config, write_image, write_item
from .desk_helpers import ADMIN, EDITOR, PASSWORD, csrf_token, desk_site

STORY = {"slug": "a-new-wheelchair-clinic", "title": "A new wheelchair clinic opens",
         "date": "2025-01-06T09:00:00-05:00", "summary": "Fittings and repairs, free for members.",
         "tags": "programs and services, living with ms", "image_alt": "", "author": "", "citation": "",
         "source_name": "", "source_url": "", "body": "The clinic opens on **Monday**.\n", "status": "published",
         "save": "Save"}


def image_bytes(tmp_path, width=800, height=420) -> bytes:
    return write_image(tmp_path / "photo.jpg", width, height).read_bytes()


@pytest.fixture
def site(project, secret):
    yield from desk_site(project)


# -- people and sessions ------------------------------------------------------------------------------

def test_every_desk_page_sends_a_visitor_without_a_session_to_sign_in(site):
    visitor = site.visitor()
    for path in ("/desk/", "/desk/stories", "/desk/stories/new", "/desk/digest", "/desk/send", "/desk/editions",
                 "/desk/subscribers", "/desk/health", "/desk/audit"):
        response = visitor.get(path)
        assert (response.status_code, response.headers["Location"]) == (302, f"/desk/login?next={path}"), path


def test_a_post_without_a_session_changes_nothing(site):
    response = site.visitor().post("/desk/stories/new", STORY, token_from="/desk/login")
    assert response.status_code == 302 and response.headers["Location"].startswith("/desk/login")
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()


def test_the_session_cookie_is_secure_httponly_and_samesite_strict(site):
    response = site.visitor().sign_in(ADMIN)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("desk_session=")
    assert {"Secure", "HttpOnly", "SameSite=Strict", "Path=/desk"} <= {part.strip() for part in cookie.split(";")}


def test_signing_in_gives_a_new_session_token(site):
    visitor = site.visitor()
    visitor.get("/desk/login")
    before = visitor.cookie
    visitor.sign_in(ADMIN)
    assert visitor.cookie not in (None, before)


def test_a_session_unused_for_the_idle_time_is_signed_out(site):
    visitor = site.signed_in(EDITOR)
    site.clock.advance(minutes=site.config.desk.idle_minutes - 1)
    assert visitor.get("/desk/stories").status_code == 200
    site.clock.advance(minutes=site.config.desk.idle_minutes + 1)
    response = visitor.get("/desk/stories")
    assert response.status_code == 302
    assert "Your session ended" in visitor.get(response.headers["Location"]).text


def test_a_session_ends_at_its_absolute_expiry_even_when_in_use(site):
    visitor = site.signed_in(EDITOR)
    started, step = site.clock.now, timedelta(minutes=20)
    while site.clock.now + step - started <= timedelta(hours=site.config.desk.absolute_hours):
        site.clock.advance(minutes=20)
        assert visitor.get("/desk/stories").status_code == 200
    site.clock.advance(minutes=20)
    assert visitor.get("/desk/stories").status_code == 302


def test_signing_out_everywhere_ends_the_sessions_on_other_browsers(site):
    laptop, phone = site.signed_in(EDITOR), site.signed_in(EDITOR)
    assert phone.post("/desk/logout-everywhere", token_from="/desk/").status_code == 302
    assert laptop.get("/desk/stories").status_code == 302


def test_a_made_up_session_cookie_is_refused(site):
    visitor = site.visitor()
    visitor.client.set_cookie("desk_session", "x" * 43, domain="desk.example.org", path="/desk")
    assert visitor.get("/desk/stories").status_code == 302


def test_add_user_stores_an_argon2id_hash_not_the_password(site):
    user = DeskStore(site.storage).user(email=ADMIN)
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash


def test_desk_add_user_with_link_prints_a_one_time_set_password_link(site):
    result = run_cli(site.project, "desk", "add-user", "New.Person@Example.org", "--role", "editor", "--link",
                     check=True)
    token = re.search(r"/desk/set-password\?token=(\S+)", result.stdout).group(1)
    visitor, page = site.visitor(), f"/desk/set-password?token={token}"
    assert visitor.post(page, {"token": token, "password": "my own long password"}, token_from=page).status_code == 302
    assert visitor.sign_in("new.person@example.org", "my own long password").headers["Location"] == "/desk/"
    again = visitor.post(page, {"token": token, "password": "another long password"}, token_from=page)
    assert "expired or was used already" in again.text


def test_a_wrong_password_is_refused_with_one_message_for_both_fields(site):
    response = site.visitor().sign_in(EDITOR, "not the password at all")
    assert response.status_code == 401
    assert "do not match an account" in response.text
    assert site.visitor().sign_in("nobody@example.org").status_code == 401


# -- attacks ------------------------------------------------------------------------------------------

def test_a_post_without_a_csrf_token_is_refused(site):
    visitor = site.signed_in(EDITOR)
    response = visitor.post("/desk/stories/new", STORY)
    assert response.status_code == 400 and "The form was refused" in response.text
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()


def test_a_csrf_token_from_another_users_session_is_refused(site):
    editor, admin = site.signed_in(EDITOR), site.signed_in(ADMIN)
    stolen = csrf_token(admin.get("/desk/stories/new").text)
    response = editor.post("/desk/stories/new", {**STORY, "csrf_token": stolen})
    assert response.status_code == 400
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()


def test_a_csrf_token_replayed_after_signing_out_is_refused(site):
    visitor = site.signed_in(EDITOR)
    old = csrf_token(visitor.get("/desk/stories/new").text)
    visitor.post("/desk/logout", token_from="/desk/")
    visitor.sign_in(EDITOR)
    response = visitor.post("/desk/stories/new", {**STORY, "csrf_token": old})
    assert response.status_code == 400
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()


def test_a_cross_site_post_is_refused_even_with_a_valid_token(site):
    visitor = site.signed_in(EDITOR)
    response = visitor.post("/desk/stories/new", STORY, token_from="/desk/stories/new",
                            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403 and "another site" in response.text
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()


def test_repeated_wrong_passwords_lock_the_account_even_for_the_right_one(site):
    attacker = site.visitor()
    for _ in range(site.config.desk.account_attempts):
        attacker.sign_in(EDITOR, "guess-guess-guess")
    response = site.visitor().sign_in(EDITOR)  # the real person, from anywhere
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.text
    site.clock.advance(minutes=site.config.desk.lockout_minutes + 1)
    assert site.visitor().sign_in(EDITOR).status_code == 302


def test_one_address_guessing_many_accounts_is_locked_out(site):
    attacker = site.visitor()
    for n in range(site.config.desk.address_attempts):
        attacker.sign_in(f"guess{n}@example.org", "guess-guess-guess")
    assert attacker.sign_in(ADMIN).status_code == 429


def test_an_editor_cannot_send_the_edition_and_the_attempt_is_audited(site):
    editor = site.signed_in(EDITOR)
    response = editor.post("/desk/send", {"recipients": "1", "edition": "x", "confirm": "y"},
                           token_from="/desk/stories/new")
    assert response.status_code == 403 and "Only an admin" in response.text
    entry = DeskStore(site.storage).audit_log()[0]
    assert (entry.who, entry.action) == (EDITOR, "refused")


def test_an_upload_that_is_not_an_image_is_refused_next_to_the_image_field(site):
    editor = site.signed_in(EDITOR)
    fake = (io.BytesIO(b"%PDF-1.4 not a picture"), "photo.jpg", "image/jpeg")
    response = editor.post("/desk/stories/new", {**STORY, "image": fake, "image_alt": "A clinic"},
                           token_from="/desk/stories/new", content_type="multipart/form-data")
    assert response.status_code == 400
    assert re.search(r'id="image-error">photo.jpg: not an image', response.text)
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()


def test_a_50_mb_upload_is_refused(site):
    editor = site.signed_in(EDITOR)
    huge = (io.BytesIO(b"\xff\xd8" + b"\0" * (50 * 1024 * 1024)), "huge.jpg", "image/jpeg")
    response = editor.post("/desk/stories/new", {**STORY, "image": huge, "image_alt": "A clinic"},
                           token_from="/desk/stories/new", content_type="multipart/form-data")
    assert response.status_code == 413 and "The upload is too large" in response.text
    assert not list((site.project / "content").glob("images/a-new-wheelchair-clinic*"))


def noisy_png(tmp_path, side: int = 580) -> bytes:
    """A real photo-like PNG (noise does not compress): 580 pixels square is just over 1,000,000 bytes."""
    from PIL import Image

    path = tmp_path / "noisy.png"
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path)
    return path.read_bytes()


def test_an_enclosure_over_the_per_file_limit_is_refused_next_to_its_field(site):
    editor = site.signed_in(EDITOR)
    audio = (io.BytesIO(b"ID3" + b"\0" * 1_019_997), "clinic-tour.mp3", "audio/mpeg")  # 1,020,000 bytes
    response = editor.post("/desk/stories/new", {**STORY, "enclosure": audio}, token_from="/desk/stories/new",
                           content_type="multipart/form-data")
    assert response.status_code == 400
    assert re.search(r'id="enclosure-error">clinic-tour.mp3: 1,020,000 bytes is over the limit of 1,000,000 bytes '
                     "per file", response.text)
    assert not (site.project / "content" / "files").exists()
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()


def test_an_image_over_the_per_file_limit_is_refused_next_to_its_field(site, tmp_path):
    editor = site.signed_in(EDITOR)
    photo = noisy_png(tmp_path)
    assert len(photo) > site.config.desk.max_upload_bytes
    response = editor.post("/desk/stories/new", {**STORY, "image": (io.BytesIO(photo), "waiting-room.png", "image/png"),
                                                 "image_alt": "The waiting room"},
                           token_from="/desk/stories/new", content_type="multipart/form-data")
    assert response.status_code == 400
    assert re.search(rf'id="image-error">waiting-room.png: {len(photo):,} bytes is over the limit', response.text)
    assert not list((site.project / "content" / "images").glob("a-new-wheelchair-clinic*"))


def test_a_story_refused_for_its_date_leaves_no_uploaded_image_behind(site, tmp_path):
    editor = site.signed_in(EDITOR)
    photo = (io.BytesIO(image_bytes(tmp_path)), "clinic.jpg", "image/jpeg")
    response = editor.post("/desk/stories/new", {**STORY, "date": "2030-01-06", "image": photo,
                                                 "image_alt": "The clinic's front door"},
                           token_from="/desk/stories/new", content_type="multipart/form-data")
    assert response.status_code == 400 and 'id="date-error">' in response.text
    assert not list((site.project / "content" / "images").glob("a-new-wheelchair-clinic*"))


def test_an_image_is_not_kept_when_the_enclosure_beside_it_is_refused(site, tmp_path):
    editor = site.signed_in(EDITOR)
    photo = (io.BytesIO(image_bytes(tmp_path)), "clinic.jpg", "image/jpeg")
    audio = (io.BytesIO(b"\0" * 1_000_001), "tour.mp3", "audio/mpeg")
    response = editor.post("/desk/stories/new", {**STORY, "image": photo, "image_alt": "The clinic's front door",
                                                 "enclosure": audio},
                           token_from="/desk/stories/new", content_type="multipart/form-data")
    assert 'id="enclosure-error">tour.mp3: 1,000,001 bytes' in response.text and 'id="image-error"' not in response.text
    assert not list((site.project / "content" / "images").glob("a-new-wheelchair-clinic*"))


# -- stories -------------------------------------------------------------------------------------------

def test_a_story_written_on_the_desk_is_a_content_file_the_pipeline_reads(site, tmp_path):
    editor = site.signed_in(EDITOR)
    photo = (io.BytesIO(image_bytes(tmp_path)), "Clinic Photo.JPG", "image/jpeg")
    response = editor.post("/desk/stories/new", {**STORY, "image": photo, "image_alt": "The clinic's front door"},
                           token_from="/desk/stories/new", content_type="multipart/form-data")
    assert response.headers["Location"] == "/desk/stories/a-new-wheelchair-clinic"
    path = site.project / "content" / "a-new-wheelchair-clinic.md"
    item = read_item(path, site.config)
    assert (item.title, item.tags) == ("A new wheelchair clinic opens", ("programs and services", "living with ms"))
    assert item.image.url == site.config.site.url("images/a-new-wheelchair-clinic-clinic-photo.jpg")
    assert (item.image.width, item.image.height, item.image.alt) == (800, 420, "The clinic's front door")
    assert "<strong>Monday</strong>" in item.content_html


def test_a_published_story_is_in_the_feeds_at_once(site):
    editor = site.signed_in(EDITOR)
    editor.post("/desk/stories/new", STORY, token_from="/desk/stories/new")
    feed = feedparser.parse((site.config.path("output") / "rss.xml").read_bytes())
    assert feed.entries[0].title == "A new wheelchair clinic opens"


def test_a_story_saved_during_a_run_is_in_the_feeds_as_soon_as_the_run_ends(site):
    """A send holds the run lock for hours; the story is published when it ends, not at the next cron run."""
    editor = site.signed_in(EDITOR)
    with run_lock(site.config.path("state"), database_url=database_url()):  # a run in progress
        response = editor.post("/desk/stories/new", STORY, token_from="/desk/stories/new", follow_redirects=True)
        assert "the feeds will carry the story as soon as it ends" in response.text
        (waiting,) = [thread for thread in threading.enumerate() if thread.name == "publish-after-run"]
        assert usecases.publish_after_current_run(site.config) is waiting  # one waits per state folder
        assert not (site.config.path("output") / "rss.xml").exists()  # nothing published while it holds the lock
    waiting.join(timeout=120)
    assert not waiting.is_alive()
    feed = feedparser.parse((site.config.path("output") / "rss.xml").read_bytes())
    assert feed.entries[0].title == "A new wheelchair clinic opens"


def test_a_story_saved_while_the_waiting_publish_runs_is_published_by_one_more_run(site, monkeypatch):
    from pipeline.usecases import runs

    real_run, calls = runs.run, []

    def run(config, **options):  # the waiting publish, which reads the content before this second save
        outcome = real_run(config, **options)
        calls.append(options["action"])
        if len(calls) == 1:
            write_item(site.project, "second-save", 'title: "Saved during the publish"\ndate: 2025-02-01T09:00:00Z')
            assert usecases.publish_after_current_run(site.config) is waiting
        return outcome

    monkeypatch.setattr(runs, "run", run)
    with run_lock(site.config.path("state"), database_url=database_url()):
        waiting = usecases.publish_after_current_run(site.config)
    waiting.join(timeout=120)
    assert calls == ["feeds", "feeds"] and not waiting.is_alive()
    assert feedparser.parse((site.config.path("output") / "rss.xml").read_bytes()).entries[0].title == \
        "Saved during the publish"


def test_a_draft_reaches_no_feed_or_digest(site):
    editor = site.signed_in(EDITOR)
    editor.post("/desk/stories/new", {**STORY, "status": "draft"}, token_from="/desk/stories/new")
    assert (site.project / "content" / "drafts" / "a-new-wheelchair-clinic.md").is_file()
    assert "a-new-wheelchair-clinic" not in {item.slug for item in read_content(site.config)}
    assert "status-draft" in editor.get("/desk/stories").text


def test_publishing_a_draft_moves_its_file_into_content(site):
    editor = site.signed_in(EDITOR)
    editor.post("/desk/stories/new", {**STORY, "status": "draft"}, token_from="/desk/stories/new")
    page = "/desk/stories/a-new-wheelchair-clinic"
    editor.post(page, {**STORY, "slug": "", "status": "published"}, token_from=page)
    assert (site.project / "content" / "a-new-wheelchair-clinic.md").is_file()
    assert not (site.project / "content" / "drafts" / "a-new-wheelchair-clinic.md").exists()


def test_a_bad_date_shows_the_message_of_pipeline_validate_next_to_the_date(site):
    editor = site.signed_in(EDITOR)
    response = editor.post("/desk/stories/new", {**STORY, "date": "2025-01-06"}, token_from="/desk/stories/new")
    shown = re.search(r'<p class="error" id="date-error">([^<]+)</p>', response.text).group(1).strip()
    write_item(site.project, "a-new-wheelchair-clinic", 'title: "A new wheelchair clinic opens"\ndate: "2025-01-06"')
    validate = run_cli(site.project, "validate")
    assert shown.replace("&#39;", "'") in validate.stderr
    assert shown.startswith("content/a-new-wheelchair-clinic.md:3: date: needs a time and a timezone")


def test_an_image_without_alt_text_is_refused_next_to_the_alt_field(site, tmp_path):
    editor = site.signed_in(EDITOR)
    photo = (io.BytesIO(image_bytes(tmp_path)), "clinic.jpg", "image/jpeg")
    response = editor.post("/desk/stories/new", {**STORY, "image": photo}, token_from="/desk/stories/new",
                           content_type="multipart/form-data")
    assert 'id="image_alt-error">image.alt: describe the image' in response.text


def test_a_file_edited_by_hand_shows_on_the_desk_at_once(site):
    editor = site.signed_in(EDITOR)
    write_item(site.project, "written-by-hand", 'title: "Written in a text editor"\ndate: 2025-02-01T09:00:00+00:00')
    assert "Written in a text editor" in editor.get("/desk/stories").text
    assert "Written in a text editor" in editor.get("/desk/stories/written-by-hand").text


def test_the_preview_button_shows_the_story_as_readers_will_without_saving(site):
    editor = site.signed_in(EDITOR)
    response = editor.post("/desk/stories/new", {**STORY, "save": "", "preview": "Preview"},
                           token_from="/desk/stories/new")
    assert "The clinic opens on <strong>Monday</strong>." in response.text
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()


# -- the digest, sending, editions, the audit log ------------------------------------------------------

def test_the_digest_page_shows_the_subject_the_text_part_and_the_checks(site):
    page = site.signed_in(EDITOR).get("/desk/digest").text
    assert 'id="subject">National MS Society News: International Mesenchymal Stem Cell Trial' in page
    assert 'class="text-part"' in page and "MS Navigators Are Here to Help" in page
    assert "No problems found." in page


def test_the_dark_preview_applies_the_digests_dark_mode_rules(site):
    editor = site.signed_in(EDITOR)
    light, dark = editor.get("/desk/digest/render").text, editor.get("/desk/digest/render?scheme=dark").text
    assert "@media (prefers-color-scheme: dark)" in light and "@media (prefers-color-scheme: dark)" not in dark
    assert editor.get("/desk/digest/render").headers["X-Frame-Options"] == "SAMEORIGIN"


def test_the_send_page_shows_the_recipients_and_the_postal_address_gate(site):
    add_subscribers(site.config, 3)
    set_config(site.project, **{"organisation.postal_address": None})
    admin = site.reloaded().signed_in(ADMIN)
    page = admin.get("/desk/send").text
    assert 'id="recipient-count">3<' in page
    assert "Sending is blocked until this is fixed" in page and "organisation.postal_address" in page
    assert 'value="Send the edition"' not in page


INSECURE_PHOTO = ('title: "A clinic photo over plain http"\ndate: 2025-01-07T09:00:00+00:00\n'
                  'image: {url: "http://insecure.example.com/pic.png", alt: "The clinic", width: 600, height: 400}')


def test_the_send_page_lists_the_checks_that_stop_the_send_and_offers_no_send_button(site):
    add_subscribers(site.config, 3)
    write_item(site.project, "insecure-photo", INSECURE_PHOTO)
    page = site.signed_in(ADMIN).get("/desk/send").text
    findings = re.findall(r"<li><strong>([\w-]+)</strong>:(.*?)</li>", page, re.S)
    ((rule, text),) = findings
    assert rule == "img-insecure" and "http://insecure.example.com/pic.png" in text
    assert '<a href="/desk/stories/insecure-photo">Fix it in “A clinic photo over plain http”</a>' in text
    assert 'value="Send the edition"' not in page and 'value="Schedule the edition"' not in page


def test_a_send_that_the_checks_stop_is_audited_as_stopped_not_sent(site):
    add_subscribers(site.config, 3)
    write_item(site.project, "insecure-photo", INSECURE_PHOTO)
    job = start_send(_desk_ext(site), "the-edition", ADMIN)  # e.g. a scheduled send, past the send page
    assert job.done.wait(60)
    entry = DeskStore(site.storage).audit_log()[0]
    assert (entry.who, entry.action) == (ADMIN, "send stopped")
    assert entry.detail.startswith("edition the-edition: the digest fails 1 pre-send check(s)")
    assert "img-insecure: image source 'http://insecure.example.com/pic.png' is not https" in entry.detail
    assert "edition sent" not in [e.action for e in DeskStore(site.storage).audit_log()]


def test_an_admin_sends_the_edition_and_the_ledger_shows_it(site):
    add_subscribers(site.config, 3)
    admin = site.signed_in(ADMIN)
    form = admin.get("/desk/send").text
    assert 'id="recipient-count">3<' in form
    data = {"recipients": "3", "edition": re.search(r'name="edition" type="hidden" value="(\w+)"', form).group(1),
            "confirm": "y", "csrf_token": csrf_token(form)}
    response = admin.post("/desk/send", data)
    edition_id = data["edition"]
    assert response.headers["Location"] == f"/desk/progress/{edition_id}"
    _job(site, edition_id).done.wait(60)
    assert site.storage.ledger_counts(edition_id)["sent"] == 3
    assert re.search(r'data-status="sent">3<', admin.get(f"/desk/progress/{edition_id}").text)


def test_a_send_from_the_desk_is_audited_when_pressed_and_as_sent_once_it_went(site):
    add_subscribers(site.config, 3)
    admin = site.signed_in(ADMIN)
    form = admin.get("/desk/send").text
    edition_id = re.search(r'name="edition" type="hidden" value="(\w+)"', form).group(1)
    admin.post("/desk/send", {"recipients": "3", "edition": edition_id, "confirm": "y",
                              "csrf_token": csrf_token(form)})
    assert _job(site, edition_id).done.wait(60)
    sent, pressed = DeskStore(site.storage).audit_log()[:2]
    assert (pressed.who, pressed.action, pressed.detail) == (ADMIN, "send started", f"edition {edition_id}")
    assert (sent.who, sent.action, sent.detail) == (ADMIN, "edition sent",
                                                    f"edition {edition_id}: sent 3, failed 0, deferred 0")


def test_while_a_send_runs_the_progress_page_offers_a_refresh_link_and_never_refreshes_itself(site):
    from pipeline.desk.context import SendJob

    _desk_ext(site)["jobs"]["e1"] = SendJob("e1", ADMIN, site.clock.now)  # started, its run not yet done
    page = site.signed_in(EDITOR).get("/desk/progress/e1").text
    assert 'http-equiv="refresh"' not in page
    assert re.search(r'<p id="state" role="status">Sending… 0 sent, 0 deferred, 0 failed.</p>', page)
    assert '<a class="button" href="/desk/progress/e1">Refresh</a>' in page


def test_the_progress_pages_script_polls_the_same_counts_as_json(site):
    from pipeline.desk.context import SendJob

    job = _desk_ext(site)["jobs"]["e1"] = SendJob("e1", ADMIN, site.clock.now)
    editor = site.signed_in(EDITOR)
    assert editor.get("/desk/progress/e1/counts.json").json == {
        "running": True, "message": "Sending… 0 sent, 0 deferred, 0 failed.",
        "counts": {"pending": 0, "sending": 0, "sent": 0, "failed": 0, "deferred": 0, "skipped": 0}}
    job.done.set()
    assert editor.get("/desk/progress/e1/counts.json").json["running"] is False


def _job(site, edition_id):
    (desk_app,) = site.app.mounts.values()
    return desk_app.extensions["desk"]["jobs"][edition_id]


def test_one_recipients_delivery_is_found_on_the_editions_page(site):
    add_subscribers(site.config, 2)
    run_cli(site.project, "send", check=True)  # the file transport: each message an .eml in the outbox
    (edition,) = site.storage.list_editions()
    page = site.signed_in(EDITOR).get(f"/desk/editions/{edition.id}?q=reader00001@example.org").text
    assert re.search(r'<table id="recipient">.*<td>sent</td><td>1</td>', page, re.S)
    assert re.search(r'data-status="sent">2<', page)


def test_every_action_is_in_the_audit_log_with_who_and_what(site):
    editor = site.signed_in(EDITOR)
    editor.post("/desk/stories/new", STORY, token_from="/desk/stories/new")
    log = editor.get("/desk/audit").text
    assert re.search(rf"<td>{re.escape(EDITOR)}</td><td>[^<]*</td><td>story saved</td>"
                     r"<td>content/a-new-wheelchair-clinic.md \(published\)</td>", log)
    assert re.search(rf"<td>{re.escape(EDITOR)}</td><td>[^<]*</td><td>signed in</td>", log)


def test_the_health_page_lists_the_last_runs_and_the_next_jobs(site):
    run_cli(site.project, "run", "--no-send", check=True)
    page = site.signed_in(EDITOR).get("/desk/health").text
    assert "<td>manual</td>" in page and "<td>weekly-digest</td><td>run</td>" in page


def test_a_changed_role_ends_the_persons_sessions(site):
    visitor = site.signed_in(EDITOR)
    add_user(site.storage, EDITOR, "admin", PASSWORD)
    assert visitor.get("/desk/").status_code == 302


# -- subscribers --------------------------------------------------------------------------------------

def _suppress(site, email: str) -> None:
    from pipeline.bounces.policy import record_bounce

    record_bounce(site.storage, site.config.bounces.policy, email, "hard", "550 5.1.1 no such user", "mailbox")


def test_searching_finds_subscribers_by_address_and_links_to_their_record(site):
    add_subscribers(site.config, 3)
    page = site.signed_in(EDITOR).get("/desk/subscribers?q=reader00002").text
    assert re.findall(r'<a href="/desk/subscribers/one\?email=([^"]+)">', page) == ["reader00002@example.org"]


def test_a_subscribers_record_shows_their_consent_history_and_suppression(site):
    add_subscribers(site.config, 1)
    _suppress(site, "reader00000@example.org")
    page = site.signed_in(EDITOR).get("/desk/subscribers/one?email=reader00000@example.org").text
    assert re.search(r'id="suppression">yes: hard', page)
    assert "hard (mailbox): 550 5.1.1 no such user" in page


def test_an_admin_adds_a_confirmed_subscriber_with_the_stated_reason_in_the_consent_record(site):
    admin = site.signed_in(ADMIN)
    response = admin.post("/desk/subscribers/add", {"email": "Jane@Example.org", "name": "Jane", "confirmed": "y",
                                                    "reason": "signed the paper form at the spring walk"},
                          token_from="/desk/subscribers/add")
    assert response.headers["Location"] == "/desk/subscribers/one?email=jane@example.org"
    profile = site.storage.profile(email="jane@example.org")
    (event,) = site.storage.consent_histories([profile.id])[profile.id]
    assert profile.status == "subscribed"
    assert event.detail["confirmed_by"] == "desk: signed the paper form at the spring walk"


def test_adding_a_confirmed_subscriber_without_a_reason_is_refused_next_to_the_reason(site):
    response = site.signed_in(ADMIN).post("/desk/subscribers/add", {"email": "jane@example.org", "confirmed": "y"},
                                          token_from="/desk/subscribers/add")
    assert 'id="reason-error">Say how they agreed' in response.text
    assert site.storage.profile(email="jane@example.org") is None


def test_an_editor_cannot_change_subscribers(site):
    add_subscribers(site.config, 1)
    editor = site.signed_in(EDITOR)
    response = editor.post("/desk/subscribers/unsubscribe", {"email": "reader00000@example.org"},
                           token_from="/desk/stories/new")
    assert response.status_code == 403
    assert site.storage.get_subscriber("reader00000@example.org").status == "subscribed"


def test_an_admin_unsubscribes_a_subscriber_and_it_is_in_their_consent_history(site):
    add_subscribers(site.config, 1)
    admin = site.signed_in(ADMIN)
    admin.post("/desk/subscribers/unsubscribe", {"email": "reader00000@example.org"},
               token_from="/desk/subscribers/one?email=reader00000@example.org")
    profile = site.storage.profile(email="reader00000@example.org")
    assert profile.status == "unsubscribed"
    assert [(e.action, e.method, e.detail) for e in site.storage.consent_histories([profile.id])[profile.id]] == \
        [("unsubscribe", "desk", {"by": f"desk user {ADMIN}"})]


def test_an_admin_lifts_a_suppression_and_the_reason_is_kept(site):
    add_subscribers(site.config, 1)
    _suppress(site, "reader00000@example.org")
    admin = site.signed_in(ADMIN)
    admin.post("/desk/subscribers/lift", {"email": "reader00000@example.org", "reason": "new mailbox, she called"},
               token_from="/desk/subscribers/one?email=reader00000@example.org")
    subscriber = site.storage.get_subscriber("reader00000@example.org")
    _events, (held,) = site.storage.bounce_history(subscriber.id)
    assert held.lifted_at is not None and held.lifted_reason == "new mailbox, she called"


def test_a_suppression_lifted_on_the_desk_during_a_send_is_not_put_back_by_the_send(site):
    from pipeline.state.storage import FAILED, Outcome, StoredDigest
    from pipeline.usecases import record_send_refusals

    add_subscribers(site.config, 1)
    email = "reader00000@example.org"
    site.storage.create_edition("e" * 16, ["urn:mesems:walk"], StoredDigest("MESEMS news", "<p>h</p>", "t"))
    (claim,) = site.storage.claim("e" * 16, 10, "sender")
    site.storage.record_results([Outcome(claim, FAILED, "550 5.1.1 User unknown", 1)])  # the send goes on
    _suppress(site, email)
    (refused,) = site.storage.unrecorded_send_failures("e" * 16)
    site.clock.now = refused.at + timedelta(minutes=2)  # the admin lifts it two minutes after the refusal
    site.signed_in(ADMIN).post("/desk/subscribers/lift", {"email": email, "reason": "new mailbox, she called"},
                               token_from=f"/desk/subscribers/one?email={email}")
    record_send_refusals(site.config, site.storage, "e" * 16)  # the send ends
    assert site.storage.active_suppression(site.storage.get_subscriber(email).id) is None


IMPORT = ("email,name\nnew.one@example.org,New One\nreader00000@example.org,Reader Zero\nnot an address,Nobody\n"
          "reader00001@example.org,Suppressed\n")


def test_a_csv_import_is_shown_before_anything_is_written(site):
    add_subscribers(site.config, 2)
    _suppress(site, "reader00001@example.org")
    admin = site.signed_in(ADMIN)
    response = admin.post("/desk/subscribers/import", {"csv_file": (io.BytesIO(IMPORT.encode()), "walk.csv")},
                          token_from="/desk/subscribers/import", content_type="multipart/form-data")
    assert re.search(r'id="import-summary">1 added, 1 updated, 0 unchanged, 2 refused', response.text)
    assert "walk.csv:4: " in response.text and "walk.csv:5: reader00001@example.org: suppressed" in response.text
    assert site.storage.get_subscriber("new.one@example.org") is None


def test_committing_a_previewed_import_adds_the_subscribers(site):
    admin = site.signed_in(ADMIN)
    page = admin.post("/desk/subscribers/import", {"csv_file": (io.BytesIO(IMPORT.encode()), "walk.csv"),
                                                   "confirmed": "y"},
                      token_from="/desk/subscribers/import", content_type="multipart/form-data").text
    key = re.search(r'name="key" value="(\w+)"', page).group(1)
    admin.post("/desk/subscribers/import/commit", {"key": key, "confirmed": "y", "csrf_token": csrf_token(page)})
    assert site.storage.get_subscriber("new.one@example.org").status == "subscribed"
    again = admin.post("/desk/subscribers/import/commit", {"key": key, "confirmed": "y",
                                                           "csrf_token": csrf_token(page)})
    assert again.status_code == 400  # an import is made once


MEMBERS = ("email,name,chapter\nnew.one@example.org,New One,Leeds\nreader00000@example.org,Reader Zero,York\n"
           "not an address,Nobody,\nreader00001@example.org,Suppressed,Hull\nreader00002@example.org,Reader Two,Hull\n")


def _members_previewed(site):
    """reader00001 suppressed, reader00002 unsubscribed, and the admin's preview of members.csv (confirmed)."""
    from pipeline.usecases.signup import unsubscribe

    add_subscribers(site.config, 3)
    _suppress(site, "reader00001@example.org")
    unsubscribe(site.storage, "reader00002@example.org", "one-click")
    admin = site.signed_in(ADMIN)
    page = admin.post("/desk/subscribers/import", {"csv_file": (io.BytesIO(MEMBERS.encode()), "members.csv"),
                                                   "confirmed": "y"},
                      token_from="/desk/subscribers/import", content_type="multipart/form-data").text
    return admin, page


def _commit(admin, page):
    key = re.search(r'name="key" value="(\w+)"', page).group(1)
    return admin.post("/desk/subscribers/import/commit", {"key": key, "confirmed": "y", "csrf_token": csrf_token(page)})


def test_a_row_the_preview_refuses_is_left_exactly_as_it_was_by_the_commit(site):
    admin, page = _members_previewed(site)
    assert "members.csv:6: reader00002@example.org: unsubscribed; stays unsubscribed" in page
    assert "members.csv:5: reader00001@example.org: suppressed" in page
    _commit(admin, page)
    for email in ("reader00001@example.org", "reader00002@example.org"):
        refused = site.storage.get_subscriber(email)
        assert (refused.name, refused.attributes) == (None, {})
    assert site.storage.get_subscriber("reader00000@example.org").attributes == {"chapter": "York"}


def test_an_imports_consent_record_names_the_uploaded_file_and_the_desk_user_who_committed_it(site):
    admin, page = _members_previewed(site)
    _commit(admin, page)
    profile = site.storage.profile(email="new.one@example.org")
    (event,) = site.storage.consent_histories([profile.id])[profile.id]
    assert (event.action, event.method, event.detail) == \
        ("subscribe", "import", {"source": "desk import of members.csv", "confirmed_by": f"desk user {ADMIN}"})


def test_an_imports_audit_entry_gives_the_counts_its_preview_showed(site):
    admin, page = _members_previewed(site)
    shown = re.search(r'id="import-summary">([^<]+)\.</p>', page).group(1)
    assert shown.startswith("1 added, 1 updated") and shown.endswith(", 3 refused")
    _commit(admin, page)
    entry = DeskStore(site.storage).audit_log()[0]
    assert (entry.action, entry.detail) == ("subscribers imported", f"members.csv: {shown} (confirmed)")


def test_an_admin_exports_the_list_as_csv(site):
    add_subscribers(site.config, 2)
    response = site.signed_in(ADMIN).get("/desk/subscribers/export.csv")
    assert response.headers["Content-Disposition"] == 'attachment; filename="subscribers.csv"'
    rows = response.text.splitlines()
    assert rows[0].startswith("email,name,status") and len([r for r in rows if "@example.org" in r]) == 2


# -- the command line and PostgreSQL ---------------------------------------------------------------------

def test_desk_add_user_asks_for_the_password_twice_and_stores_only_its_hash(site):
    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(cli, ["--config", str(site.project / "config.yaml"), "desk", "add-user",
                                      "sam@example.org", "--role", "editor"],
                                input="a passphrase for sam\na passphrase for sam\n")
    assert result.exit_code == 0, result.output
    assert "sam@example.org: added as editor" in result.output
    assert DeskStore(site.storage).user(email="sam@example.org").password_hash.startswith("$argon2id$")
    assert site.visitor().sign_in("sam@example.org", "a passphrase for sam").status_code == 302


def test_a_short_password_is_refused_with_the_rule(site):
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="password: use at least 12 characters"):
        add_user(site.storage, "sam@example.org", "editor", "short")


def test_sign_in_throttle_sessions_and_audit_log_work_on_postgresql(postgres_cluster, monkeypatch, tmp_path, secret):
    from .conftest import make_project

    monkeypatch.setenv("PIPELINE_DATABASE_URL", postgres_cluster.new_database())
    for pg in desk_site(make_project(tmp_path / "pg")):
        assert pg.storage.dialect == "postgresql"
        editor = pg.signed_in(EDITOR)
        editor.post("/desk/stories/new", {**STORY, "status": "draft"}, token_from="/desk/stories/new")
        assert [e.action for e in DeskStore(pg.storage).audit_log()][:2] == ["story saved", "signed in"]
        for _ in range(pg.config.desk.account_attempts):
            pg.visitor().sign_in(ADMIN, "guess-guess-guess")
        assert pg.visitor().sign_in(ADMIN).status_code == 429


def test_an_editions_page_counts_the_recipients_who_unsubscribed_since(site):
    from pipeline.usecases.signup import unsubscribe

    add_subscribers(site.config, 3)
    run_cli(site.project, "send", check=True)
    (edition,) = site.storage.list_editions()
    unsubscribe(site.storage, "reader00002@example.org", "one-click")
    page = site.signed_in(EDITOR).get(f"/desk/editions/{edition.id}").text
    assert '<td id="unsubscribed">1</td>' in page
    assert f'href="{site.config.site.url(f"archive/{edition.id}.html")}"' in page


def test_an_editions_unsubscribed_count_includes_complaints_and_emailed_unsubscribes(site):
    from pipeline.bounces.policy import record_bounce
    from pipeline.usecases.signup import unsubscribe

    add_subscribers(site.config, 4)
    run_cli(site.project, "send", check=True)
    (edition,) = site.storage.list_editions()
    policy = site.config.bounces.policy
    record_bounce(site.storage, policy, "reader00000@example.org", "complaint", "complaint (abuse)", "webhook:ses")
    record_bounce(site.storage, policy, "reader00001@example.org", "unsubscribe",
                  "asked by email to the unsubscribe address (DMARC pass)", "mailbox")
    unsubscribe(site.storage, "reader00002@example.org", "one-click")
    record_bounce(site.storage, policy, "reader00003@example.org", "hard", "550 5.1.1 no such user", "mailbox")
    editor = site.signed_in(EDITOR)
    assert '<td id="unsubscribed">3</td>' in editor.get(f"/desk/editions/{edition.id}").text  # a bounce is not one
    complained = editor.get("/desk/subscribers/one?email=reader00000@example.org").text
    assert re.search(r"<li>[^<]*: unsubscribe via complaint; source: webhook:ses; reason: complaint \(abuse\)", complained)
    emailed = editor.get("/desk/subscribers/one?email=reader00001@example.org").text
    assert re.search(r"<li>[^<]*: unsubscribe via mailto; source: mailbox; reason: asked by email", emailed)


def test_an_editions_bounces_and_complaints_are_those_of_its_own_recipients(site):
    from pipeline.bounces.policy import record_bounce

    add_subscribers(site.config, 2)
    run_cli(site.project, "send", check=True)
    (edition,) = site.storage.list_editions()
    add_subscribers(site.config, 1, prefix="joined-later")  # never sent this edition
    policy = site.config.bounces.policy
    record_bounce(site.storage, policy, "reader00000@example.org", "hard", "550 5.1.1 no such user", "mailbox")
    record_bounce(site.storage, policy, "joined-later00000@example.org", "hard", "550 5.1.1 no such user", "mailbox")
    record_bounce(site.storage, policy, "joined-later00000@example.org", "complaint", "complaint (abuse)", "webhook:ses")
    page = site.signed_in(EDITOR).get(f"/desk/editions/{edition.id}").text
    assert "<tbody><tr><td>1</td><td>0</td><td>0</td>" in page  # one hard bounce, no soft one, no complaint


def test_a_check_that_fails_links_to_the_story_that_causes_it(site):
    write_item(site.project, "photo-gone", 'title: "A story whose photo is gone"\ndate: 2025-01-07T09:00:00+00:00\n'
                                           'image: {url: images/gone.jpg, alt: "A photo", width: 600, height: 400}')
    page = site.signed_in(EDITOR).get("/desk/digest").text
    finding = re.search(r"<li><strong>img-missing</strong>:(.*?)</li>", page, re.S).group(1)
    assert "images/gone.jpg" in finding
    assert '<a href="/desk/stories/photo-gone">Fix it in “A story whose photo is gone”</a>' in finding


def test_the_health_page_shows_deferred_messages_and_their_next_retry(site):
    from .conftest import use_smtp
    from .smtp_sink import Behaviour, RecordingHandler, SmtpSink

    add_subscribers(site.config, 2)
    with SmtpSink(RecordingHandler(Behaviour(defer={"reader00000@example.org": 99}))) as sink:
        use_smtp(site.project, sink.port, max_attempts=1)
        run_cli(site.project, "send")
    (edition,) = site.storage.list_editions()
    retry = site.storage.next_retry(edition.id)
    page = site.signed_in(EDITOR).get("/desk/health").text
    assert re.search(rf"<td>{edition.id}</td><td>1</td><td>0</td><td>{re.escape(retry.isoformat())}</td>", page)


# -- scheduled sends ---------------------------------------------------------------------------------------

def _schedule(site, admin, hours: float = 1) -> str:
    from zoneinfo import ZoneInfo

    form = admin.get("/desk/send").text
    edition_id = re.search(r'name="edition" type="hidden" value="(\w+)"', form).group(1)
    when = (site.clock.now + timedelta(hours=hours)).astimezone(ZoneInfo(site.config.digest.timezone))
    admin.post("/desk/send/schedule", {"recipients": "3", "edition": edition_id, "csrf_token": csrf_token(form),
                                       "when": when.strftime("%Y-%m-%dT%H:%M")})
    return edition_id


def _desk_ext(site):
    (desk_app,) = site.app.mounts.values()
    return desk_app.extensions["desk"]


def test_a_scheduled_edition_is_sent_when_its_time_comes(site):
    from pipeline.desk.schedules import run_due

    add_subscribers(site.config, 3)
    admin = site.signed_in(ADMIN)
    edition_id = _schedule(site, admin)
    assert "will be sent at" in admin.get("/desk/send").text
    start = lambda edition, by: start_send(_desk_ext(site), edition, by)  # noqa: E731
    assert run_due(site.config, site.storage, site.clock.now + timedelta(minutes=30), start) == []
    (started,) = run_due(site.config, site.storage, site.clock.now + timedelta(minutes=61), start)
    assert started.edition_id == edition_id
    assert _job(site, edition_id).done.wait(60)
    assert site.storage.ledger_counts(edition_id)["sent"] == 3


def test_a_story_scheduled_before_a_scheduled_send_goes_out_in_it(site):
    """The weekly job planned ahead: a story due at 10:30, the newsletter at 11:00."""
    from pipeline.desk.schedules import run_due

    add_subscribers(site.config, 3)
    due = (site.clock.now + timedelta(minutes=30)).isoformat()
    write_item(site.project, "walk-ms", f'title: "Walk MS returns to the waterfront"\ndate: "{due}"')
    admin = site.signed_in(ADMIN)
    shown_now = _schedule(site, admin)
    (waiting,) = DeskStore(site.storage).scheduled()
    assert waiting.edition_id != shown_now  # the edition as it will be at 11:00, with the story
    started: list[str] = []
    (item,) = run_due(site.config, site.storage, site.clock.now + timedelta(minutes=61),
                      lambda edition, by: started.append(edition))
    assert started == [waiting.edition_id] and item.edition_id == waiting.edition_id
    assert DeskStore(site.storage).scheduled() == []


def test_a_scheduled_edition_that_changed_since_is_not_sent(site):
    from pipeline.desk.schedules import run_due

    add_subscribers(site.config, 3)
    _schedule(site, site.signed_in(ADMIN))
    write_item(site.project, "late-news", 'title: "Late news"\ndate: 2025-03-01T09:00:00+00:00')
    assert run_due(site.config, site.storage, site.clock.now + timedelta(hours=2), lambda *_: None) == []
    (skipped,) = DeskStore(site.storage).scheduled(state="skipped")
    assert "look at it and schedule again" in skipped.note
    assert site.storage.list_editions() == []


def test_a_scheduled_edition_that_the_checks_would_stop_is_not_sent(site):
    from pipeline.desk.schedules import run_due

    add_subscribers(site.config, 3)
    edition_id = _schedule(site, site.signed_in(ADMIN))
    (site.project / "content" / "images" / "mesems-trial-design.png").unlink()  # the same edition, its image gone
    assert run_due(site.config, site.storage, site.clock.now + timedelta(hours=2), lambda *_: None) == []
    (skipped,) = DeskStore(site.storage).scheduled(state="skipped")
    assert skipped.note.startswith(f"edition {edition_id} fails 2 pre-send check(s): ")
    assert "img-missing" in skipped.note and site.storage.list_editions() == []


def test_a_scheduled_send_can_be_cancelled(site):
    add_subscribers(site.config, 3)
    admin = site.signed_in(ADMIN)
    _schedule(site, admin)
    (waiting,) = DeskStore(site.storage).scheduled()
    admin.post(f"/desk/send/cancel/{waiting.id}", token_from="/desk/send")
    assert DeskStore(site.storage).scheduled() == []
    assert [s.state for s in DeskStore(site.storage).scheduled(state=None)] == ["cancelled"]


def test_a_subscribers_record_shows_every_edition_sent_to_them(site):
    add_subscribers(site.config, 2)
    run_cli(site.project, "send", check=True)
    (edition,) = site.storage.list_editions()
    page = site.signed_in(EDITOR).get("/desk/subscribers/one?email=reader00001@example.org").text
    assert re.search(rf'<table id="deliveries">.*<a href="/desk/editions/{edition.id}">{edition.id}</a></td>'
                     rf"<td>[^<]+</td><td>sent</td><td>1</td>", page, re.S)


def test_a_sign_in_refused_by_the_lock_out_is_audited(site):
    for _ in range(site.config.desk.account_attempts):
        site.visitor().sign_in(EDITOR, "guess-guess-guess")
    site.visitor().sign_in(EDITOR)
    entry = DeskStore(site.storage).audit_log()[0]
    assert (entry.who, entry.action) == (EDITOR, "sign-in refused") and entry.detail.startswith("locked out until")


def test_an_attached_file_becomes_the_storys_enclosure(site):
    editor = site.signed_in(EDITOR)
    audio = (io.BytesIO(b"ID3" + b"\0" * 2000), "Clinic Tour.mp3", "audio/mpeg")
    editor.post("/desk/stories/new", {**STORY, "enclosure": audio}, token_from="/desk/stories/new",
                content_type="multipart/form-data")
    item = read_item(site.project / "content" / "a-new-wheelchair-clinic.md", site.config)
    assert (item.enclosure.url, item.enclosure.type, item.enclosure.length) == (
        site.config.site.url("files/a-new-wheelchair-clinic-clinic-tour.mp3"), "audio/mpeg", 2003)
    published = site.config.path("output") / "files" / "a-new-wheelchair-clinic-clinic-tour.mp3"
    assert published.read_bytes() == b"ID3" + b"\0" * 2000  # published with the feeds that link to it


# -- where it is served --------------------------------------------------------------------------------

def _serving(server):
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}"


def test_the_desk_is_not_served_unless_enabled(project, secret):
    import httpx

    from pipeline.config import load_config
    from pipeline.service.web import make_web_server
    from pipeline.usecases import open_storage

    config = load_config(project / "config.yaml")
    with open_storage(config) as storage:
        server = make_web_server(config, storage, "127.0.0.1", 0)
        try:
            assert httpx.get(f"{_serving(server)}/desk/login").status_code == 404
        finally:
            server.shutdown()


def test_with_its_own_address_the_desk_is_served_alone_and_not_by_serve_web(site):
    import httpx

    from pipeline.desk.web import make_desk_server
    from pipeline.service.web import make_web_server

    set_config(site.project, **{"desk.host": "127.0.0.1"})
    config = site.reloaded().config
    web, alone = make_web_server(config, site.storage, "127.0.0.1", 0), make_desk_server(config, site.storage, port=0)
    try:
        assert httpx.get(f"{_serving(web)}/desk/login").status_code == 404
        desk_url = _serving(alone)
        assert httpx.get(f"{desk_url}/desk/login").status_code == 200
        assert httpx.get(f"{desk_url}/").headers["Location"] == "/desk/"
        assert httpx.get(f"{desk_url}/unsubscribe").status_code == 404
    finally:
        web.shutdown(), alone.shutdown()


def test_desk_serve_refuses_to_start_while_the_desk_is_off(project, secret):
    result = run_cli(project, "desk", "serve", "--port", "0")
    assert result.returncode == 1
    assert "desk.enabled: the desk is off; set it to true to serve it" in result.stderr


def test_a_form_sent_after_the_session_ended_asks_to_sign_in_and_changes_nothing(site):
    editor = site.signed_in(EDITOR)
    token = csrf_token(editor.get("/desk/stories/new").text)
    site.clock.advance(minutes=site.config.desk.idle_minutes + 1)
    response = editor.post("/desk/stories/new", {**STORY, "csrf_token": token})
    assert response.headers["Location"] == "/desk/login"
    assert "Your session ended, so that form was not sent" in editor.get("/desk/login").text
    assert not (site.project / "content" / "a-new-wheelchair-clinic.md").exists()
