"""What operators and their tools ask: liveness, readiness, metrics, and the OpenAPI
document with its offline Swagger UI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import swagger_ui_bundle
from aiohttp import web

from syncd.api.http import SERVICES, answer, unreachable_reason
from syncd.errors import Unavailable
from syncd.openapi import openapi_document
from syncd.payload import (
    Alive,
    NotReady,
    Ready,
)

DOCS_FILES = ("swagger-ui.css", "swagger-ui-bundle.js")
"""What /docs loads from the Swagger UI package, whose other files include a stock demo page."""


async def healthz(request: web.Request) -> web.Response:
    return answer(Alive())


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    reasons = []
    if services.pool is None:
        reasons.append("the target database has not answered yet")
    else:
        try:
            async with asyncio.timeout(2), services.pool.connection(1, patient=False) as conn:
                await conn.fetchval("SELECT 1")
        except Unavailable as exc:
            reasons.append(str(exc))  # every connection is in use
        except Exception as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                raise
            reasons.append(f"the target database is not reachable: {reason}")
    if not services.schedules.running:
        reasons.append("the scheduler is not running")
    if reasons:
        return answer(NotReady(reasons=reasons), 503)
    return answer(Ready())


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    document = openapi_document(request.app[SERVICES].runner.config.api.max_batch_size)
    return web.json_response(document)


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>syncd API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
</script></body></html>
"""


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


async def docs_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in DOCS_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(Path(swagger_ui_bundle.swagger_ui_path) / name)
