"""Logging set up by an in-process CLI run follows ``sys.stderr`` as it is when a record is emitted.

Before, ``setup_server_logging`` bound its handler to the stderr of the moment: once that stream was swapped
and closed (a test's capture, a notebook cell), every later record printed a "--- Logging error ---"
traceback, which broke the next CLI test's "no Traceback on stderr" check."""

from __future__ import annotations

import io
import logging

from fastvideo.serving.observability import setup_server_logging


def test_the_server_log_handler_writes_to_the_current_stderr_even_after_the_old_one_closed(monkeypatch):
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr("sys.stderr", first)
        setup_server_logging("text", "INFO")
        logging.getLogger("fastvideo.test").info("one")
        first.close()
        monkeypatch.setattr("sys.stderr", second)
        logging.getLogger("fastvideo.test").info("two")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
    text = second.getvalue()
    assert "two" in text and "Logging error" not in text and "one" not in text
