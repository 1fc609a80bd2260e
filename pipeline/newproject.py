"""``pipeline init DIR``: a new organisation's project in one step.

Writes a commented ``config.yaml`` holding only what a newcomer needs (every other key has a default),
one example story with an image the project draws, ``deploy/`` files filled in for DIR, a ``.gitignore``
and ``pipeline.env`` with a generated signing secret (0600). Nothing is overwritten.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw, ImageFont

from .config.base import iana_timezone
from .environment import weak_secret
from .errors import PipelineError

log = logging.getLogger(__name__)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"  # the repository's examples, when installed from it
SERVER_ROOT = "/srv/newsletter"
IMAGE_SIZE = (1200, 630)


@dataclass(frozen=True)
class NewProject:
    """What ``pipeline init`` asks for."""

    folder: Path
    name: str
    site_url: str
    sender: str          # news@example.org, or "Name <news@example.org>"
    postal_address: str
    timezone: str


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def check(project: NewProject) -> NewProject:
    """The answers, checked before anything is written; each problem names its option."""

    if not project.name.strip():
        raise PipelineError("--name: give the organisation's name")
    if not re.match(r"^https?://[^/\s]+", project.site_url):
        raise PipelineError(f"--site-url: {project.site_url!r} must be an absolute http(s) URL")
    _name, address = parseaddr(project.sender)
    if address.count("@") != 1:
        raise PipelineError(f"--from: {project.sender!r} must contain an email address")
    if not project.postal_address.strip():
        raise PipelineError("--postal-address: every bulk email must carry one (CAN-SPAM)")
    try:
        iana_timezone(project.timezone)
    except ValueError as exc:
        raise PipelineError(f"--timezone: {exc}") from None
    site_url = project.site_url if project.site_url.endswith("/") else project.site_url + "/"
    return NewProject(project.folder, project.name.strip(), site_url, project.sender.strip(),
                      project.postal_address.strip(), project.timezone)


def config_text(project: NewProject, year: int) -> str:
    parts = urlsplit(project.site_url)
    host = parts.hostname or "example.org"
    _display, address = parseaddr(project.sender)
    domain = address.rsplit("@", 1)[1]
    title = f"{project.name} News"
    sender = project.sender if "<" in project.sender else f"{title} <{address}>"
    website = f"{parts.scheme}://{host}"
    return f"""\
# {title}: configuration of the newsletter pipeline (made by `pipeline init`).
# Only what a new project needs is here; every other setting has a default.
# `pipeline validate` checks this file; docs/how-to/make-it-yours.md explains the rest
# (branding colours, about paragraphs, social links, your own templates).

site:
  title: {_q(title)}
  # Where the output folder (public/) is published: feed links and the "view in browser" link use it.
  base_url: {_q(project.site_url)}
  language: "en"
  description: {_q(f"News from {project.name}.")}
  # Item ids are this prefix plus the story's file name. Never change it once readers follow the feeds.
  id_prefix: {_q(f"tag:{host},{year}:news/")}

organisation:
  name: {_q(project.name)}
  website: {_q(website)}
  # Required in every bulk email (CAN-SPAM); shown in the digest's footer.
  postal_address: {_q(project.postal_address)}
  copyright: {_q(f"© {year} {project.name}.")}
  # legal: "Registered charity no. 1234567."   # shown after the (c) line
  # phone: "0117 000 0000"
  # founded: 1990
  # mission: "No one in Riverside goes hungry."
  # about:                                       # paragraphs on the site and archive pages
  #   - heading: {_q(f"About {project.name}")}
  #     text: "Who you are and what you do, in a few sentences."
  # social: {{facebook: "https://www.facebook.com/...", instagram: "https://www.instagram.com/..."}}

# branding: {{accent: "#1f5fa8", masthead: "#c2410c", font_stack: "Georgia, serif"}}   # lint checks contrast

digest:
  timezone: {_q(project.timezone)}   # the edition date is shown in this timezone

delivery:
  from: {_q(sender)}
  list_id: {_q(f"{title} <news.{host}>")}
  # Unsubscribe requests by email arrive here (RFC 8058 one-click unsubscribe works without it).
  unsubscribe_mailto: {_q(f"unsubscribe@{domain}")}
  # file: each message is written to outbox/ (try it safely); smtp: sent through your relay:
  transport: file
  # smtp: {{host: smtp.example.org, port: 587, security: starttls, username: news@{domain}}}
  # The password is read from $PIPELINE_SMTP_PASSWORD (put it in pipeline.env).

schedule:
  jobs:
    refresh-feeds:       # feeds and the web digest, no email
      cron: "*/15 * * * *"
      timezone: {_q(project.timezone)}
      action: feeds
    weekly-digest:       # everything, including the new edition by email
      cron: "0 9 * * mon"
      timezone: {_q(project.timezone)}
      action: run
    retry-deferred:      # messages a mail server deferred go out when due
      cron: "*/10 * * * *"
      timezone: {_q(project.timezone)}
      action: retry
"""


def story_text(project: NewProject, when: datetime) -> str:
    return f"""\
---
title: "Welcome to {project.name} News"
date: {when.isoformat(timespec="seconds")}
summary: >-
  Our first story: how to follow our news in a feed reader or by email. Replace this file with
  your own stories, one Markdown file each, in this folder.
tags: [news]
image:
  url: "images/welcome.png"
  alt: "{project.name}: the words Welcome to our news on a coloured banner"
  width: {IMAGE_SIZE[0]}
  height: {IMAGE_SIZE[1]}
---
This is the first story of **{project.name} News**. Every Markdown file in `content/` is a story: the
lines between the `---` at the top say its title, date, summary, tags and image, and the rest is
the story itself.

Run `pipeline run` to build the feeds and the digest into `public/`, and `pipeline preview` to see
them in your browser.
"""


def draw_image(path: Path, name: str) -> None:
    """The example story's banner: drawn here, so the project owns every file it publishes."""

    width, height = IMAGE_SIZE
    image = Image.new("RGB", IMAGE_SIZE, "#1f5fa8")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height - 120, width, height), fill="#c2410c")
    try:
        big: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=72)
        small: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=44)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        big = small = ImageFont.load_default()
    draw.text((80, 200), "Welcome to our news", fill="#ffffff", font=big)
    draw.text((80, height - 95), name, fill="#ffffff", font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG")


GITIGNORE = """\
# Made by `pipeline run` and friends; never commit them.
.state/
public/
outbox/
# Secrets.
pipeline.env
"""


def new_secret() -> str:
    """A random signing secret that also passes the pattern rule (a random one fails it about once in
    ten thousand draws: four equal characters in a row)."""

    while True:
        value = secrets.token_urlsafe(32)
        if weak_secret(value) is None:
            return value


def env_text() -> str:
    return f"""\
# Secrets of this project, read by `pipeline` through the environment: load it with
#   set -a; . ./pipeline.env; set +a
# (the crontab and the systemd units in deploy/ do). Mode 0600; never commit it (.gitignore says so).
PIPELINE_SECRET={new_secret()}
# PIPELINE_SMTP_PASSWORD=your-relay-password
"""


def _pipeline_command(folder: Path) -> str:
    """The pipeline program the deploy files run: the one running now when it is a script, else DIR's venv."""
    script = Path(sys.executable).parent / "pipeline"
    return str(script) if script.is_file() else str(folder / ".venv" / "bin" / "pipeline")


SHIPPED_TIMEZONE = "America/New_York"  # the timezone deploy/'s schedules are written in


def deploy_files(folder: Path, timezone_name: str = SHIPPED_TIMEZONE) -> dict[str, str]:
    """deploy/'s crontab and systemd units with their paths, user, env file and timezone made DIR's
    (the schedules keep their local times: the weekly digest at 09:00 in the project's timezone)."""
    files: dict[str, str] = {}
    if not DEPLOY.is_dir():
        return files
    program = _pipeline_command(folder)
    user = getpass.getuser()
    for source in sorted(DEPLOY.iterdir()):
        if source.suffix not in (".service", ".timer") and source.name != "crontab":
            continue
        text = source.read_text(encoding="utf-8")
        text = re.sub(rf"(?:{re.escape(SERVER_ROOT)}/)?\.venv/bin/pipeline\b", lambda _match: program, text)
        text = text.replace("/etc/newsletter/pipeline.env", str(folder / "pipeline.env"))
        text = text.replace(SERVER_ROOT, str(folder))
        text = re.sub(r"(?m)^User=.*$", f"User={user}", text)
        text = text.replace(SHIPPED_TIMEZONE, timezone_name)  # CRON_TZ, its comment, the timers' OnCalendar
        files[f"deploy/{source.name}"] = text
    return files


def create(project: NewProject, now: datetime | None = None) -> list[Path]:
    """Write the new project; refuses a folder that already has a config.yaml. Returns the files written."""
    project = check(project)
    folder = project.folder.resolve()
    if (folder / "config.yaml").exists():
        raise PipelineError(f"{folder / 'config.yaml'}: already exists; `pipeline init` starts a new project only")
    now = now or datetime.now(timezone.utc)

    local = now.astimezone(ZoneInfo(project.timezone)).replace(microsecond=0)
    texts = {
        "config.yaml": config_text(project, local.year),
        "content/welcome.md": story_text(project, local),
        ".gitignore": GITIGNORE,
        **deploy_files(folder, project.timezone),
    }
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    image = folder / "content" / "images" / "welcome.png"
    draw_image(image, project.name)
    written.append(image)
    env = folder / "pipeline.env"
    descriptor = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(env_text())
    written.append(env)
    log.info("init: %d files written in %s", len(written), folder)
    return written
