"""Test session: real Postgres and real Redis, started once, migrations applied once.

The fixtures live in tests/fixtures/ (servers, the app, payments), helpers that tests import in
tests/support/. The keys module comes first: it puts the session's keys in the environment
before anything imports the app. The session ends with the ledger check of tests/fixtures/ledger.py
on every database it made; an unbalanced ledger fails the run.
"""

from __future__ import annotations

import tests.support.keys  # noqa: F401  (sets the environment before the app is imported)

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.app",
    "tests.fixtures.payments",
]
