"""Logging set-up: the command line may configure it more than once in one process."""

from __future__ import annotations

import logging

from pipeline.logs import JsonFormatter, configure_logging

from .conftest import logging_restored


def test_configuring_again_replaces_its_own_handler_and_keeps_everyone_elses():
    root = logging.getLogger()
    theirs = logging.NullHandler()  # a host application's, or the test runner's
    with logging_restored():
        root.addHandler(theirs)
        before = list(root.handlers)
        configure_logging("INFO", "text")
        configure_logging("DEBUG", "json")
        ours = [handler for handler in root.handlers if handler not in before]
        assert theirs in root.handlers
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
        assert root.level == logging.DEBUG
    assert theirs not in root.handlers
