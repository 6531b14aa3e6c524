"""Progress lines of long commands, on stderr, so that stdout stays the result alone.

Shown when stderr is a terminal, or when asked for (``--progress``); quiet otherwise, so a cron
job's mail or a test's captured output holds only what it asked for.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Writes ``<label>: <message>`` lines; :meth:`tick` at most once every ``every`` seconds."""

    def __init__(
        self,
        label: str,
        *,
        enabled: bool | None = None,
        every: float = 2.0,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.every = every
        self.started = time.monotonic()
        self._last = float("-inf")

    @classmethod
    def when(cls, asked: bool, label: str, *, every: float = 2.0) -> Progress:
        """Enabled when ``asked`` (``--progress``) or when stderr is a terminal."""
        return cls(label, enabled=asked or sys.stderr.isatty(), every=every)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        """One line now (a phase begun or ended)."""
        if self.enabled:
            print(f"{self.label}: {message} ({self.elapsed:.1f} s)", file=self.stream, flush=True)
            self._last = time.monotonic()

    def tick(self, message: str) -> None:
        """One line unless the last was less than ``every`` seconds ago (a running count)."""
        if self.enabled and time.monotonic() - self._last >= self.every:
            self.say(message)
