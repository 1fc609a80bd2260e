"""Hand-written bounce samples (tests/bounce_samples/) filled in for one subscriber of one edition."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from pipeline.mail.tokens import make_token
from pipeline.mail.verp import make_return_path

SAMPLES = Path(__file__).parent / "bounce_samples"
BOUNCE_DOMAIN = "bounces.nationalmssociety.org"
HARD_SAMPLES = ["rfc3464_hard", "postfix_hard", "exim_hard", "exchange_hard", "gmail_hard"]


def return_path(secret: str, edition_id: str, subscriber_id: int) -> str:
    return make_return_path(secret.encode(), edition_id, subscriber_id, "bounces", BOUNCE_DOMAIN)


def sample(name: str, secret: str, edition_id: str, subscriber_id: int, recipient: str,
           unsubscribe_base: str = "https://www.nationalmssociety.org/news-feed/unsubscribe",
           authentication_results: str = "") -> bytes:
    """A sample as it arrives: CRLF line ends, the placeholders filled in."""
    text = (SAMPLES / f"{name}.eml").read_text(encoding="utf-8")
    token = make_token(secret.encode(), recipient)
    url = f"{unsubscribe_base}?{urlencode({'token': token})}"
    results = f"Authentication-Results: {authentication_results}\n" if authentication_results else ""
    text = (text.replace("@@RETURN_PATH@@", return_path(secret, edition_id, subscriber_id))
            .replace("@@TOKEN@@", token).replace("@@AUTHENTICATION_RESULTS@@\n", results)
            .replace("@@RECIPIENT@@", recipient).replace("@@UNSUBSCRIBE_URL@@", url))
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
