"""Several chat replicas on one machine: PostgreSQL, N replicas and nginx on loopback.

``supportbot cluster up`` starts a throwaway PostgreSQL cluster (Debian's
``postgresql`` package: ``initdb`` and ``pg_ctl`` as the ``postgres`` user when run as
root), N ``chainlit run bot/app.py`` replicas sharing it, and Debian's ``nginx`` in
front, configured from ``deploy/nginx.conf`` (sticky by Chainlit's session cookie,
websocket upgrade on ``/ws/socket.io``). ``supportbot cluster down`` stops them all.
Everything binds 127.0.0.1 and lives in one folder (``--dir``, default
``data/cluster``), with a ``cluster.json`` saying what runs where.

The test suite uses :func:`start_postgres` for its own throwaway database.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bot.config import REPO_ROOT

log = logging.getLogger(__name__)

NGINX_TEMPLATE = REPO_ROOT / "deploy" / "nginx.conf"
STATE_FILE = "cluster.json"
PG_SUPERUSER = "postgres"
DATABASE = "supportbot"


class ClusterError(RuntimeError):
    """The cluster cannot be started or stopped (the message says why and what to do)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The folder of the newest installed PostgreSQL server binaries."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise ClusterError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb). "
            "Install it with: apt-get install -y postgresql"
        )
    return found[-1].parent


def _as_postgres_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: drop to the package's system user.
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_SUPERUSER, "--", *command]
    return command


def _run(command: list[str], what: str, timeout: float = 120) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ClusterError(f"{what} failed: {detail[-1] if detail else done.returncode}")
    return done.stdout


@dataclass
class Postgres:
    """A PostgreSQL server started by :func:`start_postgres`."""

    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder."""
        return self.root / "data"

    def url(self, database: str = DATABASE) -> str:
        """SQLAlchemy URL of ``database`` (trust authentication on loopback)."""
        return f"postgresql+asyncpg://{PG_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command with ``psql`` and return its unaligned output."""
        command = [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        command += ["-U", PG_SUPERUSER, "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1"]
        return _run([*command, "-c", sql], f"psql {sql[:40]!r}")

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def running(self) -> bool:
        """True when the server answers."""
        command = [str(postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(command, capture_output=True).returncode == 0


def start_postgres(root: Path, port: int | None = None) -> Postgres:
    """Create (if new) and start a PostgreSQL cluster in ``root`` on 127.0.0.1.

    Fast and throwaway: trust authentication on loopback only, ``fsync=off``.

    Raises:
        ClusterError: PostgreSQL is not installed, or the server did not start.
    """
    bin_dir = postgres_bin()
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, PG_SUPERUSER, PG_SUPERUSER)
    pg = Postgres(root, port or free_port())
    if not (pg.data_dir / "PG_VERSION").exists():
        initdb = [str(bin_dir / "initdb"), "-D", str(pg.data_dir), "-U", PG_SUPERUSER]
        initdb += ["-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"]
        _run(_as_postgres_user(initdb), "initdb")
    options = f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    options += " -c max_connections=200"
    start = [str(bin_dir / "pg_ctl"), "-D", str(pg.data_dir), "-l", str(root / "postgres.log")]
    _run(_as_postgres_user([*start, "-w", "-t", "60", "-o", options, "start"]), "pg_ctl start")
    return pg


def stop_postgres(pg: Postgres) -> None:
    """Stop the server (fast shutdown); a server already stopped is fine."""
    command = [str(postgres_bin() / "pg_ctl"), "-D", str(pg.data_dir), "-m", "fast", "-w"]
    try:
        _run(_as_postgres_user([*command, "stop"]), "pg_ctl stop")
    except ClusterError as exc:
        if pg.running():
            raise
        log.debug("PostgreSQL already stopped: %s", exc)


# -- nginx -----------------------------------------------------------------------------------


def nginx_binary() -> str:
    """The nginx executable."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if not found:
        raise ClusterError("nginx is not installed. Install it with: apt-get install -y nginx")
    return found


def render_nginx_config(listen_port: int, replica_ports: list[int], root: Path) -> str:
    """``deploy/nginx.conf`` with the listen port, the replicas and the state folder."""
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in replica_ports
    )
    user = "user root;" if os.geteuid() == 0 else ""
    return (
        NGINX_TEMPLATE.read_text(encoding="utf-8")
        .replace("{{USER}}", user)
        .replace("{{ROOT}}", str(root))
        .replace("{{LISTEN}}", f"127.0.0.1:{listen_port}")
        .replace("{{SERVERS}}", servers)
    )


def start_nginx(root: Path, listen_port: int, replica_ports: list[int]) -> int:
    """Write the configuration into ``root/nginx`` and start nginx; returns its pid."""
    folder = root / "nginx"
    for sub in ("", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(render_nginx_config(listen_port, replica_ports, folder), encoding="utf-8")
    binary = nginx_binary()
    _run([binary, "-t", "-q", "-p", str(folder), "-c", str(conf)], "nginx -t")
    _run([binary, "-p", str(folder), "-c", str(conf)], "nginx")
    pid_file = folder / "nginx.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists():
        if time.monotonic() > deadline:
            raise ClusterError(f"nginx did not start; see {folder / 'error.log'}")
        time.sleep(0.05)
    return int(pid_file.read_text().strip())


# -- replicas --------------------------------------------------------------------------------


def replica_environment(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of one merchant replica on the shared database."""
    env = dict(os.environ)
    env.update(
        {
            "SUPPORTBOT_CHAT__DATABASE_URL": database_url,
            "SUPPORTBOT_CHAT__AGENT_PROFILE": "false",
            "CHAINLIT_APP_ROOT": str(REPO_ROOT),
        }
    )
    env.update(extra or {})
    return env


def start_replica(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start one ``chainlit run bot/app.py`` replica on 127.0.0.1:port (not waiting)."""
    command = [sys.executable, "-m", "chainlit", "run", str(REPO_ROOT / "bot" / "app.py")]
    command += ["--headless", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("ab") as out:
        # Its own session: a Ctrl-C in the shell that ran `cluster up` does not reach it.
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_until_serving(url: str, timeout: float, alive: subprocess.Popen | None = None) -> float:
    """Seconds until ``url`` answers HTTP 200; raises ClusterError after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if alive is not None and alive.poll() is not None:
            raise ClusterError(f"the replica behind {url} exited with {alive.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise ClusterError(f"{url} did not answer within {timeout:.0f} s")


# -- the whole cluster -----------------------------------------------------------------------


@dataclass
class ClusterState:
    """What ``cluster up`` started (saved as ``cluster.json`` for ``cluster down``)."""

    root: str
    url: str
    database_url: str
    postgres_port: int
    postgres_root: str
    nginx_pid: int = 0
    replicas: list[dict[str, int]] = field(default_factory=list)  # {"port", "pid"}


def cluster_up(
    root: Path,
    replicas: int = 2,
    port: int = 8080,
    extra_env: dict[str, str] | None = None,
    timeout: float = 120,
) -> ClusterState:
    """Start PostgreSQL, ``replicas`` chat replicas and nginx; returns what runs where.

    Raises:
        ClusterError: Something is missing or did not start (what started is stopped).
    """
    from bot.persistence import create_schema

    root = root.resolve()
    if (root / STATE_FILE).exists():
        raise ClusterError(
            f"A cluster is already up in {root}; stop it with: supportbot cluster down"
        )
    root.mkdir(parents=True, exist_ok=True)
    # The database lives in its own temporary folder: the server runs as the postgres
    # user, who may not be able to enter ``root`` (e.g. a private home or tmp folder).
    pg = start_postgres(Path(tempfile.mkdtemp(prefix="supportbot-cluster-pg-")))
    state = ClusterState(str(root), f"http://127.0.0.1:{port}", pg.url(), pg.port, str(pg.root))
    _save(root, state)
    try:
        if DATABASE not in pg.psql("SELECT datname FROM pg_database").split():
            pg.create_database(DATABASE)
        create_schema(state.database_url)
        env = replica_environment(state.database_url, extra_env)
        procs = []
        for n in range(replicas):
            replica_port = free_port()
            proc = start_replica(replica_port, env, root / f"replica-{n + 1}.log")
            procs.append((replica_port, proc))
            state.replicas.append({"port": replica_port, "pid": proc.pid})
            _save(root, state)
        for replica_port, proc in procs:
            wait_until_serving(f"http://127.0.0.1:{replica_port}/", timeout, proc)
        state.nginx_pid = start_nginx(root, port, [p for p, _ in procs])
        _save(root, state)
        wait_until_serving(state.url + "/", 30)
    except BaseException:
        cluster_down(root)
        raise
    return state


def _save(root: Path, state: ClusterState) -> None:
    (root / STATE_FILE).write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")


def load_state(root: Path) -> ClusterState | None:
    """The cluster started in ``root``, or None."""
    try:
        return ClusterState(**json.loads((root / STATE_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _terminate(pid: int, timeout: float = 20) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it if it is our child; otherwise just probe it.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def cluster_down(root: Path) -> bool:
    """Stop nginx, the replicas and PostgreSQL started in ``root``; False if none was up."""
    root = root.resolve()
    state = load_state(root)
    if state is None:
        return False
    if state.nginx_pid:
        _terminate(state.nginx_pid)
    for replica in state.replicas:
        _terminate(int(replica["pid"]))
    stop_postgres(Postgres(Path(state.postgres_root), state.postgres_port))
    shutil.rmtree(state.postgres_root, ignore_errors=True)
    (root / STATE_FILE).unlink(missing_ok=True)
    return True
