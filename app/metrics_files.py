"""The directory of prometheus-client's multiprocess mode, for ``wallet serve --workers N``.

The supervisor (:func:`serving_dir`, before uvicorn spawns its workers) makes a fresh directory
and names it in ``PROMETHEUS_MULTIPROC_DIR``, which the workers inherit, so their metrics go to
files there and any worker's ``/metrics`` reads them all (see :mod:`app.metrics`). It is removed
when ``wallet serve`` ends: counters start again from zero with the next run, as they do for one
process, and Prometheus's ``rate()`` takes resets in its stride.

A worker leaving normally takes its live gauges out of the totals (``Metrics.close``); one killed
and replaced by the supervisor is taken out when the next worker starts
(:func:`forget_dead_processes`). Its counters stay: what it counted happened.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from app.metrics import MULTIPROCESS

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "wallet-metrics-"

_PID = re.compile(r"_(\d+)\.db$")


@contextmanager
def serving_dir(workers: int) -> Iterator[Path | None]:
    """The multiprocess directory for a ``wallet serve`` of ``workers`` processes, for as long
    as it serves: one the operator gave in ``PROMETHEUS_MULTIPROC_DIR``, emptied now and kept
    after; else, for more than one worker, a fresh one under the temporary directory, removed
    after; else none (one process keeps its metrics in memory)."""
    given = os.environ.get(ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # a previous run's: its counts are not this run's
            stale.unlink()
        yield folder
        return
    if workers <= 1:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    os.environ[ENV] = str(folder)
    try:
        yield folder
    finally:
        del os.environ[ENV]
        shutil.rmtree(folder, ignore_errors=True)


def forget_dead_processes() -> list[int]:
    """Take the live gauges of processes gone without ``Metrics.close`` (a worker killed, which
    uvicorn's supervisor replaced) out of the totals; run as each worker starts. The pids
    forgotten; none outside multiprocess mode."""
    if not MULTIPROCESS or not os.environ.get(ENV):
        return []
    folder = Path(os.environ[ENV])
    pids = {int(m.group(1)) for f in folder.glob("gauge_live*_*.db") if (m := _PID.search(f.name))}
    dead = [pid for pid in sorted(pids) if not _alive(pid)]
    for pid in dead:
        mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process has the pid now: our worker is gone
    return True
