"""The messages of one edition: serialised once, personalised per recipient with a few substitutions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import make_msgid

from ..config import Config
from ..publish.digest import PREFERENCES_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER
from ..urls import unsubscribe_base, web_url
from .lint import Sample
from .message import DigestParts, DotStuffed, Envelope, MessageTemplate, Recipient, list_headers, recipient_for
from .signup_tokens import make_preferences_token

SAMPLE_RECIPIENT = "subscriber@example.org"


class EditionMail:
    """Render + inline + MIME happen once here; ``render`` only fills in one recipient."""

    def __init__(self, digest: DigestParts, edition_id: str, date: datetime, config: Config, secret: bytes,
                 subject_prefix: str = ""):
        self.digest, self.edition_id, self.secret = digest, edition_id, secret
        self.config, self.date = config, date
        # The preferences link is dated from the edition, so a resend after a crash carries the same bytes.
        self.preferences_page = web_url(config) + "preferences"
        self.preferences_expire = date + timedelta(days=config.signup.preferences_days)
        self.delivery = config.require_delivery()
        self.base = unsubscribe_base(config)
        headers = list_headers(edition_id, self.delivery, config.site.url("archive/index.html"),
                               self.delivery.list_help or config.site.base_url)
        envelope = Envelope.for_digest(digest, edition_id, self.delivery, date, subject_prefix=subject_prefix,
                                       headers=headers)
        self.template = MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER)

    def recipient(self, email: str, subscriber_id: int | None = None) -> Recipient:
        """The personal values; with a subscriber id, the signed preferences link, else the generic page."""
        base = recipient_for(email, self.edition_id, self.delivery, self.secret, self.base)
        preferences = self.preferences_page
        if subscriber_id is not None:  # the token is URL-safe as it is
            preferences += "?token=" + make_preferences_token(self.secret, subscriber_id, self.preferences_expire)
        # Dated when it is made, just before it goes out: a deferred message sent hours later says so.
        now = datetime.now(timezone.utc).replace(microsecond=0)
        return Recipient(base.email, base.unsubscribe_url, base.message_id, preferences, now)

    def render(self, email: str, subscriber_id: int | None = None) -> bytes:
        return self.template.render(self.recipient(email, subscriber_id))

    def render_wire(self, email: str, subscriber_id: int | None = None) -> DotStuffed:
        """The message as SMTP DATA sends it (dot-stuffed, terminated): what the SMTP transport takes."""
        return self.template.render_wire(self.recipient(email, subscriber_id))

    def render_once(self, email: str) -> bytes:
        """A one-off copy (a test send): a fresh Message-ID, so clients never thread it with the real one."""
        base = self.recipient(email)
        return self.template.render(Recipient(base.email, base.unsubscribe_url,
                                              make_msgid(domain=self.delivery.sending_domain), base.preferences_url))

    def sample(self) -> Sample:
        """The message one made-up recipient would get: what the pre-send checks look at."""
        recipient = self.recipient(SAMPLE_RECIPIENT)
        url = recipient.unsubscribe_url
        html, text = self.digest.html.replace(UNSUBSCRIBE_PLACEHOLDER, url), self.digest.text.replace(
            UNSUBSCRIBE_PLACEHOLDER, url)
        html = html.replace(PREFERENCES_PLACEHOLDER, recipient.preferences_url)
        text = text.replace(PREFERENCES_PLACEHOLDER, recipient.preferences_url)
        return Sample(html, text, self.template.render(recipient))
