"""The messages of one edition: serialised once, personalised per recipient with a few substitutions."""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid
from typing import Protocol

from ..config import Config
from ..publish.digest import UNSUBSCRIBE_PLACEHOLDER
from .lint import Sample
from .message import Envelope, MessageTemplate, Recipient, list_headers, recipient_for

SAMPLE_RECIPIENT = "subscriber@example.org"


class DigestParts(Protocol):
    """A rendered digest (fresh, or as stored with its edition), with the unsubscribe placeholder in it."""

    @property
    def subject(self) -> str: ...

    @property
    def html(self) -> str: ...

    @property
    def text(self) -> str: ...


def unsubscribe_base(config: Config) -> str:
    return config.digest.unsubscribe_url or config.site.url("unsubscribe")


class EditionMail:
    """Render + inline + MIME happen once here; ``render`` only fills in one recipient."""

    def __init__(self, digest: DigestParts, edition_id: str, date: datetime, config: Config, secret: bytes,
                 subject_prefix: str = ""):
        self.digest, self.edition_id, self.secret = digest, edition_id, secret
        self.delivery = config.require_delivery()
        self.base = unsubscribe_base(config)
        headers = list_headers(edition_id, self.delivery, config.site.url("archive/index.html"),
                               self.delivery.list_help or config.site.base_url)
        envelope = Envelope.for_digest(digest, edition_id, self.delivery, date, subject_prefix=subject_prefix,
                                       headers=headers)
        self.template = MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER)

    def recipient(self, email: str) -> Recipient:
        return recipient_for(email, self.edition_id, self.delivery, self.secret, self.base)

    def render(self, email: str) -> bytes:
        return self.template.render(self.recipient(email))

    def render_once(self, email: str) -> bytes:
        """A one-off copy (a test send): a fresh Message-ID, so clients never thread it with the real one."""
        base = self.recipient(email)
        return self.template.render(Recipient(base.email, base.unsubscribe_url,
                                              make_msgid(domain=self.delivery.sending_domain)))

    def sample(self) -> Sample:
        """The message one made-up recipient would get: what the pre-send checks look at."""
        recipient = self.recipient(SAMPLE_RECIPIENT)
        url = recipient.unsubscribe_url
        html, text = self.digest.html.replace(UNSUBSCRIBE_PLACEHOLDER, url), self.digest.text.replace(
            UNSUBSCRIBE_PLACEHOLDER, url)
        return Sample(html, text, self.template.render(recipient))
