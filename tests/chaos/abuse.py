"""Scenario 8's ammunition: malformed requests, slow clients and the healthz probe.

Every malformed request here must be refused with a 4xx and a JSON body that says why; none
may start a run, and none may get a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

PREFIX = "/api/batch-sync"

SQL_NAMES = [
    "items'; DROP TABLE syncd.runs; --",
    'items"; DROP SCHEMA syncd CASCADE; --',
    "' OR '1'='1",
    "items) UNION SELECT passwd FROM pg_shadow --",
    "items; SELECT pg_sleep(30)",
    "1; COPY (SELECT 1) TO PROGRAM 'touch /tmp/syncd-chaos-pwned'",
    "$$; TRUNCATE public.items; $$",
    "items\\'; DELETE FROM syncd.sync_state; --",
]
TRAVERSAL_NAMES = [
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "..\\..\\windows\\win.ini",
    "/etc/passwd",
    "items/../../../etc/shadow",
    "%2e%2e%2f%2e%2e%2f",
    "....//....//etc/passwd",
    "items\x00../../etc/passwd",
]
TRAVERSAL_PATHS = [
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
    "/static/%2e%2e%2f%2e%2e%2fconfig.py",
    "/static/page.js%00.txt",
    "/docs/static/../../../../etc/passwd",
    "/docs/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/docs/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fsyncd%2fconfig.py",
    "/api/batch-sync/../../../etc/passwd",
    "//etc/passwd",
    "/static/..%5c..%5c..%5cetc%5cpasswd",
]


@dataclass(frozen=True)
class Bad:
    """One malformed request and the statuses that would be right for it."""

    kind: str
    method: str
    path: str
    """Raw and already encoded: sent as it is, dot segments and all."""
    expect: tuple[int, ...]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    chunked_bytes: int = 0
    """Send this many bytes as a chunked body instead of ``body``."""


def malformed(token: str, sync: str, count: int, rng: random.Random) -> list[Bad]:
    """``count`` malformed requests drawn from every kind, in a shuffled order."""
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    start = f"{PREFIX}/start"

    def post(kind: str, body: bytes, expect: tuple[int, ...] = (400,), path: str = start) -> Bad:
        return Bad(kind, "POST", path, expect, auth, body)

    def as_json(value: Any) -> bytes:
        return json.dumps(value).encode()

    good_body = as_json({"sync_name": sync})
    kinds: list[Bad] = []
    # Missing or wrong tokens, on requests that would otherwise be valid.
    for header in [
        None, "Bearer wrong", f"Bearer {token}x", f"Bearer {token[:-1]}", f"Basic {token}",
        "Bearer", token, f"Bearer  {token}", f"Bearer {token.upper()}", "Bearer " + "A" * 4000,
        f"Token {token}",
    ]:  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Authorization"] = header
        for path in (start, f"{PREFIX}/start-sync", f"{PREFIX}/reset"):
            kinds.append(Bad("token", "POST", path, (401,), headers, good_body))
    # Bad JSON.
    for raw in [
        b"{", b'{"batch_size": }', b"nul", b"[1, 2", b"{'sync_name': 'items'}", b"\xff\xfe\x00",
        b'{"sync_name": "items"} trailing', b'"just a string"', b"123", b"null", b"true", b"[]",
        b"[" * 40_000, b'{"a":' * 12_000, b'{"sync_name": "items",}', b"\x00\x00\x00",
    ]:  # fmt: skip
        kinds.append(post("bad json", raw))
    kinds.append(post("bad json", b'{"sync_name": "\\ud800"}', (400, 404)))
    # Wrong types and values.
    for value in [
        {"batch_size": "abc"}, {"batch_size": ""}, {"batch_size": "10.5"}, {"batch_size": -1},
        {"batch_size": 0}, {"batch_size": 100_001}, {"batch_size": 10**20}, {"batch_size": 1.5},
        {"batch_size": True}, {"batch_size": False}, {"batch_size": []}, {"batch_size": {}},
        {"sync_name": 5}, {"sync_name": 1.0}, {"sync_name": True}, {"sync_name": []},
        {"sync_name": {}}, {"sync_name": ""}, {"sync_name": "x" * 201},
        {"sync_name": sync, "drop": 1}, {"SYNC_NAME": sync}, {"batch_size": None},
        {"sync_name": None}, {"sync_name": sync, "batch_size": -5},
    ]:  # fmt: skip
        kinds.append(post("wrong type", as_json(value)))
    for raw in [b'{"batch_size": NaN}', b'{"batch_size": Infinity}', b'{"batch_size": 1e400}']:
        kinds.append(post("wrong type", raw))
    for query in [
        "batch_size=abc", "batch_size=", "batch_size=-5", "batch_size=0x10", "batch_size=1e3",
        "batch_size=%00", "batch_size=99999999999999999999", f"sync_name={sync}&sync_name={sync}",
        "sync_name=", "sync_name=" + "y" * 300,
    ]:  # fmt: skip
        kinds.append(post("wrong type", good_body, path=f"{start}?{query}"))
    for query in ["limit=0", "limit=-1", "limit=abc", "limit=1001", "limit=%20", "limit=1e3"]:
        kinds.append(Bad("wrong type", "GET", f"{PREFIX}/runs?sync_name={sync}&{query}", (400,)))
    # Huge bodies.
    for size in (64 * 1024 + 1, 1024 * 1024, 8 * 1024 * 1024):
        kinds.append(post("huge body", b" " * (size - 2) + b"{}", (413,)))
    kinds.append(post("huge body", as_json({"sync_name": "x" * 200_000}), (413,)))
    kinds.append(Bad("huge body", "POST", start, (413,), auth, None, chunked_bytes=2 * 1024 * 1024))
    # Unknown syncs, names that try to traverse paths or carry SQL.
    for kind, names in [
        ("unknown sync", ["nope", "ITEMS", "items ", " items", "itéms", "items\u200b"]),
        ("path traversal", TRAVERSAL_NAMES),
        ("sql in name", SQL_NAMES),
    ]:
        for name in names:
            quoted = URL.build(query={"sync_name": name}).raw_query_string
            kinds.append(post(kind, as_json({"sync_name": name}), (404,)))
            kinds.append(post(kind, b"", (404,), path=f"{PREFIX}/start-sync?{quoted}"))
            kinds.append(post(kind, b"", (404,), path=f"{PREFIX}/reset?{quoted}"))
            for endpoint in ("status", "count", "runs"):
                kinds.append(Bad(kind, "GET", f"{PREFIX}/{endpoint}?{quoted}", (404,)))
    for path in TRAVERSAL_PATHS:
        kinds.append(Bad("path traversal", "GET", path, (400, 403, 404)))
    # Wrong methods and paths.
    for method, path in [
        ("GET", start), ("PUT", start), ("DELETE", f"{PREFIX}/reset"),
        ("PATCH", f"{PREFIX}/status"), ("PUT", "/healthz"), ("GET", f"{PREFIX}/nope"),
        ("GET", f"{PREFIX}/start/extra"),
        ("GET", "/.env"), ("GET", "/wp-admin/"), ("GET", "/static/nope.js"),
    ]:  # fmt: skip
        kinds.append(Bad("wrong method", method, path, (401, 404, 405), auth))
    rounds = [list(kinds) for _ in range(count // len(kinds) + 1)]
    for batch in rounds:
        rng.shuffle(batch)
    return [request for batch in rounds for request in batch][:count]


@dataclass
class Answer:
    request: Bad
    status: int | None
    body: Any = None
    content_type: str = ""
    error: str | None = None


async def _chunks(total: int) -> AsyncIterator[bytes]:
    piece = b" " * 65536
    for _ in range(total // len(piece)):
        yield piece


async def send(session: aiohttp.ClientSession, base: str, request: Bad) -> Answer:
    url = URL(base + request.path, encoded=True)
    data: Any = _chunks(request.chunked_bytes) if request.chunked_bytes else request.body
    try:
        async with session.request(
            request.method, url, headers=request.headers, data=data, allow_redirects=False
        ) as response:
            text = await response.text(errors="replace")
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            return Answer(request, response.status, body, response.content_type)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(request, None, error=f"{type(exc).__name__}: {exc}")


def judge(answer: Answer) -> str | None:
    """What is wrong with an answer to a malformed request, if anything."""
    request = answer.request
    label = f"{request.kind}: {request.method} {request.path[:80]}"
    if answer.status is None:
        return f"{label}: no answer ({answer.error})"
    if answer.status >= 500:
        return f"{label}: {answer.status} {str(answer.body)[:200]}"
    if answer.status < 400:
        return f"{label}: accepted with {answer.status}"
    if answer.status not in request.expect:
        return f"{label}: {answer.status}, expected {request.expect}: {str(answer.body)[:200]}"
    body = answer.body
    if answer.content_type != "application/json" or not isinstance(body, dict):
        return f"{label}: the {answer.status} body is not JSON ({answer.content_type})"
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        return f"{label}: the {answer.status} body has no message: {body}"
    if "root:" in message or "Traceback" in message:
        return f"{label}: the message leaks something: {message[:200]}"
    return None


async def barrage(
    base: str, requests: list[Bad], *, concurrency: int = 16
) -> tuple[list[Answer], list[str]]:
    """Send every request, ``concurrency`` at a time; returns the answers and what was wrong."""
    queue: asyncio.Queue[Bad] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    answers: list[Answer] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while not queue.empty():
                answers.append(await send(session, base, queue.get_nowait()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    wrong = [problem for answer in answers if (problem := judge(answer)) is not None]
    return answers, wrong


class SlowClients:
    """Connections that trickle a request byte by byte, never finish it, stream events they
    never read, or just sit there."""

    KINDS = ("headers", "body", "idle", "events")

    def __init__(self, host: str, port: int, count: int, token: str) -> None:
        self._host = host
        self._port = port
        self._count = count
        self._token = token
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.opened = 0
        self.closed_by_server = 0
        self.failed_to_open = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._one(self.KINDS[i % len(self.KINDS)]))
            for i in range(self._count)
        ]
        await asyncio.sleep(0.2)

    async def _one(self, kind: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            self.failed_to_open += 1
            return
        self.opened += 1
        try:
            if kind == "headers":
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            elif kind == "body":
                writer.write(
                    f"POST {PREFIX}/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    f"\r\nAuthorization: Bearer {self._token}\r\nContent-Length: 100000\r\n\r\n"
                    '{"sync_name": "never-finished", "padding": "'.encode()
                )
            elif kind == "events":
                writer.write(f"GET {PREFIX}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)
                if kind == "headers":
                    writer.write(b"X-Slow: 1\r\n")
                elif kind == "body":
                    writer.write(b"a")
                if kind != "events" and reader.at_eof():
                    self.closed_by_server += 1
                    return
                await writer.drain()
        except (ConnectionError, OSError):
            self.closed_by_server += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class HealthProbe:
    """``tests.chaos.probe`` in a process of its own."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.chaos.probe", self._url, "0.02",
            stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2],
        )  # fmt: skip

    async def stop(self) -> dict[str, Any]:
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(self._process.communicate(), 30)
        figures: dict[str, Any] = json.loads(output.decode().strip().splitlines()[-1])
        return figures
