"""The desk's pages.  Each view reads the request, calls one use case, records what it did, and renders."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.datastructures import FileStorage

from .. import usecases as use_cases
from ..config import Config
from ..errors import PipelineError
from ..state.lock import RunLocked
from ..state.storage import LEDGER_STATUSES
from . import stories as story_files
from .context import audit, desk, signed_in
from .digest import edition_report, health_report, next_digest, with_stories
from .forms import (
    ScheduleForm,
    SendForm,
    SetPasswordForm,
    SignInForm,
    StoryForm,
)
from .sending import sendable, start_send
from .sessions import DeskSession

log = logging.getLogger(__name__)


def _safe_next(target: str | None) -> str:
    """Only a path of the desk itself (no open redirect)."""
    script = request.script_root
    if target and target.startswith(script + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("home")


def register(app: Flask) -> None:
    # -- people --------------------------------------------------------------------------------------

    @app.route("/login", methods=["GET", "POST"])
    def login():
        form = SignInForm()
        locked = None
        if form.validate_on_submit():
            outcome = desk()["accounts"].sign_in(form.email.data or "", form.password.data or "", g.client)
            if outcome.user is not None:
                assert isinstance(session, DeskSession)
                session.sign_in(outcome.user.id)
                g.user = outcome.user
                return redirect(_safe_next(request.args.get("next")))
            locked = outcome.locked_until
            if locked is None:
                form.password.errors = ["That email address and password do not match an account."]
        status = 429 if locked else (401 if request.method == "POST" else 200)
        return render_template("login.html", form=form, locked=locked), status

    @app.route("/logout", methods=["POST"])
    def logout():
        if g.user is not None:
            audit("signed out")
        assert isinstance(session, DeskSession)
        session.end()
        return redirect(url_for("login"))

    @app.route("/logout-everywhere", methods=["POST"])
    @signed_in()
    def logout_everywhere():
        ended = desk()["store"].delete_sessions_of(g.user.id)
        audit("signed out everywhere", f"{ended} sessions ended")
        assert isinstance(session, DeskSession)
        session.end()
        return redirect(url_for("login"))

    @app.route("/set-password", methods=["GET", "POST"])
    def set_password():
        form = SetPasswordForm(token=request.args.get("token", ""))
        if form.validate_on_submit():
            user = desk()["accounts"].set_password_with_token(form.token.data or "", form.password.data or "")
            if user is None:
                form.password.errors = ["This link has expired or was used already; ask an admin for a new one."]
            else:
                flash("Your password is set. Sign in with it.")
                return redirect(url_for("login"))
        return render_template("set_password.html", form=form)

    # -- the desk's front page and the audit log --------------------------------------------------------

    @app.route("/")
    @signed_in()
    def home():
        return render_template("home.html")

    @app.route("/audit", endpoint="audit")
    @signed_in()
    def audit_log():
        return render_template("audit.html", entries=desk()["store"].audit_log())

    # -- stories ------------------------------------------------------------------------------------

    @app.route("/stories")
    @signed_in()
    def stories():
        return render_template("stories.html", rows=story_files.list_stories(desk()["config"], desk()["clock"]()))

    @app.route("/stories/new", methods=["GET", "POST"])
    @signed_in()
    def story_new():
        return _story_page(None)

    @app.route("/stories/<slug>", methods=["GET", "POST"])
    @signed_in()
    def story_edit(slug: str):
        return _story_page(slug)

    @app.route("/stories/preview", methods=["POST"])
    @signed_in()
    def story_preview():
        """The live preview's fragment (the page's small script posts the body here, with its CSRF token)."""
        html = story_files.preview_html(desk()["config"], request.form.get("body", ""),
                                        request.form.get("slug", "preview"))
        return html, 200, {"Content-Type": "text/html; charset=utf-8"}

    # -- the next digest ---------------------------------------------------------------------------

    @app.route("/digest")
    @signed_in()
    def digest():

        config = desk()["config"]
        try:
            preview = next_digest(config)
            _items, findings = use_cases.lint(config)
        except PipelineError as exc:
            return render_template("error.html", heading="No digest to show", message=str(exc)), 200
        return render_template("digest.html", preview=preview, findings=with_stories(findings, preview.items))

    @app.route("/digest/render")
    @signed_in()
    def digest_render():
        """The digest's HTML as a subscriber gets it, for the preview's frames (dark: as a dark-mode client)."""
        try:
            preview = next_digest(desk()["config"])
        except PipelineError as exc:
            return render_template("error.html", heading="No digest to show", message=str(exc)), 200
        html = preview.html
        if request.args.get("scheme") == "dark":
            html = html.replace("@media (prefers-color-scheme: dark)", "@media all")
        return html, 200, {"Content-Type": "text/html; charset=utf-8"}

    @app.route("/digest/test", methods=["POST"])
    @signed_in()
    def digest_test():

        try:
            reply = use_cases.send_test(desk()["config"], g.user.email, desk()["transport"])
        except PipelineError as exc:
            audit("test send failed", str(exc))
            flash(f"The test message was not sent: {exc}")
            return redirect(url_for("digest"))
        audit("test sent", f"to {g.user.email}")
        flash(f"A test message is on its way to {g.user.email} (the server said: {reply}).")
        return redirect(url_for("digest"))

    @app.route("/send", methods=["GET", "POST"])
    @signed_in("admin")
    def send():

        config = desk()["config"]
        try:
            plan = use_cases.send_dry_run(config)
        except PipelineError as exc:
            return render_template("error.html", heading="Nothing can be sent", message=str(exc)), 200
        edition_id = plan.edition.edition_id
        form = SendForm(recipients=str(plan.subscribers), edition=edition_id or "")
        ready = sendable(plan)
        if request.method == "POST" and form.validate_on_submit():
            if not ready or form.edition.data != edition_id or form.recipients.data != str(plan.subscribers):
                flash("What would be sent has changed since the page was shown; check it again.")
                return redirect(url_for("send"))
            _start_send(edition_id or "")
            return redirect(url_for("progress", edition_id=edition_id))
        schedule = ScheduleForm(formdata=None, recipients=str(plan.subscribers), edition=edition_id or "")
        return render_template("send.html", plan=plan, form=form, ready=ready, schedule=schedule,
                               refused=with_stories(plan.refused, plan.edition.items),
                               timezone=config.digest.timezone, waiting=desk()["store"].scheduled()), \
            200 if request.method == "GET" else 400

    @app.route("/send/schedule", methods=["POST"])
    @signed_in("admin")
    def send_schedule():


        config = desk()["config"]
        plan = use_cases.send_dry_run(config)
        form = ScheduleForm()
        if not form.validate_on_submit() or form.when.data is None:
            flash("Give the date and time to send at.")
            return redirect(url_for("send"))
        when = form.when.data.replace(tzinfo=ZoneInfo(config.digest.timezone))
        if not sendable(plan) or form.edition.data != plan.edition.edition_id or \
                form.recipients.data != str(plan.subscribers):
            flash("What would be sent has changed since the page was shown; check it again.")
        elif when <= desk()["clock"]():
            flash("That time has passed; choose a time in the future.")
        else:
            # What will go at that time: with the stories scheduled to come out before it.
            planned = use_cases.send_dry_run(config, at=when)
            if not sendable(planned):
                flash("The edition as it will be then fails the pre-send checks; look at the stories scheduled "
                      "before that time.")
                return redirect(url_for("send"))
            edition_id = planned.edition.edition_id or ""
            desk()["store"].schedule(edition_id, when, g.user.email)
            desk()["ticker_waiting"]()
            audit("edition scheduled", f"edition {edition_id} at {when.isoformat()}")
            later = len(planned.edition.items) - len(plan.edition.items)
            flash(f"Edition {edition_id} will be sent at {when.strftime('%Y-%m-%d %H:%M %Z')}"
                  + (f", with {later} stories scheduled to come out before then." if later > 0 else "."))
        return redirect(url_for("send"))

    @app.route("/send/cancel/<int:schedule_id>", methods=["POST"])
    @signed_in("admin")
    def send_cancel(schedule_id: int):
        if desk()["store"].settle_scheduled(schedule_id, "cancelled", f"by {g.user.email}"):
            audit("scheduled send cancelled", f"schedule {schedule_id}")
            flash("The scheduled send is cancelled.")
        return redirect(url_for("send"))

    @app.route("/progress/<edition_id>")
    @signed_in()
    def progress(edition_id: str):
        return render_template("progress.html", edition_id=edition_id, **_progress(edition_id))

    @app.route("/progress/<edition_id>/counts.json")
    @signed_in()
    def progress_counts(edition_id: str):
        """What the progress page's script polls while a send runs: the same counts and sentence as the page."""
        return _progress(edition_id)

    # -- editions ----------------------------------------------------------------------------------

    @app.route("/editions")
    @signed_in()
    def editions():
        storage = desk()["storage"]
        rows = [(edition, storage.ledger_counts(edition.id)) for edition in storage.list_editions()]
        return render_template("editions.html", rows=rows)

    @app.route("/editions/<edition_id>")
    @signed_in()
    def edition(edition_id: str):

        report = edition_report(desk()["config"], desk()["storage"], edition_id)
        if report is None:
            abort(404, "No such edition.")
        query = request.args.get("q", "").strip()
        found = None
        if query:
            found = desk()["store"].deliveries_to(query.lower(), edition_id)
            audit("looked up a recipient", f"edition {edition_id}")
        return render_template("edition.html", report=report, query=query, found=found)

    # -- health --------------------------------------------------------------------------------------

    @app.route("/health")
    @signed_in()
    def health():

        return render_template("health.html", report=health_report(desk()["config"], desk()["storage"]))


def _progress(edition_id: str) -> dict[str, Any]:
    """An edition's send as the progress page shows it: running or not, the ledger's counts (all zero until the
    run has made the edition), and one sentence for the page's status region."""
    storage = desk()["storage"]
    edition = storage.get_edition(edition_id)
    job = desk()["jobs"].get(edition_id)
    if edition is None and job is None:
        abort(404, "No such edition.")
    counts = storage.ledger_counts(edition_id) if edition else dict.fromkeys(LEDGER_STATUSES, 0)
    running = job is not None and not job.done.is_set()
    if job is not None and job.error:
        message = f"Stopped: {job.error}"
    else:
        message = (f"{'Sending…' if running else 'Finished.'} {counts['sent']} sent, {counts['deferred']} deferred, "
                   f"{counts['failed']} failed.")
    return {"running": running, "counts": counts, "message": message}


def _start_send(edition_id: str) -> None:
    audit("send started", f"edition {edition_id}")
    start_send(desk(), edition_id, g.user.email, g.client)


def uploaded_file(field: Any) -> FileStorage | None:
    data = field.data
    return data if isinstance(data, FileStorage) and data.filename else None


def _story_page(slug: str | None):
    config = desk()["config"]
    new = slug is None
    if new:
        story = story_files.Story(date=_now_text(config))
    else:
        try:
            story = story_files.load_story(config, slug or "")
        except PipelineError:
            abort(404, "No such story.")
    form = StoryForm(obj=None, data=None if request.method == "POST" else _form_data(story))
    preview_html = None
    if request.method == "POST" and form.validate_on_submit():
        story = _story_from(form, story, new)
        try:
            # Everything is checked before anything is written: the uploads are written with the story.
            edited, uploads = _with_uploads(config, form, story)
            if form.preview.data:
                story_files.check_story(config, edited)
                preview_html = story_files.preview_html(config, edited.body, edited.slug)
            else:
                path = story_files.save_story(config, edited, new=new, uploads=uploads)
                kind = "draft" if edited.draft else "published"
                audit("story saved", f"{story_files.shown_path(config, path)} ({kind})")
                flash(f"Saved {story_files.shown_path(config, path)}.")
                if not edited.draft:
                    _publish_feeds()
                return redirect(url_for("story_edit", slug=edited.slug))
        except story_files.UploadRefused as exc:
            getattr(form, exc.field).errors = [str(exc)]
            audit("upload refused", str(exc))
        except story_files.StoryInvalid as exc:
            getattr(form, exc.field if hasattr(form, exc.field) else "body").errors = [str(exc)]
    status = 200 if request.method == "GET" or preview_html is not None else 400
    return render_template("story.html", form=form, story=story, new=new, preview_html=preview_html), status


def _with_uploads(config: Config, form: StoryForm,
                  story: story_files.Story) -> tuple[story_files.Story, tuple[story_files.Upload, ...]]:
    """The story as it would be saved, with the form's uploads checked (not written) and its image's text."""
    image, enclosure = uploaded_file(form.image), uploaded_file(form.enclosure)
    alt = (form.image_alt.data or "").strip()
    slug = story.slug or "story"
    uploads = []
    edited = dataclasses.replace(story)
    if image is not None:
        if not alt:
            raise story_files.StoryInvalid("image_alt", "image.alt: describe the image for readers who cannot see it")
        uploads.append(story_files.image_upload(config, slug, image.filename or "", image.read(), alt))
        edited.image = uploads[-1].front
    elif edited.image is not None:
        edited.image = {**edited.image, "alt": alt}
    if form.remove_image.data:
        edited.image = None
        uploads = []
    if enclosure is not None:
        uploads.append(story_files.enclosure_upload(config, slug, enclosure.filename or "", enclosure.read(),
                                                    enclosure.mimetype))
        edited.enclosure = uploads[-1].front
    return edited, tuple(uploads)


def _publish_feeds() -> None:
    """Rebuild the feeds and the site at once, so the story is out; a run in progress does it itself."""

    try:
        use_cases.run(desk()["config"], action="feeds", wait=False)
        flash("The feeds are updated.")
    except RunLocked:
        use_cases.publish_after_current_run(desk()["config"])
        flash("Another run is going on; the feeds will carry the story as soon as it ends.")
    except PipelineError as exc:
        flash(f"The feeds were not updated: {exc}")


def _now_text(config) -> str:

    now = desk()["clock"]().astimezone(ZoneInfo(config.digest.timezone))
    return now.replace(microsecond=0).isoformat()


def _form_data(story: story_files.Story) -> dict[str, Any]:
    return {"slug": story.slug, "title": story.title, "date": story.date, "author": story.author,
            "summary": story.summary, "tags": story.tags, "image_alt": (story.image or {}).get("alt", ""),
            "citation": story.citation, "source_name": story.source_name, "source_url": story.source_url,
            "body": story.body, "status": "draft" if story.draft else "published"}


def _story_from(form: StoryForm, old: story_files.Story, new: bool) -> story_files.Story:
    return story_files.Story(
        slug=(form.slug.data or "").strip() if new else old.slug, draft=form.status.data != "published",
        title=form.title.data or "", date=form.date.data or "", author=form.author.data or "",
        summary=form.summary.data or "", tags=form.tags.data or "", image=old.image, enclosure=old.enclosure,
        citation=form.citation.data or "", source_name=form.source_name.data or "",
        source_url=form.source_url.data or "", body=form.body.data or "", kept=old.kept)
