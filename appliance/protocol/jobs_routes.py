"""REST front end of batch jobs: ``POST /v2/jobs``, ``GET /v2/jobs[/{job}]``, ``DELETE /v2/jobs/{job}``.

Thin like the inference routes: decode, check the principal may infer on the model the body names
(the route table's ``infer`` scope cannot see a model in a body), call the job manager, encode.
A principal sees and cancels its own jobs; one with the ``admin`` scope sees all of them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from appliance.appkeys import PARTS, PRINCIPAL
from appliance.auth.principal import ADMIN, ANONYMOUS, INFER, Principal
from appliance.errors import Forbidden, JobNotFound
from appliance.jobs.manager import JobManager
from appliance.processes.peers import PRINCIPAL_HEADER, SEE_ALL_HEADER
from appliance.protocol.body import json_object


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _manager(request: web.Request) -> tuple[JobManager, Principal]:
    manager = request.app[PARTS].jobs
    if not manager.enabled:
        raise JobNotFound("the jobs API is off: the operator has not set jobs.data_dir")
    return manager, request.get(PRINCIPAL, ANONYMOUS)


async def submit_job(request: web.Request) -> web.Response:
    manager, principal = _manager(request)
    body = json_object(await request.read(), "a job")
    model = body.get("model")
    if isinstance(model, str) and not principal.may(INFER, model):
        raise Forbidden(f"'{principal.name}' lacks the 'infer' scope for model '{model}'")
    status = manager.submit(principal.name, body)
    return _json(status.as_dict(), 201)


def _asking(principal: Principal) -> dict[str, str]:
    """Who asks, for the other workers (a job lives on the worker that took its submission)."""
    return {PRINCIPAL_HEADER: principal.name, SEE_ALL_HEADER: "1" if principal.may(ADMIN) else "0"}


async def list_jobs(request: web.Request) -> web.Response:
    manager, principal = _manager(request)
    mine = None if principal.may(ADMIN) else principal.name
    jobs = [s.as_dict() for s in manager.list(mine)]
    peers = request.app[PARTS].peers
    if peers is not None:
        for answer in await peers.each("GET", "/jobs", _asking(principal)):
            if answer.status == 200:
                jobs += orjson.loads(answer.body)
    return _json({"jobs": jobs})


async def get_job(request: web.Request) -> web.Response:
    manager, principal = _manager(request)
    try:
        return _json(manager.get(request.match_info["job"], principal.name, principal.may(ADMIN)).as_dict())
    except JobNotFound as missing:
        return await _from_peers(request, "GET", principal, missing)


async def cancel_job(request: web.Request) -> web.Response:
    manager, principal = _manager(request)
    try:
        status = await manager.cancel(request.match_info["job"], principal.name, principal.may(ADMIN))
    except JobNotFound as missing:
        return await _from_peers(request, "DELETE", principal, missing)
    return _json(status.as_dict())


async def _from_peers(request: web.Request, method: str, principal: Principal, missing: JobNotFound) -> web.Response:
    """The answer of the worker that holds the job; ``missing`` again when no worker does."""
    peers = request.app[PARTS].peers
    found = None
    if peers is not None:
        path = f"/jobs/{quote(request.match_info['job'], safe='')}"
        found = await peers.first_found(method, path, _asking(principal))
    if found is None:
        raise missing
    return web.Response(body=found, content_type="application/json")
