"""OpenAI-compatible embeddings: ``POST /v1/embeddings`` for clients of that API (the ``openai``
package, LangChain, LlamaIndex) pointed at the appliance.

A thin front end like the OIP routes: it turns ``{"model", "input": str | [str],
"encoding_format": "float" | "base64"}`` into one BYTES tensor named ``text`` (the public input a
text model's processing reads), calls :meth:`InferenceService.infer` — so auth (scope ``infer``
for that model), admission, cache, batching, audit and metrics are the OIP path's — and encodes
``{"object": "list", "data": [...], "model", "usage"}``. Unknown optional fields (``user``...)
are ignored, as OpenAI's server does. Errors take OpenAI's shape (``protocol.errors``).

The model name is in the body, so the body is read before admission is asked (the OIP route can
refuse a flood before reading it); ``http.max_body_bytes`` and ``http.read_timeout_s`` bound it.
OpenAI accepts up to 2,048 inputs per call and clients send that many (LangChain chunks by 1,000):
a list longer than the model's ``max_batch_size`` is sent as consecutive requests of that size.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from appliance.appkeys import CONTEXT, PRINCIPAL, REPOSITORY, SERVICE, SETTINGS
from appliance.auth.principal import INFER
from appliance.dataplane.tensors import InferInput, InferRequest
from appliance.errors import Forbidden, InvalidInput
from appliance.protocol.body import json_object, read_body

PREFIX = "/v1/"
TEXT_INPUT = "text"  # the public input of a text model (dataplane.processing.text)
MAX_INPUTS = 2048  # OpenAI's own limit per call
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def parse(body: bytes) -> tuple[str, list[str], str, int | None]:
    """model, texts, encoding format and ``dimensions`` (if asked) from an embeddings request."""
    doc = json_object(body, "the request")
    model, raw, encoding = doc.get("model"), doc.get("input"), doc.get("encoding_format", "float")
    if not isinstance(model, str) or not model:
        raise InvalidInput("'model' must be a non-empty string")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidInput("'input' must be a string or a non-empty list of strings (token arrays are not "
                           "supported: send the text)")
    if len(texts) > MAX_INPUTS:
        raise InvalidInput(f"'input' holds {len(texts)} strings; at most {MAX_INPUTS} per request")
    if encoding not in ("float", "base64"):
        raise InvalidInput("'encoding_format' must be 'float' or 'base64'")
    dimensions = doc.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise InvalidInput("'dimensions' must be a positive integer")
    user = doc.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidInput("'user' must be a string")
    return model, texts, encoding, dimensions


def encode(model: str, vectors: np.ndarray, encoding: str, tokens: int) -> bytes:
    """The response body; base64 is the little-endian float32 bytes of each vector."""
    data: list[dict[str, Any]] = []
    for index, row in enumerate(vectors):
        row = np.ascontiguousarray(row, dtype="<f4")
        embedding: Any = base64.b64encode(row.tobytes()).decode() if encoding == "base64" else row
        data.append({"object": "embedding", "embedding": embedding, "index": index})
    return orjson.dumps({"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, option=_NUMPY)


async def embeddings(request: web.Request) -> web.Response:
    ctx = request[CONTEXT]
    ctx.body_bytes = request.content_length or 0
    body = await read_body(request, request.app[SETTINGS].http.read_timeout_s)
    model, texts, encoding, dimensions = parse(body)
    principal = request.get(PRINCIPAL)
    if principal is not None and not principal.may(INFER, model):
        raise Forbidden(f"'{principal.name}' lacks the '{INFER}' scope for model '{model}'")
    ctx.model = model
    vectors, tokens = await _embed(request, model, texts)
    if dimensions is not None and dimensions != vectors.shape[1]:
        raise InvalidInput(f"model '{model}' answers {vectors.shape[1]} dimensions, not {dimensions}")
    return web.Response(body=encode(model, vectors, encoding, tokens), content_type="application/json",
                        headers={"X-Cache": "HIT" if ctx.cache_hit else "MISS", "X-Model-Version": ctx.version})


async def _embed(request: web.Request, model: str, texts: list[str]) -> tuple[np.ndarray, int]:
    """Embeddings of ``texts`` through the service, in requests of at most the model's batch size."""
    ctx, service = request[CONTEXT], request.app[SERVICE]
    target = request.app[REPOSITORY].resolve(model, None)  # 404/503 here as on the OIP route
    size = target.config.max_batch_size or len(texts)
    parts, tokens = [], 0
    for start in range(0, len(texts), size):
        chunk = texts[start:start + size]
        array = np.empty(len(chunk), dtype=np.object_)
        array[:] = [text.encode() for text in chunk]
        response = await service.infer(ctx, model, None, InferRequest([InferInput(TEXT_INPUT, "BYTES",
                                                                                  (len(chunk),), array)]))
        outputs = response.outputs
        vectors = outputs["embeddings"] if "embeddings" in outputs else next(iter(outputs.values()))
        if vectors.ndim != 2 or vectors.dtype.kind != "f":
            raise InvalidInput(f"model '{model}' does not answer embeddings (a [rows, dims] float output)")
        parts.append(vectors)
        tokens += ctx.prompt_tokens
    return np.concatenate(parts), tokens


ROUTES = [web.post("/v1/embeddings", embeddings)]
