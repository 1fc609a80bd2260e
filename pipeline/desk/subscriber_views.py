"""The desk's subscriber pages: look one up, add, unsubscribe, lift a suppression, import, export.
Each view reads the request, calls one use case, records what it did, and renders."""

from __future__ import annotations

import io
import logging

from flask import Flask, abort, flash, g, redirect, render_template, request, url_for

from .. import usecases as use_cases
from ..addresses import normalise_address
from ..errors import PipelineError
from ..usecases.signup import operator_add, unsubscribe
from ..usecases.subscribers import ImportOrigin, export_csv, read_csv_file
from .context import audit, desk, signed_in
from .forms import (
    ImportForm,
    ReasonForm,
    SubscriberAddForm,
)
from .subscribers import keep_upload, kept_upload, preview_import, subscriber_record
from .views import uploaded_file

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    # -- subscribers ------------------------------------------------------------------------

    @app.route("/subscribers")
    @signed_in()
    def subscribers():
        query = request.args.get("q", "").strip()
        rows = desk()["store"].search_subscribers(query) if query else []
        return render_template("subscribers.html", query=query, rows=rows)

    @app.route("/subscribers/one")
    @signed_in()
    def subscriber():

        address = request.args.get("email", "")
        try:
            record = subscriber_record(desk()["config"], desk()["storage"], address)
        except PipelineError as exc:
            abort(404, str(exc))
        if record is None:
            abort(404, f"{address} is not on the list.")
        audit("looked at a subscriber", record.profile.email)
        return render_template("subscriber.html", record=record, reason=ReasonForm(formdata=None))

    @app.route("/subscribers/add", methods=["GET", "POST"])
    @signed_in("admin")
    def subscriber_add():

        form = SubscriberAddForm()
        if form.validate_on_submit():
            reason = (form.reason.data or "").strip()
            if form.confirmed.data and not reason:
                form.reason.errors = ["Say how they agreed (e.g. signed the paper form at the spring walk)."]
            else:
                try:
                    email, outcome = operator_add(desk()["config"], desk()["storage"], form.email.data or "",
                                                  form.name.data or None, None, confirmed=bool(form.confirmed.data),
                                                  transport=desk()["transport"],
                                                  reason=f"desk: {reason}" if reason else None)
                except PipelineError as exc:
                    form.email.errors = [str(exc)]
                else:
                    audit("subscriber added", f"{email}: {outcome}" + (f" ({reason})" if reason else ""))
                    flash(f"{email}: {outcome}.")
                    return redirect(url_for("subscriber", email=email))
        return render_template("subscriber_add.html", form=form), 200 if request.method == "GET" else 400

    @app.route("/subscribers/unsubscribe", methods=["POST"])
    @signed_in("admin")
    def subscriber_unsubscribe():

        email = normalise_address(request.form.get("email", ""))
        changed = unsubscribe(desk()["storage"], email, "desk", now=desk()["clock"](),
                              detail={"by": f"desk user {g.user.email}"})
        audit("subscriber unsubscribed", email if changed else f"{email} (already)")
        flash(f"{email} is unsubscribed." if changed else f"{email} was not subscribed.")
        return redirect(url_for("subscriber", email=email))

    @app.route("/subscribers/lift", methods=["POST"])
    @signed_in("admin")
    def subscriber_lift():

        email = request.form.get("email", "")
        form = ReasonForm()
        if not form.validate():
            flash("Say why the suppression is lifted.")
            return redirect(url_for("subscriber", email=email))
        lifted = use_cases.lift_suppression(desk()["config"], email, form.reason.data or "", now=desk()["clock"]())
        audit("suppression lifted" if lifted else "no suppression to lift", f"{email}: {form.reason.data}")
        flash("The suppression is lifted." if lifted else "There was no suppression to lift.")
        return redirect(url_for("subscriber", email=email))

    @app.route("/subscribers/import", methods=["GET", "POST"])
    @signed_in("admin")
    def subscriber_import():

        form = ImportForm()
        preview = key = None
        if form.validate_on_submit():
            upload = uploaded_file(form.csv_file)
            if upload is None:
                form.csv_file.errors = ["Choose a CSV file."]
            else:
                name = upload.filename or "upload.csv"
                try:
                    text = upload.read().decode("utf-8-sig")
                    preview = preview_import(desk()["storage"], text, name)
                    key = keep_upload(desk()["config"], text, name)
                except UnicodeDecodeError:
                    form.csv_file.errors = [f"{name}: not UTF-8 text; save it as CSV UTF-8"]
                except PipelineError as exc:
                    form.csv_file.errors = [str(exc)]
        return render_template("subscriber_import.html", form=form, preview=preview, key=key,
                               commit=ImportForm(formdata=None)), 200 if request.method == "GET" or preview else 400

    @app.route("/subscribers/import/commit", methods=["POST"])
    @signed_in("admin")
    def subscriber_import_commit():

        upload = kept_upload(desk()["config"], request.form.get("key", ""))
        if upload is None:
            abort(400, "This import was made already or has expired; upload the file again.")
        confirmed = request.form.get("confirmed") == "y"
        origin = ImportOrigin(f"desk import of {upload.name}", f"desk user {g.user.email}")
        try:  # read as the preview read it: the same plan, the same file name in its messages
            report = read_csv_file(desk()["storage"], upload.path, desk()["config"], confirmed=confirmed,
                                   source=upload.name, origin=origin)
        finally:
            upload.forget()
        audit("subscribers imported", f"{upload.name}: {report.summary()}" + (" (confirmed)" if confirmed else ""))
        flash(f"Imported {upload.name}: {report.summary()} ({report.kept_unsubscribed} kept unsubscribed, "
              f"{report.kept_suppressed} kept suppressed).")
        return redirect(url_for("subscribers"))

    @app.route("/subscribers/export.csv")
    @signed_in("admin")
    def subscriber_export():


        out = io.StringIO()
        count = export_csv(desk()["storage"], out)
        audit("subscribers exported", f"{count} rows")
        return out.getvalue(), 200, {"Content-Type": "text/csv; charset=utf-8",
                                     "Content-Disposition": 'attachment; filename="subscribers.csv"'}
