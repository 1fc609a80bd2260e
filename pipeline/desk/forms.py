"""The desk's forms (Flask-WTF: each carries a CSRF token tied to the session)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    HiddenField,
    PasswordField,
    RadioField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length


class SignInForm(FlaskForm):
    email = StringField("Email address", validators=[DataRequired(), Length(max=320)],
                        render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)],
                             render_kw={"autocomplete": "current-password"})
    submit = SubmitField("Sign in")


class SetPasswordForm(FlaskForm):
    token = HiddenField(validators=[DataRequired()])
    password = PasswordField("New password (at least 12 characters)", validators=[DataRequired(),
                                                                                 Length(min=12, max=1000)],
                             render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Set my password")


class ButtonForm(FlaskForm):
    """A form that is only a button (sign out, sign out everywhere, send a test): the CSRF token is the point."""

    submit = SubmitField("Go")


class StoryForm(FlaskForm):
    slug = StringField("File name (slug)", description="Lower-case letters, digits and hyphens; becomes "
                                                       "content/SLUG.md and the story's id. It cannot change later.")
    title = StringField("Title")
    date = StringField("Date, with time and timezone", description="ISO 8601, e.g. 2026-12-07T09:00:00-05:00. "
                                                                   "A date in the future is shown as scheduled.")
    author = StringField("Author (optional)")
    summary = TextAreaField("Summary (optional)", description="Plain text; without it the first 280 characters "
                                                              "of the story are used.", render_kw={"rows": 3})
    tags = StringField("Tags (optional)", description="Separated by commas, e.g. research, clinical trials")
    image = FileField("Image (optional)", description="JPEG, PNG, GIF or WebP.",
                      render_kw={"accept": "image/jpeg,image/png,image/gif,image/webp"})
    image_alt = StringField("Image description (alt text)", description="Required with an image: what it shows, "
                                                                        "for readers who cannot see it.")
    remove_image = BooleanField("Remove the image")
    enclosure = FileField("Attached file (optional)", description="Audio or a document, offered in the feeds.")
    citation = TextAreaField("Citation (optional)", render_kw={"rows": 2})
    source_name = StringField("Source name (optional)", description="When the story comes from elsewhere.")
    source_url = StringField("Source web address (optional)")
    body = TextAreaField("Story (Markdown)", render_kw={"rows": 16})
    status = RadioField("Status", choices=[SelectChoice("draft", "Draft: not in any feed or digest"),
                                           SelectChoice("published", "Published: in the feeds and the next digest")],
                        default="draft", validators=[InputRequired()])
    preview = SubmitField("Preview")
    save = SubmitField("Save")


class SendForm(FlaskForm):
    recipients = HiddenField(validators=[DataRequired()])
    edition = HiddenField(validators=[DataRequired()])
    confirm = BooleanField("I have looked at the preview and the test message, and want to send this edition now",
                           validators=[DataRequired(message="Tick the box to confirm.")])
    submit = SubmitField("Send the edition")


class ScheduleForm(FlaskForm):
    recipients = HiddenField(validators=[DataRequired()])
    edition = HiddenField(validators=[DataRequired()])
    when = DateTimeLocalField("Send at", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
                              validators=[DataRequired(message="Give the date and time.")])
    submit = SubmitField("Schedule the edition")


class SearchForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search changes nothing

    q = StringField("Email address or name")


class SubscriberAddForm(FlaskForm):
    email = StringField("Email address", validators=[DataRequired(), Email(check_deliverability=False)])
    name = StringField("Name (optional)")
    confirmed = BooleanField("They have already agreed: subscribe at once (otherwise they get a confirmation email)")
    reason = StringField("How they agreed (required when subscribing at once)")
    submit = SubmitField("Add subscriber")


class ReasonForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired()])
    submit = SubmitField("Go")


class ImportForm(FlaskForm):
    csv_file = FileField("CSV file (columns: email, name)")
    confirmed = BooleanField("Everyone in the file has already agreed to receive the newsletter")
    submit = SubmitField("Preview the import")
