"""Rollouts and lineage over REST: ``GET/PUT/DELETE /v2/models/{m}/rollout`` (``admin``) and
``GET /v2/models/{m}/versions/{v}/lineage`` (``read``)."""

from __future__ import annotations

import orjson
from aiohttp import web

from appliance.appkeys import CONTEXT, PARTS
from appliance.errors import ModelNotFound
from appliance.lifecycle.lineage import lineage
from appliance.protocol.body import json_object


def _json(doc: object) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def show_rollout(request: web.Request) -> web.Response:
    return _json(request.app[PARTS].rollouts.show(request.match_info["model"]))


async def put_rollout(request: web.Request) -> web.Response:
    doc = json_object(await request.read(), "a rollout")
    ctx = request[CONTEXT]
    ctx.model = request.match_info["model"]
    return _json(await request.app[PARTS].rollouts.put(ctx.model, doc, ctx.principal))


async def delete_rollout(request: web.Request) -> web.Response:
    ctx = request[CONTEXT]
    ctx.model = request.match_info["model"]
    await request.app[PARTS].rollouts.remove(ctx.model, ctx.principal)
    return web.Response(status=204)


async def version_lineage(request: web.Request) -> web.Response:
    parts = request.app[PARTS]
    name, version = request.match_info["model"], request.match_info["version"]
    if not version.isdigit():
        raise ModelNotFound(f"model '{name}' has no version '{version}'")
    return _json(lineage(parts.repository, parts.rollouts.router, name, int(version)))


ROUTES = [
    web.get("/v2/models/{model}/rollout", show_rollout),
    web.put("/v2/models/{model}/rollout", put_rollout),
    web.delete("/v2/models/{model}/rollout", delete_rollout),
    web.get("/v2/models/{model}/versions/{version}/lineage", version_lineage),
]
