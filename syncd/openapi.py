"""The OpenAPI 3.1 document, assembled from the payload and event models.

Only the table of operations is written down here, as data: each path and method, what it
is about, which model its query, body and answers are. Every schema comes from the models
the handlers validate and answer with (``$defs`` become ``components/schemas``), and the
event stream publishes one schema per event, its data a JSON string of the event's model.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from syncd import payload as p
from syncd.events import EVENT_MODELS, event_name

PROMETHEUS = "text/plain"
EVENT_STREAM = "text/event-stream"
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Answer:
    description: str
    model: object
    """The JSON payload's model (or a union of models), or the media type of an answer
    that is not JSON."""
    follow: tuple[str, ...] = ()
    """Operations (by operationId) that take this answer's sync_name to ask about the same
    sync: OpenAPI links, which clients and stateful tests follow."""


@dataclass(frozen=True)
class Operation:
    id: str
    """Its operationId."""
    method: str
    path: str
    tag: str
    summary: str
    answers: dict[int, Answer]
    query: type[p.Request] | None = None
    body: type[p.Request] | None = None
    secured: bool = False
    """A POST: with api.token set, it needs the bearer token."""
    description: str | None = None
    errors: tuple[int, ...] = ()
    """Status codes answered with ``ERRORS``' meaning and the Error model."""


ERRORS = {
    400: "Malformed request: the message names the field and what is wrong with it",
    401: "Missing or wrong bearer token",
    404: "Unknown sync",
    409: "The sync is already running: the answer names its run",
    413: "Request body too large",
    500: "Unexpected failure (no details in the response)",
    503: "The target database is not reachable (the message says why), or syncd stops",
}
SYNC_VIEWS = ("status", "runs", "count")
RUN_ERRORS = (400, 401, 404, 409, 413, 500, 503)
READ_ERRORS = (400, 404, 500, 503)

EVENTS_DESCRIPTION = (
    "Each event's name is its data's `type`, and its data a JSON object of the event's"
    " schema: a run queued, started, a batch committed, a chunk of a parallel load claimed,"
    " committed, taken over or lost by a worker of this daemon, a run finished, a sync reset,"
    " a sync turned stale or fresh, a verify ended. A comment line keeps an idle stream open"
    " every 15 s. Events are sent at most ten times a second, several at a time; a reader that"
    " takes nothing for 10 s loses its stream, and one that falls behind misses events."
)

OPERATIONS = (
    Operation("start", "post", "/api/batch-sync/start", "Batch Sync",
              "Start a sync in the background",
              query=p.RunQuery, body=p.RunBody, secured=True, errors=RUN_ERRORS, answers={
                  202: Answer("Started, or queued until a slot is free (a run already queued"
                              " for the sync is the one answered, and takes this batch_size);"
                              " returns at once", p.Started | p.Queued, follow=SYNC_VIEWS),
              }),
    Operation("startSync", "post", "/api/batch-sync/start-sync", "Batch Sync",
              "Run a sync to the end and answer when it is done",
              query=p.RunQuery, body=p.RunBody, secured=True, errors=RUN_ERRORS, answers={
                  200: Answer("The run completed", p.Completed, follow=SYNC_VIEWS),
                  202: Answer("The run goes on past api.start_sync_wait (30 s): follow it"
                              " at the URLs given, also in the Location header",
                              p.StillRunning, follow=SYNC_VIEWS),
                  502: Answer("The run failed", p.Failed),
              }),
    Operation("status", "get", "/api/batch-sync/status", "Batch Sync", "Where a sync stands",
              query=p.NameQuery, errors=READ_ERRORS,
              answers={200: Answer("The sync's state", p.Status)}),
    Operation("reset", "post", "/api/batch-sync/reset", "Batch Sync",
              "Start a sync over; the target table's rows are kept",
              query=p.NameQuery, body=p.NameBody, secured=True, errors=RUN_ERRORS,
              answers={200: Answer("Reset", p.ResetDone, follow=SYNC_VIEWS)}),
    Operation("verify", "post", "/api/batch-sync/verify", "Batch Sync",
              "Verify that the target equals the source, in the background",
              body=p.VerifyBody, secured=True, errors=RUN_ERRORS, answers={
                  202: Answer("Started; its outcome comes as a `verify` event, and in the"
                              " status' last_verify", p.VerifyStarted, follow=("status",)),
              }),
    Operation("count", "get", "/api/batch-sync/count", "Batch Sync",
              "Rows in the sync's target table",
              query=p.NameQuery, errors=READ_ERRORS, answers={200: Answer("The count", p.Count)}),
    Operation("health", "get", "/api/batch-sync/health", "Batch Sync",
              "The module's health and its endpoints",
              answers={200: Answer("Healthy", p.Health)}),
    Operation("syncs", "get", "/api/batch-sync/syncs", "Batch Sync",
              "Every configured sync with its state and schedule",
              errors=(500, 503), answers={200: Answer("All syncs", p.Syncs)}),
    Operation("runs", "get", "/api/batch-sync/runs", "Batch Sync",
              "Recent runs of a sync, newest first",
              query=p.RunsQuery, errors=READ_ERRORS, answers={200: Answer("Runs", p.Runs)}),
    Operation("events", "get", "/api/batch-sync/events", "Status page",
              "Server-Sent Events about runs and syncs, until syncd stops",
              description=EVENTS_DESCRIPTION, answers={
                  200: Answer("An event stream that ends only when syncd stops", EVENT_STREAM),
                  503: Answer("As many streams are open as syncd serves (100)", p.Error),
              }),
    Operation("pageConfig", "get", "/api/batch-sync/page-config", "Status page",
              "Whether POSTs need a bearer token, and the largest batch size",
              answers={200: Answer("What the page needs to know", p.PageConfig)}),
    Operation("healthz", "get", "/healthz", "Operations",
              "Liveness: answers while the event loop runs",
              answers={200: Answer("Alive", p.Alive)}),
    Operation("readyz", "get", "/readyz", "Operations",
              "Readiness: the target answers and the scheduler runs", answers={
                  200: Answer("Ready", p.Ready),
                  503: Answer("Not ready, with the reasons", p.NotReady),
              }),
    Operation("metrics", "get", "/metrics", "Operations", "Prometheus metrics",
              answers={200: Answer("Prometheus text format", PROMETHEUS)}),
)  # fmt: skip

TAGS = [
    {"name": "Batch Sync", "description": "The batch sync contract, start to reset."},
    {"name": "Operations", "description": "Probes and metrics."},
    {"name": "Status page", "description": "What the page at / is fed with."},
]


def openapi_document(max_batch_size: int = p.DEFAULT_MAX_BATCH_SIZE) -> dict[str, Any]:
    """The document for a daemon that accepts batch sizes up to ``max_batch_size``."""
    document = copy.deepcopy(_document())
    schemas = document["components"]["schemas"]
    batch_sizes = [schemas["RunBody"]["properties"]["batch_size"]] + [
        parameter["schema"]
        for item in document["paths"].values()
        for operation in item.values()
        for parameter in operation.get("parameters", ())
        if parameter["name"] == "batch_size"
    ]
    for schema in batch_sizes:
        schema["maximum"] = max_batch_size
    return document


@functools.cache
def _document() -> dict[str, Any]:
    schemas = _Schemas(OPERATIONS)
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "syncd",
            "version": "1",
            "description": "Control and watch syncd's table syncs.",
        },
        "tags": TAGS,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }


@dataclass
class _Schemas:
    """Every model's JSON Schema from one generation, so that each is a component once."""

    operations: Iterable[Operation]
    components: dict[str, Any] = field(init=False)
    _top: dict[tuple[object, JsonSchemaMode], dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        wanted: dict[tuple[object, JsonSchemaMode], TypeAdapter[Any]] = {}
        for operation in self.operations:
            for model in (operation.query, operation.body):
                if model is not None:
                    wanted[model, "validation"] = TypeAdapter(model)
            for answer in operation.answers.values():
                if not isinstance(answer.model, str):
                    wanted[answer.model, "serialization"] = TypeAdapter(cast(Any, answer.model))
        for always in (p.Error, p.BusyError, *EVENT_MODELS):
            wanted[always, "serialization"] = TypeAdapter(cast(Any, always))
        top, definitions = TypeAdapter.json_schemas(
            [(key, key[1], adapter) for key, adapter in wanted.items()], ref_template=REF
        )
        self._top = {key: schema for (key, _), schema in top.items()}
        self.components = definitions.get("$defs", {})
        # Query models are parameters, one per field, not schemas of their own.
        for operation in self.operations:
            if operation.query is not None:
                self.components.pop(operation.query.__name__, None)

    def of(self, model: object, mode: JsonSchemaMode = "serialization") -> dict[str, Any]:
        return self._top[model, mode]

    def parameters(self, query: type[p.Request]) -> list[dict[str, Any]]:
        schema = query.model_json_schema(ref_template=REF)
        return [
            {
                "name": name,
                "in": "query",
                "required": False,
                **({"description": s.pop("description")} if "description" in s else {}),
                "schema": s,
            }
            for name, s in schema["properties"].items()
        ]


def _operation(operation: Operation, schemas: _Schemas) -> dict[str, Any]:
    described: dict[str, Any] = {
        "operationId": operation.id,
        "tags": [operation.tag],
        "summary": operation.summary,
    }
    if operation.description is not None:
        described["description"] = operation.description
    if operation.secured:
        described["security"] = [{"bearer": []}, {}]
    if operation.query is not None:
        described["parameters"] = schemas.parameters(operation.query)
    if operation.body is not None:
        described["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": schemas.of(operation.body, "validation")}},
        }
    responses = {str(code): _answer(answer, schemas) for code, answer in operation.answers.items()}
    for code in operation.errors:
        error = p.BusyError if code == 409 else p.Error
        responses[str(code)] = _answer(Answer(ERRORS[code], error), schemas)
    described["responses"] = dict(sorted(responses.items()))
    return described


def _answer(answer: Answer, schemas: _Schemas) -> dict[str, Any]:
    if answer.model == EVENT_STREAM:
        content = {EVENT_STREAM: {"schema": event_schema()}}
    elif isinstance(answer.model, str):
        content = {answer.model: {"schema": {"type": "string"}}}
    else:
        content = {"application/json": {"schema": schemas.of(answer.model)}}
    described = {"description": answer.description, "content": content}
    if answer.follow:
        described["links"] = {
            f"{target}OfTheSync": {
                "operationId": target,
                "parameters": {"sync_name": "$response.body#/sync_name"},
            }
            for target in answer.follow
        }
    return described


def event_schema() -> dict[str, Any]:
    """One parsed event of the stream, ``{event, data}``, as a client that reads the
    document under OpenAPI 3.1 checks it: the name one of the events', the data a JSON
    text of that event's model."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": [event_name(model) for model in EVENT_MODELS]},
            "data": {"type": "string", "contentMediaType": "application/json"},
        },
        "oneOf": [
            {
                "properties": {
                    "event": {"const": event_name(model)},
                    "data": {
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": REF.format(model=model.__name__)},
                    },
                }
            }
            for model in EVENT_MODELS
        ],
    }
