"""A throwaway PostgreSQL cluster for the tests: Debian's `postgresql` binaries, a fresh cluster in
a temporary folder, listening only on a unix socket in that folder (no TCP address at all).

PostgreSQL refuses to run as root and CI runs as root: the cluster then runs as `nobody` (through
`runuser`), and the folder is handed to that user. The tests connect as the cluster's superuser
only to create databases; the service connects as `amanat`, a role that may log in and owns its
database, nothing more (the least privilege docs/deploy.md recommends).

    cluster = PostgresCluster.start()
    url = cluster.new_database()      # postgresql+asyncpg://amanat@/t1?host=/tmp/amanat-pg-...
    query(url, "SELECT count(*) FROM submissions")
    cluster.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

T = TypeVar("T")
SUPERUSER = "postgres"
SERVICE_ROLE = "amanat"


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder (/usr/lib/postgresql/N/bin), if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from synchronous code, even inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass
class PostgresCluster:
    folder: Path
    bin: Path
    user: str | None  # whom the server runs as (None: this process's user)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.folder

    @classmethod
    def start(cls) -> PostgresCluster:
        pg_bin = postgres_bin()
        if pg_bin is None:
            raise FileNotFoundError("PostgreSQL is not installed (Debian: apt install postgresql)")
        user = "nobody" if os.geteuid() == 0 else None
        # A short path under /tmp: a unix socket's path is limited to ~107 bytes.
        folder = Path(tempfile.mkdtemp(prefix="amanat-pg-"))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        cluster = cls(folder, pg_bin, user)
        try:
            cluster._initdb()
            cluster._pg_ctl("start", "-w", "-t", "60", "-l", str(folder / "server.log"), "-o",
                            f"-c listen_addresses='' -c unix_socket_directories='{folder}'"
                            " -c fsync=off -c full_page_writes=off")
            cluster.psql(f"CREATE ROLE {SERVICE_ROLE} LOGIN")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _as_user(self, command: Sequence[str]) -> list[str]:
        if self.user is None:
            return list(command)
        return ["runuser", "-u", self.user, "--", *command]

    def _initdb(self) -> None:
        subprocess.run(
            self._as_user([str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                           "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]),
            check=True, capture_output=True, cwd=self.folder, timeout=120,
        )

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(self._as_user([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), *args]),
                       check=True, capture_output=True, cwd=self.folder, timeout=120)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser through psql; returns its unaligned output."""
        result = subprocess.run(
            [str(self.bin / "psql"), "-h", str(self.socket_dir), "-U", SUPERUSER, "-d", database,
             "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=True, capture_output=True, text=True, timeout=120,
        )
        return result.stdout

    def new_database(self) -> str:
        """A new, empty database owned by the service role; returns its SQLAlchemy URL."""
        name = f"t{next(self._names)}"
        self.psql(f"CREATE DATABASE {name} OWNER {SERVICE_ROLE}")
        return f"postgresql+asyncpg://{SERVICE_ROLE}@/{name}?host={self.socket_dir}"

    def checkpoint(self) -> None:
        """Write every dirty page to the data files, so they show what the tables hold."""
        self.psql("CHECKPOINT")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")
        shutil.rmtree(self.folder, ignore_errors=True)


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a query (`?` placeholders, as sqlite3 takes them) in the database of `url`."""
    import asyncpg

    numbered = itertools.count(1)
    statement = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)
    parsed = make_url(url)

    async def fetch() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(user=parsed.username, database=parsed.database,
                                           host=parsed.query["host"])
        try:
            return [tuple(row) for row in await connection.fetch(statement, *args)]
        finally:
            await connection.close()

    return run_async(fetch())
