"""The systemd notification protocol, spoken directly on $NOTIFY_SOCKET.

No libsystemd: the protocol is one datagram per message. Outside systemd the
variable is unset and every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable

import structlog

log = structlog.get_logger("syncd.notify")


class Notifier:
    def __init__(self, environ: dict[str, str] | os._Environ[str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading "@" and addressed with a NUL.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        if watchdog_usec.isdigit() and int(watchdog_usec) > 0 and for_us:
            self.watchdog_interval = int(watchdog_usec) / 1_000_000 / 2
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> None:
        if not self.enabled:
            return
        if self._socket is None:
            # Non-blocking: a receiver whose queue is full must not stop the event loop.
            self._socket = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.warning("notify_failed", error=str(exc))

    def ready(self) -> None:
        self.send("READY=1", "STATUS=ready")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text.splitlines()[0] if text else ''}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    @contextlib.asynccontextmanager
    async def watchdog(self, healthy: Callable[[], bool] = lambda: True) -> AsyncIterator[None]:
        """Ping from a task on the event loop, so a blocked loop stops the pings, and only
        while ``healthy()`` says so, so that work that is stuck stops them too."""
        if not self.enabled or self.watchdog_interval is None:
            yield
            return
        task = asyncio.create_task(
            self._ping_forever(self.watchdog_interval, healthy), name="syncd-watchdog"
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _ping_forever(self, interval: float, healthy: Callable[[], bool]) -> None:
        while True:
            if healthy():
                self.send("WATCHDOG=1")
            await asyncio.sleep(interval)
