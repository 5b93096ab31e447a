"""The OpenAPI 3 description of the HTTP API, kept true by tests that call every path."""

from __future__ import annotations

from typing import Any

_NAME = {
    "name": "sync_name",
    "in": "query",
    "required": False,
    "description": "The sync; default_sync (or the only sync) when omitted."
    " A sync_name in a JSON body takes precedence.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
}

_ERROR = {
    "type": "object",
    "required": ["status", "message"],
    "properties": {
        "status": {"type": "string"},
        "message": {"type": "string"},
        "run_id": {"type": ["string", "null"]},
    },
}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_SYNC_STATE = {
    "type": "object",
    "required": ["sync_name", "current_offset", "total_synced", "last_sync_at",
                 "is_complete", "total_in_db", "running", "run_id", "position",
                 "rows_per_second", "source_rows_estimate", "last_error", "next_run_at"],
    "properties": {
        "sync_name": {"type": "string"},
        "source": {"type": "string"},
        "target_table": {"type": "string"},
        "current_offset": {"type": "integer", "description": "Rows read since the last reset."},
        "total_synced": {"type": "integer", "description": "Rows written since the last reset."},
        "last_sync_at": _TIME,
        "is_complete": {"type": "boolean"},
        "total_in_db": {"type": ["integer", "null"]},
        "running": {"type": "boolean"},
        "run_id": {
            "type": ["string", "null"],
            "description": "The running run's, else the queued run's, else the one holding"
            " the sync in another process.",
        },
        "queued": {
            "type": "boolean",
            "description": "A run of the sync waits for a slot (max_concurrent_runs).",
        },
        "queued_at": _TIME,
        "queue_position": {
            "type": ["integer", "null"],
            "description": "1 for the queued run that starts next.",
        },
        "holder": {"type": ["string", "null"]},
        "position": {"type": ["array", "null"], "items": {"type": ["string", "null"]}},
        "rows_per_second": {"type": ["number", "null"]},
        "source_rows_estimate": {"type": ["integer", "null"]},
        "run_rows_read": {"type": ["integer", "null"]},
        "last_run_status": {"type": ["string", "null"]},
        "missing_index": {
            "type": ["string", "null"],
            "description": "The CREATE INDEX the source table lacks, as the last run found:"
            " without it each run reads the table in one pass.",
        },
        "last_error": {"type": ["string", "null"]},
        "schedule": {"type": ["string", "null"]},
        "next_run_at": _TIME,
    },
}  # fmt: skip


_RUN_COUNTS = {
    "type": "object",
    "required": ["running", "queued", "max_concurrent_runs"],
    "properties": {
        "running": {"type": "integer"},
        "queued": {"type": "integer"},
        "max_concurrent_runs": {"type": "integer"},
    },
}
_POOL_USE = {
    "type": "object",
    "description": "One database's connections from the whole daemon.",
    "required": ["pool", "in_use", "idle", "max", "waiting"],
    "properties": {
        "pool": {"type": "string", "description": "target, or source:NAME"},
        "in_use": {"type": "integer"},
        "idle": {"type": "integer"},
        "max": {"type": "integer", "description": "max_connections"},
        "waiting": {"type": "integer", "description": "Runs and requests waiting for one"},
    },
}


_STATUS = {
    "allOf": [
        {"$ref": "#/components/schemas/SyncState"},
        {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["success"]}},
        },
    ]
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "Malformed request",
        401: "Missing or wrong bearer token",
        404: "Unknown sync",
        409: "The sync is already running",
        413: "Request body too large",
        503: "The target database is not reachable (the message says why), or syncd stops",
        500: "Unexpected failure (no details in the response)",
    }
    return {str(c): _json({"$ref": "#/components/schemas/Error"}, meaning[c]) for c in codes}


def openapi_document(max_batch_size: int = 100_000) -> dict[str, Any]:
    """The document for a daemon that accepts batch sizes up to ``max_batch_size``."""
    batch_size = {"type": "integer", "minimum": 1, "maximum": max_batch_size}
    batch_parameter = {
        "name": "batch_size",
        "in": "query",
        "required": False,
        "description": "Rows per batch for this run; the sync's batch_size when omitted."
        " A batch_size in the JSON body takes precedence.",
        "schema": batch_size,
    }
    run_body = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "batch_size": batch_size,
            "sync_name": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    }
    run_ref = {"$ref": "#/components/schemas/RunBody"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "syncd",
            "version": "1",
            "description": "Control and watch syncd's table syncs.",
        },
        "tags": [
            {"name": "Batch Sync", "description": "The batch sync contract, start to reset."},
            {"name": "Operations", "description": "Probes and metrics."},
            {"name": "Status page", "description": "What the page at / is fed with."},
        ],
        "components": {
            "schemas": {
                "Error": _ERROR,
                "SyncState": _SYNC_STATE,
                "Status": _STATUS,
                "RunBody": run_body,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/batch-sync/start": {
                "post": {
                    "tags": ["Batch Sync"],
                    "summary": "Start a sync in the background",
                    "security": [{"bearer": []}, {}],
                    "parameters": [_NAME, batch_parameter],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": run_ref}},
                    },
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "required": [
                                    "status",
                                    "message",
                                    "batch_size",
                                    "sync_name",
                                    "run_id",
                                ],
                                "properties": {
                                    "status": {"type": "string", "enum": ["started", "queued"]},
                                    "message": {"type": "string"},
                                    "batch_size": {"type": "integer"},
                                    "sync_name": {"type": "string"},
                                    "run_id": {"type": "string"},
                                    "queue_position": {"type": "integer"},
                                },
                            },
                            "Started, or queued until a slot is free (a run already queued"
                            " for the sync is the one answered, and takes this batch_size);"
                            " returns at once",
                        ),
                        **_errors(400, 401, 404, 409, 413, 500, 503),
                    },
                }
            },
            "/api/batch-sync/start-sync": {
                "post": {
                    "tags": ["Batch Sync"],
                    "summary": "Run a sync to the end and answer when it is done",
                    "security": [{"bearer": []}, {}],
                    "parameters": [_NAME, batch_parameter],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": run_ref}},
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": [
                                    "status",
                                    "message",
                                    "total_synced",
                                    "batch_size",
                                    "sync_name",
                                    "run_id",
                                    "rows_this_run",
                                ],
                                "properties": {
                                    "status": {"type": "string", "enum": ["complete"]},
                                    "message": {"type": "string"},
                                    "total_synced": {"type": "integer"},
                                    "rows_this_run": {"type": "integer"},
                                    "batch_size": {"type": "integer"},
                                    "sync_name": {"type": "string"},
                                    "run_id": {"type": "string"},
                                },
                            },
                            "The run completed",
                        ),
                        "502": _json(
                            {
                                "type": "object",
                                "required": ["status", "error"],
                                "properties": {
                                    "status": {"type": "string", "enum": ["failed"]},
                                    "message": {"type": "string"},
                                    "error": {"type": ["string", "null"]},
                                    "batch_size": {"type": "integer"},
                                    "sync_name": {"type": "string"},
                                    "run_id": {"type": "string"},
                                },
                            },
                            "The run failed",
                        ),
                        **_errors(400, 401, 404, 409, 413, 500, 503),
                    },
                }
            },
            "/api/batch-sync/status": {
                "get": {
                    "tags": ["Batch Sync"],
                    "summary": "Where a sync stands",
                    "parameters": [_NAME],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Status"}, "The sync's state"),
                        **_errors(400, 404, 500, 503),
                    },
                }
            },
            "/api/batch-sync/reset": {
                "post": {
                    "tags": ["Batch Sync"],
                    "summary": "Start a sync over; the target table's rows are kept",
                    "security": [{"bearer": []}, {}],
                    "parameters": [_NAME],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "message", "sync_name"],
                                "properties": {
                                    "status": {"type": "string", "enum": ["success"]},
                                    "message": {"type": "string"},
                                    "sync_name": {"type": "string"},
                                },
                            },
                            "Reset",
                        ),
                        **_errors(400, 401, 404, 409, 413, 500, 503),
                    },
                }
            },
            "/api/batch-sync/count": {
                "get": {
                    "tags": ["Batch Sync"],
                    "summary": "Rows in the sync's target table",
                    "parameters": [_NAME],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "count", "table"],
                                "properties": {
                                    "status": {"type": "string", "enum": ["success"]},
                                    "count": {"type": "integer"},
                                    "table": {"type": "string"},
                                    "sync_name": {"type": "string"},
                                },
                            },
                            "The count",
                        ),
                        **_errors(400, 404, 500, 503),
                    },
                }
            },
            "/api/batch-sync/health": {
                "get": {
                    "tags": ["Batch Sync"],
                    "summary": "The module's health and its endpoints",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "module", "endpoints"],
                                "properties": {
                                    "status": {"type": "string", "enum": ["healthy"]},
                                    "module": {"type": "string"},
                                    "endpoints": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                            "Healthy",
                        )
                    },
                }
            },
            "/api/batch-sync/syncs": {
                "get": {
                    "tags": ["Batch Sync"],
                    "summary": "Every configured sync with its state and schedule",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "syncs", "runs", "pools"],
                                "properties": {
                                    "status": {"type": "string"},
                                    "syncs": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/SyncState"},
                                    },
                                    "runs": _RUN_COUNTS,
                                    "pools": {"type": "array", "items": _POOL_USE},
                                },
                            },
                            "All syncs",
                        ),
                        **_errors(500, 503),
                    },
                }
            },
            "/api/batch-sync/runs": {
                "get": {
                    "tags": ["Batch Sync"],
                    "summary": "Recent runs of a sync, newest first",
                    "parameters": [_NAME, _LIMIT],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "sync_name", "runs"],
                                "properties": {
                                    "status": {"type": "string"},
                                    "sync_name": {"type": "string"},
                                    "runs": {"type": "array", "items": {"type": "object"}},
                                },
                            },
                            "Runs",
                        ),
                        **_errors(400, 404, 500, 503),
                    },
                }
            },
            "/api/batch-sync/events": {
                "get": {
                    "tags": ["Status page"],
                    "summary": "Server-Sent Events about runs, until syncd stops",
                    "description": "An event named run_queued, run_started, batch_committed or"
                    " run_finished for each run change and batch commit, its data a JSON object"
                    " with at least type, sync_name and run_id; run_queued adds position,"
                    " batch_committed adds rows,"
                    " run_rows_read, rows_per_second and source_rows_estimate, run_finished"
                    " adds status and error."
                    " A comment line keeps an idle stream open every 15 s."
                    " Events are sent at most ten times a second, several at a time;"
                    " a reader that takes nothing for 10 s loses its stream.",
                    "responses": {
                        "200": {
                            "description": "An event stream that ends only when syncd stops",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "503": _json(
                            {"$ref": "#/components/schemas/Error"},
                            "As many streams are open as syncd serves (100)",
                        ),
                    },
                }
            },
            "/api/batch-sync/page-config": {
                "get": {
                    "tags": ["Status page"],
                    "summary": "Whether POSTs need a bearer token, and the largest batch size",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "token_required", "max_batch_size"],
                                "properties": {
                                    "status": {"type": "string", "enum": ["success"]},
                                    "token_required": {"type": "boolean"},
                                    "max_batch_size": {"type": "integer"},
                                },
                            },
                            "What the page needs to know",
                        )
                    },
                }
            },
            "/healthz": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "Liveness: answers while the event loop runs",
                    "responses": {"200": _json({"type": "object"}, "Alive")},
                }
            },
            "/readyz": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "Readiness: the target answers and the scheduler runs",
                    "responses": {
                        "200": _json({"type": "object"}, "Ready"),
                        "503": _json(
                            {
                                "type": "object",
                                "required": ["status", "reasons"],
                                "properties": {
                                    "status": {"type": "string"},
                                    "reasons": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                            "Not ready, with the reasons",
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
