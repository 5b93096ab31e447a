"""The published OpenAPI document as a test's oracle: every answer a test receives, and
every event of a stream, is checked against what the document promises."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from jsonschema import Draft202012Validator

from syncd.openapi import EVENT_STREAM, openapi_document

DOCUMENT = openapi_document()


class Broken(AssertionError):
    """An answer or event the document does not allow."""


def _validate(schema: dict[str, Any], instance: Any, what: str) -> None:
    # The components ride along, so that the document's own $refs resolve.
    rooted = {**schema, "components": DOCUMENT["components"]}
    errors = sorted(Draft202012Validator(rooted).iter_errors(instance), key=str)
    if errors:
        raise Broken(f"{what} breaks the document: {errors[0].message} in {instance!r}")


def check_answer(method: str, path: str, status: int, content_type: str, body: bytes) -> bool:
    """Raise Broken unless the document allows this answer; False for a path or method it
    does not describe (the page, /docs, a path that is not there)."""
    operation = DOCUMENT["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return False
    what = f"{method} {path} {status}"
    answer = operation["responses"].get(str(status))
    if answer is None:
        raise Broken(f"{what}: the status is not documented")
    media = content_type.split(";")[0].strip()
    if media not in answer["content"]:
        raise Broken(f"{what}: {media} is not documented, {list(answer['content'])} is")
    if media == "application/json":
        _validate(answer["content"][media]["schema"], json.loads(body), what)
    return True


def check_event(name: str, data: str) -> None:
    """One parsed event, as a client that reads the document under OpenAPI 3.1 checks it:
    its name among the published ones, its data JSON of the event's own schema."""
    stream = DOCUMENT["paths"]["/api/batch-sync/events"]["get"]["responses"]["200"]
    schema = stream["content"][EVENT_STREAM]["schema"]
    _validate(schema, {"event": name, "data": data}, f"event {name}")
    (published,) = [
        each["properties"]["data"]
        for each in schema["oneOf"]
        if each["properties"]["event"]["const"] == name
    ]
    assert published["contentMediaType"] == "application/json"
    _validate(published["contentSchema"], json.loads(data), f"event {name}")


async def checking_answers(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    """A client middleware: each answer is read and checked before the test sees it."""
    response = await handler(request)
    if response.content_type != EVENT_STREAM:
        body = await response.read()  # kept by the response for the test's own reads
        check_answer(request.method, request.url.path, response.status, response.content_type, body)
    return response


class Recording:
    """Everything an event stream sends, kept as it comes: the events (each as sent, and
    parsed), and the keep-alives."""

    def __init__(self, stream: aiohttp.ClientResponse) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[tuple[str, str]] = []
        self.keep_alives = 0
        self._task = asyncio.ensure_future(self._record(stream))

    async def _record(self, stream: aiohttp.ClientResponse) -> None:
        while True:
            block = (await stream.content.readuntil(b"\n\n")).decode()
            if block == ": keep-alive\n\n":
                self.keep_alives += 1
            elif not block.startswith("retry:"):
                fields = dict(line.split(": ", 1) for line in block.strip().splitlines())
                self.raw.append((fields["event"], fields["data"]))
                self.events.append((fields["event"], json.loads(fields["data"])))

    def named(self, event: str, sync_name: str) -> list[dict[str, Any]]:
        return [d for n, d in self.events if n == event and d["sync_name"] == sync_name]

    def finished(self, sync_name: str) -> list[dict[str, Any]]:
        return self.named("run_finished", sync_name)

    async def until(self, predicate: Any, within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                assert not self._task.done(), self._task
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._task.cancel()


Checker = Callable[[ClientRequest, ClientHandlerType], Awaitable[ClientResponse]]
MIDDLEWARES: tuple[Checker, ...] = (checking_answers,)
