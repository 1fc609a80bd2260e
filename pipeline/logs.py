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


class _OwnHandler(logging.StreamHandler):
    """Marks the handlers this module added, so configuring again replaces only those."""


class _OwnFileHandler(logging.FileHandler):
    pass


def configure_logging(level: str | int = "WARNING", fmt: str = "text", file: Path | None = None) -> None:
    """Idempotent: called again (the config's settings, or another in-process command), it replaces
    the handlers it added before and leaves anyone else's (a test's capture) alone."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, (_OwnHandler, _OwnFileHandler)):
            root.removeHandler(handler)
            handler.close()
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = [_OwnHandler(sys.stderr)]
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_OwnFileHandler(file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    # Libraries that are chatty at INFO: keep them quiet unless debugging.
    for name in ("apscheduler", "mail.log", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
