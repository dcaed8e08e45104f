"""A throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a free loopback port.

``initdb`` refuses to run as root, so when we are root the cluster is created and run as the
``postgres`` system user, in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hangar.testing.server import free_port


def find_pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent  # /usr/local/bin may hold only a few symlinks
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresCluster:
    def __init__(self) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries not found (install the postgresql package)")
        self.bin = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hangar-pg-"))
        self.datadir = self.root / "data"
        self.as_postgres = os.geteuid() == 0
        self._dbs = 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresCluster:
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=on -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(self.root / "pg.log"), "-w", "start"
        )
        return self

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database and return its URL."""
        self._dbs += 1
        name = name or f"hangar_{self._dbs}"
        deadline = time.monotonic() + 30
        while True:
            try:
                self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
