"""The multiprocess metrics directory of ``wallet serve`` (app/metrics_files.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app import metrics_files
from app.metrics_files import ENV, PREFIX, serving_dir


def test_one_worker_keeps_its_metrics_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with serving_dir(1) as folder:
        assert folder is None and ENV not in os.environ


def test_several_workers_get_a_fresh_directory_removed_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(metrics_files.tempfile, "tempdir", None)  # re-read TMPDIR
    with serving_dir(2) as folder:
        assert folder is not None and folder.parent == tmp_path
        assert folder.name.startswith(PREFIX) and list(folder.iterdir()) == []
        assert os.environ[ENV] == str(folder)  # what the workers inherit
        (folder / "counter_1.db").write_bytes(b"x")
    assert not folder.exists() and ENV not in os.environ


def test_a_directory_given_is_emptied_and_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"last run")
    (given / "notes.txt").write_text("not ours")
    monkeypatch.setenv(ENV, str(given))
    with serving_dir(1) as folder:
        assert folder == given
        assert [p.name for p in given.iterdir()] == ["notes.txt"]
    assert given.is_dir() and os.environ[ENV] == str(given)


def test_outside_multiprocess_mode_no_process_is_forgotten() -> None:
    assert metrics_files.forget_dead_processes() == []


def test_a_dead_process_live_gauges_are_forgotten_and_its_counters_kept(tmp_path: Path) -> None:
    """In a process of its own: multiprocess mode is chosen when prometheus-client is imported."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    script = textwrap.dedent(
        f"""
        import os, shutil
        from pathlib import Path
        from app.metrics import MULTIPROCESS, Metrics
        from app.metrics_files import forget_dead_processes
        assert MULTIPROCESS
        folder = Path(os.environ["{ENV}"])
        m = Metrics()
        m.db_pool_max.set(10)
        m.replays.inc()
        me = os.getpid()
        for f in list(folder.glob(f"*_{{me}}.db")):  # the same files, as a dead worker's
            shutil.copy(f, folder / f.name.replace(str(me), "{dead.pid}"))
        text = m.render().decode()
        assert "wallet_db_pool_max 20.0" in text, text
        assert "wallet_seamless_replays_total 2.0" in text, text
        assert forget_dead_processes() == [{dead.pid}]
        text = m.render().decode()
        assert "wallet_db_pool_max 10.0" in text, text
        assert "wallet_seamless_replays_total 2.0" in text, text
        assert "_created" not in text
        m.close()
        assert not list(folder.glob(f"gauge_live*_{{me}}.db"))
        print("ok")
        """
    )
    env = {**os.environ, ENV: str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
