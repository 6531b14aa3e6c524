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


def run_in_multiprocess_mode(folder: Path, script: str) -> str:
    """``script`` in a process of its own, in multiprocess mode over ``folder``: its output."""
    env = {**os.environ, ENV: str(folder)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_count_gone_to_zero_replaces_a_replaced_worker_count(tmp_path: Path) -> None:
    """A label set counted by a worker since replaced reads 0 once a live worker counts none:
    the counts write every provider and every (kind, reason), 0 when none."""
    run_in_multiprocess_mode(
        tmp_path,
        """
        from app.metrics import Metrics
        m = Metrics()
        m.stale_rounds_counted({"acme": 5})
        m.attention_counted({("deposit", "amount_mismatch"): 3})
        m.close()
        """,
    )
    text = run_in_multiprocess_mode(
        tmp_path,
        """
        from app import gauges
        from app.metrics import Metrics
        from app.metrics_files import forget_dead_processes
        from app.payments.models import ATTENTION, KINDS
        forget_dead_processes()
        m = Metrics()
        # What the count queries answer when nothing is stale or flagged any more.
        m.stale_rounds_counted({"acme": 0})
        m.attention_counted({(k, a): 0 for k in KINDS for a in ATTENTION})
        print(m.render().decode())
        """,
    )
    assert 'wallet_rounds_stale{provider="acme"} 0.0' in text, text
    series = 'wallet_payments_attention{attention="amount_mismatch",kind="deposit"}'
    assert f"{series} 0.0" in text, text


def test_a_dependency_one_live_worker_cannot_reach_is_down(tmp_path: Path) -> None:
    """One worker reaches Postgres, another does not: 0, whichever wrote last."""
    blind = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, ENV: str(tmp_path)},
    )
    try:
        text = run_in_multiprocess_mode(
            tmp_path,
            f"""
            import os, shutil
            from pathlib import Path
            from app.metrics import Metrics
            m = Metrics()
            m.dependency_checked("postgres", False)
            me, folder = os.getpid(), Path(os.environ["{ENV}"])
            for f in folder.glob(f"gauge_*_{{me}}.db"):  # a live worker's, not reaching it
                shutil.copy(f, folder / f.name.replace(str(me), "{blind.pid}"))
            m.dependency_checked("postgres", True)  # this one, the last to write, does
            m.dependency_checked("redis", True)
            print(m.render().decode())
            """,
        )
    finally:
        blind.kill()
        blind.wait()
    assert 'wallet_dependency_up{dependency="postgres"} 0.0' in text, text
    assert 'wallet_dependency_up{dependency="redis"} 1.0' in text, text
