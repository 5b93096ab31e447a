"""A PostgreSQL cluster of the harness's own, in a temporary directory on a free port, for the
scenarios that restart the target or fill its disk. The shared cluster on 5432 is never
touched: this one runs as the ``postgres`` OS user (PostgreSQL refuses root), started with
``initdb`` and ``pg_ctl`` from the PostgreSQL 15 binaries, and is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import tempfile
from pathlib import Path

BIN = Path(os.environ.get("SYNCD_CHAOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"


class Unavailable(Exception):
    """This machine cannot give the scenario what it needs; the reason says what is missing."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _run(*command: str, cwd: Path | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace").strip()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {text}")
    return text


class PrivateCluster:
    def __init__(self, base: Path, port: int, max_connections: int = 60) -> None:
        self.base = base
        self.port = port
        self.max_connections = max_connections
        self.data = base / "data"
        self.logfile = base / "postgresql.log"
        self.mounts: list[Path] = []

    @property
    def server(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    @classmethod
    async def create(cls, max_connections: int = 60) -> PrivateCluster:
        if os.geteuid() != 0:
            raise Unavailable("needs root, to run initdb and pg_ctl as the postgres user")
        if not (BIN / "initdb").exists():
            raise Unavailable(f"no initdb in {BIN}")
        try:
            user = pwd.getpwnam(OS_USER)
        except KeyError:
            raise Unavailable(f"no {OS_USER} OS user") from None
        base = Path(tempfile.mkdtemp(prefix="syncd-chaos-pg-"))
        os.chown(base, user.pw_uid, user.pw_gid)
        cluster = cls(base, _free_port(), max_connections)
        try:
            await cluster._as_postgres(
                str(BIN / "initdb"), "-D", str(cluster.data), "-U", "postgres", "-A", "trust",
                "--no-sync", "-E", "UTF8", "--locale=C",
            )  # fmt: skip
            await cluster._pg_ctl("start")
        except BaseException:
            await cluster.destroy()
            raise
        return cluster

    async def _as_postgres(self, *command: str) -> str:
        return await _run("runuser", "-u", OS_USER, "--", *command, cwd=self.base)

    async def _pg_ctl(self, action: str, *extra: str) -> str:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
            f" -c max_connections={self.max_connections} -c shared_buffers=64MB -c fsync=off"
        )
        return await self._as_postgres(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
            "-o", options, *extra, action,
        )  # fmt: skip

    async def restart(self, mode: str = "fast") -> None:
        """What ``pg_ctl restart -m MODE`` does, with the signal sent at once (pg_ctl itself
        takes tens of milliseconds to start, long enough to miss a short run): ``fast`` is a
        clean shutdown that ends every session, ``immediate`` a crash, with recovery at the
        next start."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode])
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.01)
        await self._pg_ctl("start")

    async def mount_tmpfs(self, name: str, size_bytes: int) -> Path:
        """A tmpfs of ``size_bytes``, owned by postgres, for a tablespace that can fill up."""
        path = self.base / name
        path.mkdir()
        await _run("mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path))
        self.mounts.append(path)
        user = pwd.getpwnam(OS_USER)
        os.chown(path, user.pw_uid, user.pw_gid)
        return path

    @staticmethod
    async def resize_tmpfs(path: Path, size_bytes: int) -> None:
        await _run("mount", "-o", f"remount,size={size_bytes}", str(path))

    @staticmethod
    def used_bytes(path: Path) -> int:
        stats = os.statvfs(path)
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize

    async def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                await self._as_postgres(
                    str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
                )
        for path in reversed(self.mounts):
            try:
                await _run("umount", str(path))
            except RuntimeError:
                await _run("umount", "-l", str(path))
        self.mounts.clear()
        shutil.rmtree(self.base, ignore_errors=True)
