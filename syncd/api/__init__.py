"""The HTTP API: the seed's /api/batch-sync/* contract, probes, metrics and docs, the
status page and the event stream that keeps it live, each in a module of its own.
"""

from __future__ import annotations

from aiohttp import web

from syncd.api import stream
from syncd.api.control import (
    count,
    health,
    reset,
    runs,
    start,
    start_sync,
    status,
    syncs,
    verify_start,
)
from syncd.api.http import (
    MAX_BODY_BYTES,
    PREFIX,
    SERVICES,
    Services,
    bearer_token,
    errors_as_json,
    unreachable_reason,
)
from syncd.api.page import page, page_config, page_file
from syncd.api.probes import docs, docs_file, healthz, metrics, openapi, readyz

__all__ = ["SERVICES", "Services", "create_app", "unreachable_reason"]


def create_app(services: Services) -> web.Application:
    app = web.Application(
        middlewares=[errors_as_json, bearer_token], client_max_size=MAX_BODY_BYTES
    )
    app[SERVICES] = services
    app.router.add_post(f"{PREFIX}/start", start)
    app.router.add_post(f"{PREFIX}/start-sync", start_sync)
    app.router.add_get(f"{PREFIX}/status", status)
    app.router.add_post(f"{PREFIX}/reset", reset)
    app.router.add_post(f"{PREFIX}/verify", verify_start)
    app.router.add_get(f"{PREFIX}/count", count)
    app.router.add_get(f"{PREFIX}/health", health)
    app.router.add_get(f"{PREFIX}/syncs", syncs)
    app.router.add_get(f"{PREFIX}/runs", runs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
    app.router.add_get("/docs/static/{name}", docs_file)
    app.router.add_get(f"{PREFIX}/events", stream.events)
    app.router.add_get(f"{PREFIX}/page-config", page_config)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", page_file)
    stream.prepare(app)
    return app
