"""One-off messages to one person: the signup confirmation, the welcome message, the note to an address
that signed up again, and the unsubscribe link a mailed request is answered with.

They are transactional (asked for by the recipient), so they carry no List-Unsubscribe;
they share the digest's organisation footer through their own small templates,
``signup_email.html`` and ``signup_email.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

from ..addresses import ascii_address
from ..config import Config
from ..publish.digest import environment_for, inline_css
from .message import CONTENT_POLICY, WIRE_POLICY, _header_value

Kind = Literal["confirm", "welcome", "unsubscribe", "subscribed"]
UTF8_WIRE_POLICY = policy.SMTPUTF8.clone(refold_source="none")


@dataclass(frozen=True)
class Notice:
    """A rendered one-off message, ready for a transport."""

    recipient: str  # the wire form of the address
    subject: str
    message: bytes


def build_notice(config: Config, kind: Kind, email: str, *, link: str, now: datetime,
                 expires: datetime | None = None, topics: list[str] | None = None) -> Notice:
    """Render the confirmation (``link`` confirms) or welcome (``link`` is the latest edition or the site)."""
    delivery = config.require_delivery()
    env = environment_for(config)
    title = config.site.title
    subject = {"confirm": f"Confirm your subscription to {title}", "welcome": f"Welcome to {title}",
               "unsubscribe": f"Unsubscribe from {title}?", "subscribed": f"You already receive {title}"}[kind]
    context = {"site": config.site, "organisation": config.organisation, "kind": kind, "subject": subject,
               "email": email, "link": link, "expires": expires, "topics": topics or [],
               "consent_text": config.signup.consent_text.format(site_title=title)}
    html = inline_css(env.get_template("signup_email.html").render(context))
    text = env.get_template("signup_email.txt").render(context)
    msg = EmailMessage(policy=CONTENT_POLICY)
    msg["From"] = _header_value(delivery.from_)
    if delivery.reply_to:
        msg["Reply-To"] = _header_value(delivery.reply_to)
    wire = ascii_address(email) if email.split("@")[0].isascii() else email
    msg.set_raw("To", _header_value(wire))
    msg["Subject"] = _header_value(subject)
    msg.set_raw("Date", formatdate(now.timestamp(), usegmt=True))
    msg.set_raw("Message-ID", make_msgid(domain=delivery.sending_domain))
    msg.set_raw("Auto-Submitted", "auto-generated")  # no vacation replies to a confirmation
    msg.set_content(text, charset="utf-8", cte="base64")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="base64")
    # An internationalised local part cannot be written in ASCII (RFC 6531): the To header goes out
    # in UTF-8, as the digest's does, and the SMTP transport asks the relay for SMTPUTF8.
    return Notice(wire, subject, msg.as_bytes(policy=WIRE_POLICY if wire.isascii() else UTF8_WIRE_POLICY))
