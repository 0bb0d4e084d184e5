"""OpenAPI 3 description of the REST API, served at ``/openapi.json``.

A test compares its paths with the application's route table, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from appliance import __version__
from appliance.dataplane.tensors import TO_NUMPY

_ERROR = {"$ref": "#/components/responses/Error"}
#: Path parameters say what the route table and the repository accept: any non-empty name (a
#: directory of the repository) and a version number (anything else is a 404).
_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
          "example": "digits"}
_VERSION = {"name": "version", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"}, "example": "1"}
_ASSET = {"name": "asset", "in": "path", "required": True,
          "schema": {"type": "string", "enum": ["status.js", "status.css"]}, "example": "status.js"}
#: The codec's own table, so the schema's enum cannot drift from what it decodes.
DATATYPES = list(TO_NUMPY)
_JOB = {"name": "job", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
        "example": "0123456789ab"}


def _json(schema_ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _get(summary: str, schema: str, params: list[dict[str, Any]], extra: dict[str, Any] | None = None,
         security: bool = True) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", **_json(schema)}}
    responses.update(extra or {})
    op: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses}
    if not security:
        op["security"] = []
    return {"get": op}


def _text(summary: str, media: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params or [], "responses": {
        "200": {"description": "OK", "content": {media: {"schema": {"type": "string"}}}}, "404": _ERROR}}}


def _assets() -> dict[str, Any]:
    ok = {"description": "OK", "content": {m: {"schema": {"type": "string"}} for m in ("text/javascript", "text/css")}}
    return {"get": {"summary": "Status page assets (JS, CSS)", "parameters": [_ASSET],
                    "responses": {"200": ok, "404": _ERROR}}}


def _infer(params: list[dict[str, Any]]) -> dict[str, Any]:
    return {"post": {
        "summary": "Run inference (JSON tensors, or JSON header + binary tensors)",
        "parameters": [*params, {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                                 "schema": {"type": "integer", "minimum": 0}},
                       {"name": "X-Request-Timeout-Ms", "in": "header", "required": False,
                        "description": "Deadline in milliseconds (overrides the `timeout` parameter).",
                        "schema": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }},
        "responses": {
            "200": {"description": "Outputs", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "400": _ERROR, "401": _ERROR, "403": _ERROR, "404": _ERROR, "413": _ERROR, "429": _ERROR,
            "500": _ERROR, "503": _ERROR, "504": _ERROR,
        },
    }}


def _embeddings() -> dict[str, Any]:
    """OpenAI's embeddings call, as far as the appliance implements it (text input only)."""
    error = {"description": "Error (OpenAI's shape)", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["message", "type"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"}}}}}}}}
    request = {"type": "object", "required": ["model", "input"], "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "string"}}]},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1}, "user": {"type": "string"}}}
    item = {"type": "object", "required": ["object", "embedding", "index"], "properties": {
        "object": {"type": "string", "enum": ["embedding"]}, "index": {"type": "integer"},
        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]}}}
    answer = {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
        "object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": item},
        "model": {"type": "string"}, "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                                              "properties": {"prompt_tokens": {"type": "integer"},
                                                             "total_tokens": {"type": "integer"}}}}}
    return {"post": {
        "summary": "OpenAI-compatible embeddings of text (models with text preprocessing)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {"200": {"description": "Embeddings", "content": {"application/json": {"schema": answer}}},
                      **{code: error for code in ("400", "401", "403", "404", "408", "413", "429", "500", "503",
                                                  "504")}}}}


def _optional_object(properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object the codec also accepts as ``null`` (clients that serialise unset fields send it)."""
    doc: dict[str, Any] = {"type": "object", "nullable": True}
    if properties:
        doc["properties"] = properties
    return doc


def _request_schemas() -> dict[str, Any]:
    """What the codec enforces on a request, as far as a model-independent schema can say it.

    Whether ``data`` holds ``prod(shape)`` elements of the datatype, and whether the model has
    such an input, is only known at run time (400 then).
    """
    natural = {"type": "integer", "minimum": 0}
    input_tensor = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"type": "string", "minLength": 1}, "datatype": {"type": "string", "enum": DATATYPES},
        "shape": {"type": "array", "items": natural},
        "parameters": _optional_object({"binary_data_size": natural}),
        "data": {"anyOf": [{"type": t} for t in ("array", "number", "boolean", "string")]}},
        # Either JSON ``data`` or a ``binary_data_size`` (Triton's binary extension), never both.
        "oneOf": [
            {"required": ["data"], "properties": {"parameters": {"not": {
                "type": "object", "required": ["binary_data_size"]}}}},
            {"required": ["parameters"], "not": {"required": ["data"]}, "properties": {"parameters": {
                "type": "object", "required": ["binary_data_size"]}}},
        ]}
    output = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1},
        "parameters": _optional_object({"binary_data": {"type": "boolean"}})}}
    parameters = _optional_object({
        "timeout": {**natural, "description": "Deadline in microseconds; 0 = none."},
        "priority": {**natural, "description": "1 = highest; 0 = default."},
        "binary_data_output": {"type": "boolean"}})
    return {"InferRequest": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string", "nullable": True}, "parameters": parameters,
        "inputs": {"type": "array", "items": input_tensor, "minItems": 1},
        "outputs": {"type": "array", "nullable": True, "items": output}}}}


def _jobs() -> dict[str, Any]:
    submission = {"type": "object", "required": ["model", "input", "output"], "properties": {
        "model": {"type": "string", "example": "digits"}, "version": {"type": "string"},
        "input": {"type": "string", "description": "path relative to jobs.data_dir", "example": "in.parquet"},
        "output": {"type": "string", "description": "folder relative to jobs.data_dir", "example": "out"},
        "input_columns": {"type": "array", "items": {"type": "string"}},
        "batch_size": {"type": "integer", "minimum": 0}, "top_k": {"type": "integer", "minimum": 0},
        "resume": {"type": "boolean"}, "strict": {"type": "boolean"}, "allow_nan": {"type": "boolean"}}}
    return {
        "post": {"summary": "Submit a batch job (runs below live traffic's priority)",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": submission}}},
                 "responses": {"201": {"description": "Accepted", **_json("Job")}, "400": _ERROR, "401": _ERROR,
                               "403": _ERROR, "404": _ERROR}},
        "get": {"summary": "Batch jobs (the caller's own; every job for the admin scope)",
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"jobs": {"type": "array", "items": {
                        "$ref": "#/components/schemas/Job"}}}}}}}, "404": _ERROR}},
    }


def _schemas() -> dict[str, Any]:
    tensor = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string", "enum": DATATYPES},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "parameters": {"type": "object"}, "data": {}}}
    meta_tensor = {"type": "object", "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                                    "shape": {"type": "array", "items": {"type": "integer"}}}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}},
        "Health": {"type": "object"},
        "ModelMetadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                          "properties": {"name": {"type": "string"},
                                         "versions": {"type": "array", "items": {"type": "string"}},
                                         "platform": {"type": "string"},
                                         "inputs": {"type": "array", "items": meta_tensor},
                                         "outputs": {"type": "array", "items": meta_tensor},
                                         "parameters": {"type": "object"}}},
        "ModelConfig": {"type": "object", "required": ["name", "max_batch_size", "input", "output"]},
        "RepositoryIndex": {"type": "array", "items": {"type": "object"}},
        **_request_schemas(),
        "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "parameters": {"type": "object"}, "outputs": {"type": "array", "items": tensor}}},
        "Rollout": {"type": "object", "properties": {
            "stable": {"type": "integer", "minimum": 1}, "candidate": {"type": "integer", "minimum": 1},
            "mode": {"type": "string", "enum": ["canary", "ab", "shadow"]},
            "share": {"type": "number", "minimum": 0, "maximum": 1}, "sticky_header": {"type": "string"},
            "state": {"type": "string", "enum": ["active", "promoted", "rolled_back"]},
            "thresholds": {"type": "object", "properties": {
                "min_samples": {"type": "integer", "minimum": 0},
                "max_error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "max_p99_ratio": {"type": "number", "minimum": 0},
                "min_agreement": {"type": "number", "minimum": 0, "maximum": 1}}}}},
        "RolloutState": {"type": "object", "required": ["model", "rollout", "stats"]},
        "Lineage": {"type": "object", "required": ["model", "version", "manifest_sha256", "manifest"]},
        "OpenApi": {"type": "object"},
        "Status": {"type": "object"},
        "Job": {"type": "object", "required": ["id", "state"], "properties": {
            "id": {"type": "string"}, "model": {"type": "string"}, "version": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "running", "done", "failed", "cancelled"]},
            "rows_done": {"type": "integer"}, "rows_total": {"type": "integer", "nullable": True},
            "rows_rejected": {"type": "integer"}, "rows_per_s": {"type": "number"},
            "eta_s": {"type": "number", "nullable": True}, "error": {"type": "string"}}},
    }


def _lifecycle() -> dict[str, Any]:
    """Triton's repository extension, rollouts and lineage (admin, except lineage: read)."""
    load_body = {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"parameters": {"type": "object"}}}}}}
    done = {"200": {"description": "Done"}, "400": _ERROR, "404": _ERROR, "503": _ERROR}
    rollout = {"$ref": "#/components/schemas/Rollout"}
    return {
        "/v2/repository/models/{model}/load": {"post": {
            "summary": "Load new or changed versions of a model, beside the serving ones; swap at once",
            "parameters": [_MODEL], "requestBody": load_body, "responses": done}},
        "/v2/repository/models/{model}/unload": {"post": {
            "summary": "Stop serving a model (in-flight requests finish)", "parameters": [_MODEL],
            "requestBody": load_body, "responses": done}},
        "/v2/models/{model}/rollout": {
            "get": {"summary": "The model's rollout and what it measured", "parameters": [_MODEL],
                    "responses": {"200": {"description": "OK", **_json("RolloutState")}, "404": _ERROR}},
            "put": {"summary": "Start or change a rollout, or end it with {\"state\": \"promoted\"|\"rolled_back\"}",
                    "parameters": [_MODEL],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": rollout}}},
                    "responses": {"200": {"description": "OK", **_json("RolloutState")}, "400": _ERROR,
                                  "404": _ERROR, "503": _ERROR}},
            "delete": {"summary": "Forget the rollout: the version policy's newest version serves",
                       "parameters": [_MODEL], "responses": {"204": {"description": "Removed"}, "404": _ERROR}}},
        "/v2/models/{model}/versions/{version}/lineage": _get(
            "Manifest, provenance and rollout history of one version", "Lineage", [_MODEL, _VERSION],
            {"404": _ERROR}),
    }


def document() -> dict[str, Any]:
    v = [_MODEL, _VERSION]
    not_ready = {"503": _ERROR}
    paths: dict[str, Any] = {
        "/v2": _get("Server metadata", "ServerMetadata", []),
        "/v2/health/live": _get("Liveness", "Health", [], security=False),
        "/v2/health/ready": _get("Readiness (503 while loading or draining)", "Health", [], not_ready, False),
        "/v2/models/{model}": _get("Model metadata (newest ready version)", "ModelMetadata", [_MODEL],
                                   {"404": _ERROR, "503": _ERROR}),
        "/v2/models/{model}/ready": _get("Model readiness", "Health", [_MODEL], {"404": _ERROR, "503": _ERROR}),
        "/v2/models/{model}/config": _get("Triton-style model configuration", "ModelConfig", [_MODEL],
                                          {"404": _ERROR, "503": _ERROR}),
        "/v2/models/{model}/infer": _infer([_MODEL]),
        "/v2/models/{model}/versions/{version}": _get("Version metadata", "ModelMetadata", v,
                                                      {"404": _ERROR, "503": _ERROR}),
        "/v2/models/{model}/versions/{version}/ready": _get("Version readiness", "Health", v,
                                                            {"404": _ERROR, "503": _ERROR}),
        "/v2/models/{model}/versions/{version}/config": _get("Version configuration", "ModelConfig", v,
                                                             {"404": _ERROR, "503": _ERROR}),
        "/v2/models/{model}/versions/{version}/infer": _infer(v),
        "/v2/repository/index": {"post": {"summary": "Every model version and its state",
                                          "responses": {"200": {"description": "OK", **_json("RepositoryIndex")}}}},
        "/v2/jobs": _jobs(),
        "/v2/jobs/{job}": {
            **_get("One batch job: state, rows done, rows/s, ETA, error", "Job", [_JOB], {"404": _ERROR}),
            "delete": {"summary": "Cancel a batch job (what it committed stays; resume it by submitting again)",
                       "parameters": [_JOB], "responses": {"200": {"description": "OK", **_json("Job")},
                                                           "404": _ERROR}}},
        "/openapi.json": _get("This document", "OpenApi", []),
        "/v2/status": _get("Live status for the built-in page: health, hardware, models, traffic", "Status", []),
        "/metrics": _text("Prometheus metrics (text exposition format)", "text/plain"),
        "/": _text("The built-in status page (self-contained HTML)", "text/html"),
        "/status/{asset}": _assets(),
        "/v1/embeddings": _embeddings(),
        **_lifecycle(),
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "model-appliance", "version": __version__,
                 "description": "Open Inference Protocol (KServe v2) REST API with Triton's binary tensor "
                                "extension and model-configuration endpoint."},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": {"Error": {"description": "Error", **_json("Error")}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
