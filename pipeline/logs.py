"""Logging: readable lines on the terminal, or JSON lines for machines; optionally to a file too."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# Libraries that are chatty at INFO: kept quiet unless debugging.
QUIET_LIBRARIES = ("apscheduler", "mail.log", "sqlalchemy")

_installed: list[logging.Handler] = []  # the handlers the last configure_logging call put on the root logger


def configure_logging(level: str | int = "WARNING", fmt: str = "text", file: Path | None = None) -> None:
    """Log to stderr (and ``file``) at ``level``.  A second call replaces what the first set up and
    leaves alone the handlers others put on the root logger (a host application, a test runner)."""
    root = logging.getLogger()
    while _installed:
        handler = _installed.pop()
        root.removeHandler(handler)
        handler.close()
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
        _installed.append(handler)
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    # SQL statements at -vv, but never the rows they return (subscriber addresses); the engine
    # hides statement parameters itself.
    logging.getLogger("sqlalchemy").setLevel(logging.INFO if root.level <= logging.DEBUG else logging.WARNING)
