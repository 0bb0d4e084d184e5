"""Handlers of the observability routes: ``/`` (the page), ``/status/{asset}``, ``/v2/status``
(the page's JSON) and ``/metrics`` (Prometheus text). All are read-only (``read`` scope)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appliance import appkeys as keys
from appliance.processes.merge import merge_expositions
from appliance.status.snapshot import build
from appliance.status.workers import merge_status

_HERE = Path(__file__).resolve().parent
_ASSETS = {"index.html": "text/html", "status.css": "text/css", "status.js": "text/javascript"}
#: The page loads only its own files and talks only to its own origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    return (_HERE / name).read_bytes()


def _asset_response(name: str) -> web.Response:
    return web.Response(body=_asset(name), content_type=_ASSETS[name], charset="utf-8", headers=_PAGE_HEADERS)


async def status_page(request: web.Request) -> web.Response:
    return _asset_response("index.html")


async def status_asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    if name not in _ASSETS or name == "index.html":
        raise web.HTTPNotFound()
    return _asset_response(name)


async def status_json(request: web.Request) -> web.Response:
    """This worker's document, or with several workers the whole server's (each worker's inside)."""
    doc = build(request.app)
    peers = request.app[keys.PARTS].peers
    if peers is not None:
        answers = await peers.each("GET", "/v2/status")
        doc = merge_status(peers.identity.index, doc,
                           {a.index: orjson.loads(a.body) if a.status == 200 else None for a in answers})
    return web.Response(body=orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY),
                        content_type="application/json", headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text of the whole server: with several workers, theirs merged (``processes.merge``)."""
    body = generate_latest(request.app[keys.METRICS].registry)
    peers = request.app[keys.PARTS].peers
    if peers is not None:
        answers = await peers.each("GET", "/metrics")
        body = merge_expositions([(str(peers.identity.index), body.decode()),
                                  *((str(a.index), a.body.decode()) for a in answers if a.status == 200)])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
