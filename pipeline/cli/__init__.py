"""The ``pipeline`` command line.  Thin: each command parses its options, calls one use case
(``pipeline.usecases``) and reports.  The heavy imports (SQLAlchemy, premailer, feedgen) happen
inside the commands that need them, so `pipeline --help` and `pipeline --version` start fast.
"""

from __future__ import annotations

from . import reporting, running, serving, subscribers  # noqa: F401 - each registers its commands on ``cli``
from .base import cli, hoist_global_options, main

__all__ = ["cli", "hoist_global_options", "main"]
