"""Helpers for the gRPC tests: a real ``appliance serve`` subprocess with its gRPC port, and raw
calls with the appliance's own messages (to send what tritonclient never would)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from conftest import ServerProcess, start_server, stop_server

from appliance.app import create_app
from appliance.appkeys import PARTS
from appliance.config import Settings
from appliance.grpc.protos import grpc_service_pb2 as pb
from appliance.grpc.server import start_grpc

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


@contextlib.asynccontextmanager
async def running(settings: Settings, credentials: grpc.ChannelCredentials | None = None
                  ) -> AsyncIterator[grpc.aio.Channel]:
    """The REST app's parts started, the gRPC server on them, and a channel once models are ready."""
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    server = await start_grpc(runner.app[PARTS], settings)
    assert server is not None
    target = f"127.0.0.1:{settings.grpc.port}"
    channel = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
    try:
        ready = channel.unary_unary(SERVICE + "ServerReady", request_serializer=pb.ServerReadyRequest.SerializeToString,
                                    response_deserializer=pb.ServerReadyResponse.FromString)
        for _ in range(600):
            if (await ready(pb.ServerReadyRequest())).ready:
                break
        yield channel
    finally:
        await channel.close()
        await server.stop(1)
        await runner.cleanup()
