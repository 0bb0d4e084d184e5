"""OpenAPI 3 description of the REST API, served at ``/openapi.json``.

A test compares its paths with the application's route table, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from appliance import __version__

_ERROR = {"$ref": "#/components/responses/Error"}
_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}, "example": "digits"}
_JOB = {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}, "example": "0123456789ab"}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}, "example": "1"}


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


def _infer(params: list[dict[str, Any]]) -> dict[str, Any]:
    return {"post": {
        "summary": "Run inference (JSON tensors, or JSON header + binary tensors)",
        "parameters": [*params, {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                                 "schema": {"type": "integer", "minimum": 0}}],
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
        "name": {"type": "string"}, "datatype": {"type": "string", "enum": [
            "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "FP32", "FP64", "BYTES"]},
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
        "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": tensor, "minItems": 1},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "parameters": {"type": "object"}}}}}},
        "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "parameters": {"type": "object"}, "outputs": {"type": "array", "items": tensor}}},
        "OpenApi": {"type": "object"},
        "Status": {"type": "object"},
        "Job": {"type": "object", "required": ["id", "state"], "properties": {
            "id": {"type": "string"}, "model": {"type": "string"}, "version": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "running", "done", "failed", "cancelled"]},
            "rows_done": {"type": "integer"}, "rows_total": {"type": "integer", "nullable": True},
            "rows_rejected": {"type": "integer"}, "rows_per_s": {"type": "number"},
            "eta_s": {"type": "number", "nullable": True}, "error": {"type": "string"}}},
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
        "/status/{asset}": _text("Status page assets (JS, CSS)", "text/plain", [
            {"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}, "example": "app.js"}]),
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
