"""A worker's private control socket: what its peers ask of it (``appliance.processes.peers``).

A job lives on the worker that took its submission; the others find it here.

Served on ``<run_dir>/worker-<i>.sock`` in a folder only the service user can enter, so it needs
no credentials of its own; the public routes that lead here (``/metrics``, ``/v2/status``, model
load and unload) already checked the caller's credentials and scope, and the worker that took the
call audits it with the caller's principal.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appliance.appkeys import METRICS, PARTS
from appliance.errors import JobNotFound
from appliance.processes.peers import PRINCIPAL_HEADER, SEE_ALL_HEADER
from appliance.status.snapshot import build


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[METRICS].registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(build(request.app), option=orjson.OPT_SERIALIZE_NUMPY),
                        content_type="application/json")


async def load(request: web.Request) -> web.Response:
    principal = request.headers.get(PRINCIPAL_HEADER, "peer")
    loaded = await request.app[PARTS].models.load(request.match_info["model"], principal, broadcast=False)
    return web.json_response({"loaded": [v.version for v in loaded if v.ready]})


async def unload(request: web.Request) -> web.Response:
    principal = request.headers.get(PRINCIPAL_HEADER, "peer")
    await request.app[PARTS].models.unload(request.match_info["model"], principal, broadcast=False)
    return web.json_response({})


def _asker(request: web.Request) -> tuple[str, bool]:
    return request.headers.get(PRINCIPAL_HEADER, ""), request.headers.get(SEE_ALL_HEADER) == "1"


async def list_jobs(request: web.Request) -> web.Response:
    principal, see_all = _asker(request)
    jobs = request.app[PARTS].jobs.list(None if see_all else principal)
    return web.Response(body=orjson.dumps([j.as_dict() for j in jobs]), content_type="application/json")


async def get_job(request: web.Request) -> web.Response:
    principal, see_all = _asker(request)
    try:
        status = request.app[PARTS].jobs.get(request.match_info["job"], principal, see_all)
    except JobNotFound:
        return web.Response(status=404)
    return web.Response(body=orjson.dumps(status.as_dict()), content_type="application/json")


async def cancel_job(request: web.Request) -> web.Response:
    principal, see_all = _asker(request)
    try:
        status = await request.app[PARTS].jobs.cancel(request.match_info["job"], principal, see_all)
    except JobNotFound:
        return web.Response(status=404)
    return web.Response(body=orjson.dumps(status.as_dict()), content_type="application/json")


def control_app(public: web.Application) -> web.Application:
    """The control routes over the same parts as the public app."""
    app = web.Application()
    for key, value in public.items():  # build() reads the same typed keys the public app carries
        app[key] = value
    app.router.add_routes([
        web.get("/metrics", metrics),
        web.get("/v2/status", status),
        web.post("/models/{model}/load", load),
        web.post("/models/{model}/unload", unload),
        web.get("/jobs", list_jobs),
        web.get("/jobs/{job}", get_job),
        web.delete("/jobs/{job}", cancel_job),
    ])
    return app
