"""The status page at ``/``: its HTML, its own two files, and what it must know first."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from syncd.api.http import SERVICES, answer
from syncd.payload import (
    PageConfig,
)

STATIC = Path(__file__).parents[1] / "static"
PAGE_FILES = ("page.css", "page.js")
# The page loads its own two files and talks to this daemon, and nothing else: even text that
# slipped past the page's escaping could neither run inline script nor send data elsewhere.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "index.html",
        headers={
            "Content-Security-Policy": PAGE_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


async def page_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in PAGE_FILES:
        raise web.HTTPNotFound()
    # no-cache means "ask again each time": after an upgrade, no browser keeps the old script.
    return web.FileResponse(
        STATIC / name, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    )


async def page_config(request: web.Request) -> web.Response:
    """What the page must know before it acts; nothing here is a secret."""
    api = request.app[SERVICES].runner.config.api
    return answer(
        PageConfig(token_required=api.token is not None, max_batch_size=api.max_batch_size)
    )
