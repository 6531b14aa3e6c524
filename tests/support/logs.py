"""Log capture: every record, before and after the wallet's redaction."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from app import logs


class RawRecords(logging.Handler):
    """Every record as logged, before any redaction (it runs first among the root's handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        parts = [record.getMessage(), repr(record.args)]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        parts += [str(v) for v in record.__dict__.values()]
        self.texts.append("\n".join(parts))


@contextmanager
def every_log_line() -> Iterator[tuple[RawRecords, io.StringIO]]:
    """Every logger at DEBUG into the wallet's JSON handler (its lines in the stream), and a raw
    copy of each record; levels and handlers as they were afterwards."""
    stream = io.StringIO()
    handler = logs.make_handler(stream, json=True)
    raw = RawRecords()
    root = logging.getLogger()
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level = root.level
    for name in levels:
        logging.getLogger(name).setLevel(logging.NOTSET)
    root.setLevel(logging.DEBUG)
    root.handlers.insert(0, raw)
    root.addHandler(handler)
    try:
        yield raw, stream
    finally:
        root.removeHandler(handler)
        root.removeHandler(raw)
        root.setLevel(root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
