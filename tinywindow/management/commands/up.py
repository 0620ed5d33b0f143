"""`python manage.py up`: the whole TinyWindow on this machine, in one command.

Starts embedded PostgreSQL and Redis when DATABASE_URL / REDIS_URL are unset, migrates,
bootstraps (admin user, roles, demo agents), starts every role of DESIGN.md under a
supervisor, waits until /health answers on the web and the engine, prints where everything
is, and stops it all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from psycopg import sql

from tinywindow import embedded
from tinywindow.cli import count, port_number, positive_seconds
from tinywindow.runtime import BASE_DIR, clear_services, var_dir, write_services
from tinywindow.supervisor import Role, Supervisor


def redact_url(url: str) -> str:
    """The URL with its password replaced, for printing."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _check_database(url: str) -> None:
    """Reach the configured database; create it when the server answers but it does not exist yet.

    A fresh PostgreSQL has no `tinywindow` database; creating it (as `createdb` would) is what a
    newcomer expects from `up`, and is harmless when it exists.
    """
    conninfo = url.replace("postgres://", "postgresql://", 1)
    try:
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            _database_unreachable(url, exc)
    name = urlsplit(conninfo).path.lstrip("/")
    try:
        with psycopg.connect(urlunsplit(urlsplit(conninfo)._replace(path="/postgres")), connect_timeout=5,
                             autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        pass  # created concurrently: that is what we wanted
    except psycopg.Error as exc:
        _database_unreachable(url, exc)
    print(f"created database {name!r}", flush=True)


def _database_unreachable(url: str, exc: Exception) -> NoReturn:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    raise CommandError(f"cannot reach DATABASE_URL {redact_url(url)}: {first_line}") from None


def _check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.RedisError, ValueError) as exc:
        raise CommandError(f"cannot reach REDIS_URL {redact_url(url)}: {exc}") from None


def flower_basic_auth(raw: str | None) -> str | None:
    """FLOWER_BASIC_AUTH checked: `user:password[,user:password...]`, or None when unset or empty.

    Flower reads the variable from its environment itself, so `up` passes it there and never on
    the command line (where `ps` would show the password to every user of the machine). Off by
    default: `up` listens on 127.0.0.1 in paper mode.
    """
    if raw is None or not raw.strip():
        return None
    pairs = [pair.strip() for pair in raw.split(",")]
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise CommandError("FLOWER_BASIC_AUTH must be user:password (several separated by commas); got an "
                               "entry without a user or a password")
    return ",".join(pairs)


def _is_loopback_host(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Command(BaseCommand):
    help = (
        "Start all of TinyWindow locally and supervise it: embedded PostgreSQL and Redis when DATABASE_URL / "
        "REDIS_URL are unset, migrations, admin user, demo agents (paper mode), web :8000, engine :8080, "
        "strategy worker, beat, Flower :5555. Ctrl-C stops everything. A role that dies is restarted "
        "(at most 5 times in 5 minutes, then everything stops with exit code 1)."
    )

    def add_arguments(self, parser):
        env = os.environ.get
        parser.add_argument("--web-port", type=port_number, default=int(env("WEB_PORT", "8000")))
        parser.add_argument("--engine-port", type=port_number, default=int(env("ENGINE_PORT", "8080")))
        parser.add_argument("--flower-port", type=port_number, default=int(env("FLOWER_PORT", "5555")))
        parser.add_argument("--host", default=env("WEB_HOST", "127.0.0.1"),
                            help="Address the web, engine and Flower listen on (default 127.0.0.1).")
        parser.add_argument("--no-demo", action="store_true", help="Do not seed the three demo agents.")
        parser.add_argument("--strategy-workers", type=count(0, 64), default=1,
                            help="Strategy worker processes (default 1).")
        parser.add_argument("--web-workers", type=count(1, 64), default=2,
                            help="gunicorn worker processes (default 2).")
        parser.add_argument("--no-flower", action="store_true", help="Do not start Flower.")
        parser.add_argument("--startup-timeout", type=positive_seconds, default=90.0,
                            help="Seconds to wait for /health before giving up (default 90).")

    # ------------------------------------------------------------------------------------------
    def handle(self, *args, **opts):
        self.servers: list[embedded.EmbeddedServer] = []
        self.supervisor: Supervisor | None = None
        self.flower_auth = None if opts["no_flower"] else flower_basic_auth(os.environ.get("FLOWER_BASIC_AUTH"))
        if not opts["no_flower"] and not self.flower_auth and not _is_loopback_host(opts["host"]):
            self._say(f"WARNING: Flower listens on {opts['host']} without a login; set FLOWER_BASIC_AUTH=user:password")
        data = var_dir()
        data.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock(data)
        for label, port in (("web", opts["web_port"]), ("engine", opts["engine_port"]),
                            *(() if opts["no_flower"] else (("flower", opts["flower_port"]),))):
            if not embedded.port_is_free(port, opts["host"]):
                raise CommandError(
                    f"port {port} for the {label} is already in use on {opts['host']}; stop what uses it or "
                    f"choose another with --{label}-port (or {label.upper()}_PORT)"
                )
        signal.signal(signal.SIGTERM, self._early_stop)
        signal.signal(signal.SIGINT, self._early_stop)
        try:
            database_url, redis_url = self._start_data_services(data)
            write_services(database_url=database_url, redis_url=redis_url)
            env = self._child_env(data, database_url, redis_url)
            self._prepare(env, demo=not opts["no_demo"])
            self.supervisor = Supervisor(self._roles(env, data, opts), cwd=BASE_DIR, say=self._say)
            signal.signal(signal.SIGTERM, self.supervisor.request_stop)
            signal.signal(signal.SIGINT, self.supervisor.request_stop)
            self.supervisor.start_all()
            self._wait_healthy(opts)
            self._print_summary(opts, database_url, redis_url, data)
            exit_code = self._supervise()
        except KeyboardInterrupt:
            exit_code = 130
        finally:
            self._shutdown()
        if exit_code:
            sys.exit(exit_code)

    def _early_stop(self, signum, frame):
        raise KeyboardInterrupt

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    def _take_lock(self, data: Path):
        run_dir = data / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / "up.lock", "w")  # noqa: SIM115 - held for the life of the command
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandError(f"another `manage.py up` is already running on {data}") from None
        return handle

    # --- data services ------------------------------------------------------------------------
    def _start_data_services(self, data: Path) -> tuple[str, str]:
        database_url = os.environ.get("DATABASE_URL", "")
        if database_url:
            _check_database(database_url)
            self._say(f"PostgreSQL: using DATABASE_URL {redact_url(database_url)}")
        else:
            self._say("PostgreSQL: DATABASE_URL unset, starting the embedded server ...")
            server = embedded.start_postgres(data / "postgres", preferred_port=5432, database="tinywindow")
            self.servers.append(server)
            database_url = server.url
            note = "" if server.port == 5432 else " (5432 was taken)"
            self._say(f"PostgreSQL: embedded, {server.url}{note}")
        redis_url = os.environ.get("REDIS_URL", "")
        if redis_url:
            _check_redis(redis_url)
            self._say(f"Redis: using REDIS_URL {redact_url(redis_url)}")
        else:
            self._say("Redis: REDIS_URL unset, starting the embedded server ...")
            server = embedded.start_redis(data / "redis", preferred_port=6379)
            self.servers.append(server)
            redis_url = server.url
            note = "" if server.port == 6379 else " (6379 was taken)"
            self._say(f"Redis: embedded, {server.url}{note}")
        return database_url, redis_url

    def _child_env(self, data: Path, database_url: str, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, TINYWINDOW_VAR_DIR=str(data),
                   DJANGO_SETTINGS_MODULE="tinywindow.settings", PYTHONUNBUFFERED="1")
        env["PATH"] = os.pathsep.join([*(str(d) for d in embedded.tool_bin_dirs()), env.get("PATH", "")])
        env.setdefault("PAPER_TRADING_MODE", "true")
        return env

    def _prepare(self, env: dict[str, str], *, demo: bool) -> None:
        steps = [
            ("migrating the database", ["migrate", "--noinput", "-v", "0"]),
            ("collecting static files", ["collectstatic", "--noinput", "-v", "0"]),
            ("bootstrapping", ["bootstrap", *(["--demo-agents"] if demo else [])]),
        ]
        for label, argv in steps:
            self._say(f"{label} ...")
            result = subprocess.run([sys.executable, "manage.py", *argv], cwd=BASE_DIR, env=env,
                                    capture_output=True, text=True)
            if result.returncode != 0:
                tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
                raise CommandError(f"{label} failed (exit {result.returncode}):\n{tail}")
            for line in result.stdout.splitlines():
                if line.strip() and line.strip() != "bootstrap complete":
                    self._say(f"  {line}")

    # --- roles --------------------------------------------------------------------------------
    def _roles(self, env: dict[str, str], data: Path, opts) -> list[Role]:
        py = sys.executable
        logs = data / "log"
        metrics_root = data / "metrics"
        shutil.rmtree(metrics_root, ignore_errors=True)

        def role(name: str, argv: list[str], metrics_dir: str | None = None) -> Role:
            role_env = dict(env)
            if metrics_dir:
                path = metrics_root / metrics_dir
                path.mkdir(parents=True, exist_ok=True)
                role_env["PROMETHEUS_MULTIPROC_DIR"] = str(path)
            return Role(name, argv, role_env, logs / f"{name}.log")

        celery = [py, "-m", "celery", "-A", "tinywindow"]
        roles = [
            role("web", [py, "-m", "gunicorn", "tinywindow.wsgi:application", "--config",
                         "python:tinywindow.gunicorn_conf", "--bind",
                         f"{opts['host']}:{opts['web_port']}", "--workers", str(opts["web_workers"]),
                         "--access-logfile", "-", "--graceful-timeout", "10"], "web"),
            # Celery workers share one metrics dir: the engine's :8080/metrics serves them all.
            role("engine", [*celery, "worker", "-Q", "safety,execution", "-n", "engine@%h", "-c", "2",
                            "--health-port", str(opts["engine_port"]), "--health-host", opts["host"],
                            "--loglevel", "INFO"], "workers"),
            *[
                role(f"strategy-{i + 1}", [*celery, "worker", "-Q", "strategy,default", "-n", f"strategy{i + 1}@%h",
                                           "-c", "2", "--loglevel", "INFO"], "workers")
                for i in range(opts["strategy_workers"])
            ],
            role("beat", [*celery, "beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
                          "--pidfile=", "--loglevel", "INFO"], "workers"),
        ]
        if not opts["no_flower"]:
            flower = role("flower", [*celery, "flower", f"--port={opts['flower_port']}", f"--address={opts['host']}"])
            # Basic auth through the environment only (Flower reads FLOWER_BASIC_AUTH itself); an
            # empty value would make Flower demand a login nobody can give.
            flower.env.pop("FLOWER_BASIC_AUTH", None)
            if getattr(self, "flower_auth", None):
                flower.env["FLOWER_BASIC_AUTH"] = self.flower_auth
            roles.append(flower)
        return roles

    def _wait_healthy(self, opts) -> None:
        host = "127.0.0.1" if opts["host"] in ("0.0.0.0", "::") else opts["host"]  # noqa: S104 - probing only
        targets = {
            "web": f"http://{host}:{opts['web_port']}/health",
            "engine": f"http://{host}:{opts['engine_port']}/health",
        }
        if not opts["no_flower"]:
            targets["flower"] = f"http://{host}:{opts['flower_port']}/healthcheck"
        pending = dict(targets)
        deadline = time.monotonic() + opts["startup_timeout"]
        self._say("waiting for " + ", ".join(pending) + " to report healthy ...")
        while pending:
            if self.supervisor.stop_requested:
                raise KeyboardInterrupt
            error = self.supervisor.watch_once()
            if error:
                raise CommandError(error)
            for name, url in list(pending.items()):
                if _http_ok(url):
                    self._say(f"  {name} healthy")
                    del pending[name]
            if pending and time.monotonic() > deadline:
                logs = ", ".join(str(var_dir() / "log" / f"{n}.log") for n in pending)
                raise CommandError(f"{', '.join(pending)} not healthy after {opts['startup_timeout']:.0f} s; "
                                   f"see {logs}")
            time.sleep(0.5)

    def _print_summary(self, opts, database_url: str, redis_url: str, data: Path) -> None:
        host = "localhost" if opts["host"] in ("127.0.0.1", "0.0.0.0") else opts["host"]  # noqa: S104 - display
        pg = urlsplit(database_url.replace("postgres://", "postgresql://", 1))
        rd = urlsplit(redis_url)
        mode = "PAPER" if os.environ.get("PAPER_TRADING_MODE", "true").lower() in ("1", "true", "yes", "on") else "LIVE"
        lines = [
            "",
            f"TinyWindow is up ({mode} mode).",
            f"  Admin         http://{host}:{opts['web_port']}/admin/   (user: {settings.ADMIN_USERNAME})",
            f"  API           http://{host}:{opts['web_port']}/api/     docs: http://{host}:{opts['web_port']}/api/docs/",
            f"  Health        http://{host}:{opts['web_port']}/health   engine: http://{host}:{opts['engine_port']}/health",
            f"  Metrics       http://{host}:{opts['web_port']}/metrics  engine: http://{host}:{opts['engine_port']}/metrics",
        ]
        if not opts["no_flower"]:
            login = "   (login: FLOWER_BASIC_AUTH)" if getattr(self, "flower_auth", None) else ""
            lines.append(f"  Flower        http://{host}:{opts['flower_port']}/{login}")
        lines += [
            f"  PostgreSQL    {redact_url(database_url)}   (pg_isready -h {pg.hostname} -p {pg.port or 5432})",
            f"  Redis         {redact_url(redis_url)}   (redis-cli -p {rd.port or 6379} ping)",
            "  Tools         eval \"$(python manage.py shellenv)\"   tools on PATH (redis-cli aimed at this Redis), "
            "PG* and PAPER_TRADING_MODE set",
            "  SQL shell     python manage.py dbshell",
            f"  Logs          {data / 'log'}/",
            "Press Ctrl-C to stop everything.",
            "",
        ]
        self._say("\n".join(lines))

    def _supervise(self) -> int:
        while not self.supervisor.stop_requested:
            error = self.supervisor.watch_once()
            if error:
                self.stderr.write(error)
                return 1
            time.sleep(0.5)
        return 0

    def _shutdown(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.supervisor is not None:
            killed = self.supervisor.stop_all()
            if killed:
                self._say(f"roles that needed SIGKILL: {', '.join(killed)}")
        for server in reversed(self.servers):
            self._say(f"stopping embedded {server.name} ...")
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                self.stderr.write(f"could not stop {server.name} cleanly: {exc}")
        if self.servers or self.supervisor is not None:
            clear_services()
            self._say("TinyWindow stopped.")
