"""Helpers for the gRPC tests: a real ``appliance serve`` subprocess with its gRPC port, and raw
calls with the appliance's own messages (to send what tritonclient never would)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from conftest import ServerProcess, start_server, stop_server

from appliance.grpc.protos import grpc_service_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
RESPONSES = {"ModelInfer": pb.ModelInferResponse, "ServerReady": pb.ServerReadyResponse,
             "ModelMetadata": pb.ModelMetadataResponse, "RepositoryModelLoad": pb.RepositoryModelLoadResponse}


@contextmanager
def grpc_server(source: Path, tmp: Path, env: dict[str, str] | None = None,
                setup: Any = None) -> Iterator[ServerProcess]:
    """A private copy of ``source`` served over REST and gRPC; ``setup(state)`` runs before start.
    Stopped with SIGTERM, which must drain both front ends and exit 0."""
    models = tmp / "models"
    shutil.copytree(source, models, dirs_exist_ok=True)
    state = tmp / "state"
    state.mkdir(parents=True, exist_ok=True)
    if setup is not None:
        setup(state)
    server = start_server(models, state, extra_env=env, grpc=True)
    try:
        yield server
    finally:
        code = stop_server(server)
    assert code == 0, f"SIGTERM (drain, then gRPC stop) did not exit cleanly:\n{server.log()[-3000:]}"


def call(channel: grpc.Channel, rpc: str, request: Any, metadata: tuple[tuple[str, str], ...] = (),
         timeout: float = 30) -> Any:
    stub = channel.unary_unary(SERVICE + rpc, request_serializer=type(request).SerializeToString,
                               response_deserializer=RESPONSES[rpc].FromString)
    return stub(request, metadata=metadata, timeout=timeout)


def code_of(channel: grpc.Channel, rpc: str, request: Any, **kw: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and details a call ends with (OK and "" on success)."""
    try:
        call(channel, rpc, request, **kw)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""
