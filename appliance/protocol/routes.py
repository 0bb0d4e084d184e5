"""REST routes of the Open Inference Protocol (plus Triton's model config). Handlers stay thin:
decode, call the service, encode."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
from aiohttp import web

from appliance import __version__, modelinfo
from appliance.appkeys import AUDIT, CONTEXT, PARTS, REPOSITORY, SERVICE, SETTINGS, STATE
from appliance.dataplane.context import RequestContext
from appliance.dataplane.tensors import InferRequest
from appliance.errors import InvalidInput, ModelNotReady
from appliance.protocol import jobs_routes as jobs
from appliance.protocol import openai_routes, repository_routes, rollout_routes
from appliance.protocol.body import read_body
from appliance.protocol.codec import HEADER_LENGTH, EncodedBody, decode_request, encode_response
from appliance.status import handlers as status

_OFFLOAD_DECODE_BYTES = 1 << 20  # decode bodies above 1 MiB in a thread, off the event loop
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository"]


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


async def server_metadata(request: web.Request) -> web.Response:
    return json_response({"name": "model-appliance", "version": __version__, "extensions": EXTENSIONS})


async def live(request: web.Request) -> web.Response:
    return json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    is_ready = state.ready and not request.app[SERVICE].draining and request.app[REPOSITORY].all_ready()
    audit = request.app[AUDIT].health()  # strict audit that cannot commit: every answer would be 503
    if is_ready and not audit.ready:
        return json_response({"ready": False, "reason": audit.reason}, 503)
    worker = request.app[PARTS].worker
    if is_ready and worker is not None and not worker.all_ready():  # ready only when every worker is
        return json_response({"ready": False, "reason": "not every worker process is ready"}, 503)
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


def _version_param(request: web.Request) -> str | None:
    return request.match_info.get("version") or None


async def model_metadata(request: web.Request) -> web.Response:
    return json_response(modelinfo.model_metadata(request.app[REPOSITORY], request.match_info["model"],
                                                  _version_param(request)))


async def model_ready(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    try:
        request.app[REPOSITORY].resolve(name, _version_param(request))
    except ModelNotReady:
        return json_response({"name": name, "ready": False}, 503)
    return json_response({"name": name, "ready": True})


async def model_config(request: web.Request) -> web.Response:
    """Triton's configuration endpoint (perf_analyzer and Triton clients ask for it)."""
    return json_response(modelinfo.triton_config(request.app[REPOSITORY], request.match_info["model"],
                                                 _version_param(request)))


def _context(request: web.Request) -> RequestContext:
    ctx = request.get(CONTEXT)
    if ctx is None:
        ctx = request[CONTEXT] = RequestContext()
    return ctx


def _apply_headers(ctx: RequestContext, request: web.Request) -> None:
    """REST's own request options: X-Request-Timeout-Ms (wins over the protocol's ``timeout``)
    and Cache-Control: no-cache."""
    header = request.headers.get("X-Request-Timeout-Ms")
    if header is not None:
        try:
            timeout_ms = float(header)
        except ValueError:
            timeout_ms = math.nan
        if not 0 < timeout_ms < math.inf:  # "-5" or "0" was a 504, "nan" no deadline at all
            raise InvalidInput("X-Request-Timeout-Ms must be a positive number of milliseconds")
        ctx.deadline = ctx.started + timeout_ms / 1000
    if "no-cache" in request.headers.get("Cache-Control", ""):
        ctx.use_cache = False


async def infer(request: web.Request) -> web.Response:
    """Decode (only once the service has room for the request), infer, encode."""
    settings = request.app[SETTINGS]
    ctx = _context(request)
    ctx.body_bytes = request.content_length or 0
    ctx.route_keys = request.headers  # a sticky A/B rollout hashes on one of them
    header = request.headers.get(HEADER_LENGTH)
    try:
        header_length = int(header) if header is not None else None
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer") from None
    decoded: InferRequest | None = None

    async def decode() -> InferRequest:
        nonlocal decoded
        body = await read_body(request, settings.http.read_timeout_s)
        max_elements = settings.limits.max_tensor_elements
        if len(body) > _OFFLOAD_DECODE_BYTES:
            decoded = await asyncio.to_thread(decode_request, body, header_length, max_elements)
        else:
            decoded = decode_request(body, header_length, max_elements)
        _apply_headers(ctx, request)
        ctx.apply_parameters(decoded.parameters, settings.limits.default_timeout_ms)
        return decoded

    response = await request.app[SERVICE].infer(ctx, request.match_info["model"], _version_param(request), decode)
    assert decoded is not None  # the service answers only after decode() ran
    if len(response.outputs) and sum(a.nbytes for a in response.outputs.values()) > _OFFLOAD_DECODE_BYTES:
        encoded = await asyncio.to_thread(encode_response, response, decoded)
    else:
        encoded = encode_response(response, decoded)
    return _encoded_response(request, encoded, ctx)


def _encoded_response(request: web.Request, encoded: EncodedBody, ctx: RequestContext) -> web.Response:
    headers = {"X-Cache": "HIT" if ctx.cache_hit else "MISS", "X-Model-Version": ctx.version}
    if ctx.batch_size:
        headers["X-Batch-Size"] = str(ctx.batch_size)
    if encoded.header_length is not None:
        headers[HEADER_LENGTH] = str(encoded.header_length)
    response = web.Response(body=encoded.body, headers=headers, content_type=encoded.content_type)
    if (encoded.header_length is None
            and len(encoded.body) >= request.app[SETTINGS].http.compress_min_bytes
            and "gzip" in request.headers.get("Accept-Encoding", "")):
        response.enable_compression(web.ContentCoding.gzip)
    return response


async def openapi(request: web.Request) -> web.Response:
    from appliance.protocol.openapi import document

    return json_response(document())


def add_routes(app: web.Application) -> None:
    """The route table, visible at a glance."""
    app.router.add_routes([
        web.get("/v2", server_metadata),
        web.get("/v2/health/live", live),
        web.get("/v2/health/ready", ready),
        web.get("/v2/models/{model}", model_metadata),
        web.get("/v2/models/{model}/ready", model_ready),
        web.get("/v2/models/{model}/config", model_config),
        web.post("/v2/models/{model}/infer", infer),
        web.get("/v2/models/{model}/versions/{version}", model_metadata),
        web.get("/v2/models/{model}/versions/{version}/ready", model_ready),
        web.get("/v2/models/{model}/versions/{version}/config", model_config),
        web.post("/v2/models/{model}/versions/{version}/infer", infer),
        *repository_routes.ROUTES,
        *rollout_routes.ROUTES,
        *openai_routes.ROUTES,  # POST /v1/embeddings (OpenAI-compatible)
        # Batch jobs (infer scope; the model named in the body is checked against the principal).
        web.post("/v2/jobs", jobs.submit_job),
        web.get("/v2/jobs", jobs.list_jobs),
        web.get("/v2/jobs/{job}", jobs.get_job),
        web.delete("/v2/jobs/{job}", jobs.cancel_job),
        web.get("/openapi.json", openapi),
        # Observability (read scope): the status page, its assets and JSON, Prometheus text.
        web.get("/", status.status_page),
        web.get("/status/{asset}", status.status_asset),
        web.get("/v2/status", status.status_json),
        web.get("/metrics", status.metrics),
    ])
