"""REST routes of the Open Inference Protocol (plus Triton's model config). Handlers stay thin:
decode, call the service, encode."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from appliance import __version__
from appliance.appkeys import CONTEXT, REPOSITORY, SERVICE, SETTINGS, STATE
from appliance.dataplane.context import RequestContext
from appliance.dataplane.tensors import InferRequest
from appliance.errors import InvalidInput, ModelNotFound, ModelNotReady, RequestTimeout
from appliance.protocol import jobs_routes as jobs
from appliance.protocol.codec import HEADER_LENGTH, EncodedBody, decode_request, encode_response
from appliance.repository import ModelVersion
from appliance.status import handlers as status

_OFFLOAD_DECODE_BYTES = 1 << 20  # decode bodies above 1 MiB in a thread, off the event loop
_TRITON_TYPES = {"BOOL": "TYPE_BOOL", "BYTES": "TYPE_STRING"}
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
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


def _version_param(request: web.Request) -> str | None:
    return request.match_info.get("version") or None


def _lookup(request: web.Request) -> tuple[str, ModelVersion | None]:
    """The addressed version for metadata: ready or not (metadata describes either)."""
    name = request.match_info["model"]
    entry = request.app[REPOSITORY].entry(name)
    version = _version_param(request)
    if version is None:
        latest = entry.latest_ready()
        if latest is None and entry.versions:
            latest = entry.versions[max(entry.versions)]
        return name, latest
    if not version.isdigit() or int(version) not in entry.versions:
        raise ModelNotFound(f"model '{name}' has no version '{version}'")
    return name, entry.versions[int(version)]


async def model_metadata(request: web.Request) -> web.Response:
    name, target = _lookup(request)
    entry = request.app[REPOSITORY].entry(name)
    doc: dict[str, Any] = {"name": name, "versions": [str(v) for v in sorted(entry.versions)]}
    if target is None:
        raise ModelNotReady(f"model '{name}' has no loaded version: {entry.error or 'none selected'}")
    doc["platform"] = _platform(target)
    doc["inputs"], doc["outputs"] = _tensor_metadata(target)
    doc["parameters"] = _version_parameters(target)
    return json_response(doc)


def _platform(target: ModelVersion) -> str:
    if target.manifest is None:
        return ""
    return "openvino_ir" if target.manifest.format == "openvino" else "onnxruntime_onnx"


def _tensor_metadata(target: ModelVersion) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    config = target.config
    batched = config.max_batch_size > 0
    if target.compiled is None:
        return ([s.to_metadata(batched) for s in config.inputs], [s.to_metadata(batched) for s in config.outputs])
    declared = {s.name: s for s in (*config.inputs, *config.outputs)}

    def describe(port: Any) -> dict[str, Any]:
        spec = declared.get(port.name)
        if spec is not None:
            return spec.to_metadata(batched)
        return {"name": port.name, "datatype": port.datatype, "shape": list(port.shape)}

    return [describe(p) for p in target.compiled.inputs], [describe(p) for p in target.compiled.outputs]


def _version_parameters(target: ModelVersion) -> dict[str, Any]:
    compiled, manifest = target.compiled, target.manifest
    return {
        "version": str(target.version),
        "state": str(target.state),
        "reason": target.reason,
        "runtime": compiled.runtime if compiled else "",
        "device": compiled.device if compiled else "",
        "precision": manifest.precision if manifest else "",
        "format": manifest.format if manifest else "",
        "max_batch_size": target.config.max_batch_size,
        "labels": list(target.config.labels),
    }


async def model_ready(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    try:
        request.app[REPOSITORY].resolve(name, _version_param(request))
    except ModelNotReady:
        return json_response({"name": name, "ready": False}, 503)
    return json_response({"name": name, "ready": True})


async def model_config(request: web.Request) -> web.Response:
    """Triton's configuration endpoint (perf_analyzer and Triton clients ask for it)."""
    name, target = _lookup(request)
    if target is None:
        raise ModelNotReady(f"model '{name}' has no loaded version")
    inputs, outputs = _tensor_metadata(target)
    batched = target.config.max_batch_size > 0

    def triton(t: dict[str, Any]) -> dict[str, Any]:
        dims = t["shape"][1:] if batched else t["shape"]
        return {"name": t["name"], "data_type": _TRITON_TYPES.get(t["datatype"], "TYPE_" + t["datatype"]),
                "dims": dims}

    doc = {"name": name, "platform": _platform(target), "backend": target.compiled.runtime if target.compiled else "",
           "max_batch_size": target.config.max_batch_size, "input": [triton(t) for t in inputs],
           "output": [triton(t) for t in outputs]}
    if batched:
        doc["dynamic_batching"] = {"preferred_batch_size": list(target.config.preferred_batch_size)}
    return json_response(doc)


async def repository_index(request: web.Request) -> web.Response:
    rows = []
    for entry in request.app[REPOSITORY].models():
        if not entry.versions:
            rows.append({"name": entry.name, "version": "", "state": "UNAVAILABLE", "reason": entry.error})
        for number, version in sorted(entry.versions.items()):
            rows.append({"name": entry.name, "version": str(number), "state": str(version.state),
                         "reason": version.reason})
    return json_response(rows)


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
            ctx.deadline = ctx.started + float(header) / 1000
        except ValueError:
            raise InvalidInput("X-Request-Timeout-Ms must be a number of milliseconds") from None
    if "no-cache" in request.headers.get("Cache-Control", ""):
        ctx.use_cache = False


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole body, within ``timeout_s`` (408 otherwise) so a slow client cannot hold a request.

    Most bodies have fully arrived with their headers; those skip the timer.
    """
    if request.content.is_eof():
        return await request.read()
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") from None


async def infer(request: web.Request) -> web.Response:
    """Decode (only once the service has room for the request), infer, encode."""
    settings = request.app[SETTINGS]
    ctx = _context(request)
    ctx.body_bytes = request.content_length or 0
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
    headers = {"X-Cache": "HIT" if ctx.cache_hit else "MISS"}
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
        web.post("/v2/repository/index", repository_index),
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
