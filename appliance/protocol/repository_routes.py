"""Triton's model-repository extension over REST: index, load, unload (``admin`` for the last two).

``tritonclient``'s ``get_model_repository_index``, ``load_model`` and ``unload_model`` call these
unchanged. Loading with an inline configuration or files (Triton's ``parameters.config`` /
``file:``) is refused: a version enters only through the repository, with its manifest.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from appliance.appkeys import CONTEXT, PARTS
from appliance.errors import InvalidInput, ModelNotReady
from appliance.protocol.body import json_object


async def _body(request: web.Request) -> dict[str, Any]:
    """The optional JSON object these calls carry (``{}`` when the body is empty)."""
    body = await request.read()
    return json_object(body) if body.strip() else {}


async def _parameters(request: web.Request) -> dict[str, Any]:
    parameters = (await _body(request)).get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    return parameters


async def repository_index(request: web.Request) -> web.Response:
    ready = (await _body(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput("'ready' must be true or false")
    rows = request.app[PARTS].models.index(ready_only=ready)
    return web.Response(body=orjson.dumps(rows), content_type="application/json")


async def load(request: web.Request) -> web.Response:
    parameters = await _parameters(request)
    if "config" in parameters or any(key.startswith("file:") for key in parameters):
        raise InvalidInput("loading with an inline config or files is not supported: publish a version "
                           "into the repository (appliance models add) and load it")
    ctx = request[CONTEXT]
    name = request.match_info["model"]
    ctx.model = name
    loaded = await request.app[PARTS].models.load(name, ctx.principal)
    failed = [v for v in loaded if not v.ready]
    if failed and not any(v.ready for v in loaded):
        raise ModelNotReady(f"model '{name}' version {failed[0].version} failed to load: {failed[0].reason}")
    return web.Response(status=200)


async def unload(request: web.Request) -> web.Response:
    await _parameters(request)  # unload_dependents: nothing depends on a model here
    ctx = request[CONTEXT]
    name = request.match_info["model"]
    ctx.model = name
    await request.app[PARTS].models.unload(name, ctx.principal)
    return web.Response(status=200)


ROUTES = [
    web.post("/v2/repository/index", repository_index),
    web.post("/v2/repository/models/{model}/load", load),
    web.post("/v2/repository/models/{model}/unload", unload),
]
