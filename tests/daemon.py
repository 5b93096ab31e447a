"""``syncd run`` as a subprocess for tests: its JSON log lines, systemd messages and HTTP API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


class Daemon:
    """A ``syncd run`` subprocess with its JSON log lines and systemd messages collected."""

    def __init__(self, config: Path, tmp_path: Path, watchdog_usec: int | None = None) -> None:
        self.config = config
        self.notify_path = str(tmp_path / f"notify-{os.urandom(4).hex()}.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.setblocking(False)
        self.messages: list[str] = []
        self.lines: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self.watchdog_usec = watchdog_usec
        self.port: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.ready_seen_by_readyz: int | None = None

    async def start(self) -> None:
        env = os.environ | {"NOTIFY_SOCKET": self.notify_path}
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "syncd", "-c", str(self.config), "run",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        self._tasks = [
            asyncio.create_task(self._read_logs()),
            asyncio.create_task(self._read_notify()),
        ]

    async def _read_logs(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode()
            self.raw_lines.append(line)
            event = json.loads(line)  # every line must be JSON
            self.lines.append(event)
            if event["event"] == "http_listening":
                self.port = event["port"]

    async def _read_notify(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.notify, 4096)
            message = data.decode()
            if "READY=1" in message and self.port is not None:
                # At the moment READY=1 arrives, readiness must already hold.
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{self.url}/readyz") as answer,
                ):
                    self.ready_seen_by_readyz = answer.status
            self.messages.append(message)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def log_reader_error(self) -> BaseException | None:
        """Why the log reader stopped early (a line that is not JSON, say), if it did."""
        if not self._tasks or not self._tasks[0].done() or self._tasks[0].cancelled():
            return None
        return self._tasks[0].exception()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.lines if e["event"] == name]

    def live_run_ids(self) -> set[str]:
        """Runs this process has logged as started and not (yet) as finished or failed."""
        started = {e["run_id"] for e in self.events("run_started")}
        ended = {
            e.get("run_id") for e in self.lines if e["event"] in ("run_finished", "run_failed")
        }
        return started - ended

    def rss_bytes(self) -> int:
        """Resident memory of the process now, from /proc (Linux)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    async def wait_for(self, predicate: Any, within: float = 30) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; last log lines: {self.raw_lines[-5:]}")
            assert self.process is not None
            if self.log_reader_error is not None:
                raise AssertionError(f"log reader stopped: {self.log_reader_error!r}")
            if self.process.returncode is not None:
                raise AssertionError(
                    f"daemon exited {self.process.returncode}: {self.raw_lines[-5:]}"
                )
            await asyncio.sleep(0.02)

    async def wait_ready(self) -> None:
        await self.wait_for(lambda: any("READY=1" in m for m in self.messages))

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.url}{path}", **kwargs) as answer,
        ):
            return answer.status, await answer.json()

    async def metrics(self) -> list[Sample]:
        return await scrape(self.url)

    async def exited(self) -> tuple[int, str]:
        """The exit code and standard error of a daemon that ends by itself; by then
        ``messages`` holds every systemd message it sent."""
        assert self.process is not None and self.process.stderr is not None
        stderr = await asyncio.wait_for(self.process.stderr.read(), 60)
        code = await asyncio.wait_for(self.process.wait(), 60)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Sent before the process ended, so already waiting in the socket.
        while True:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except BlockingIOError:
                break
        self.notify.close()
        return code, stderr.decode()

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), 60)
        await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.notify.close()
        return code


async def scrape(url: str) -> list[Sample]:
    """Every sample of the /metrics of the syncd at ``url``, as Prometheus would scrape it."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as got:
        text = await got.text()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]
