"""The gRPC server: ``inference.GRPCInferenceService`` on ``grpc.port``, beside the REST server.

Runs on the running (uv)loop, so REST and gRPC requests meet in the same service, batcher and
admission. TLS uses the REST server's certificate and key; with ``tls.require_client_cert`` the
client certificate is required and verified against ``tls.client_ca_file`` as for HTTPS.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from appliance.config import ConfigError, Settings, TlsSettings
from appliance.grpc.protos import grpc_service_pb2 as pb
from appliance.grpc.servicer import SERVICE, Servicer
from appliance.parts import Parts

log = logging.getLogger("appliance")

#: RPC → (request message, response message) for the unary RPCs the servicer answers; the rest
#: of Triton's service (shared memory, tracing and log settings) answers UNIMPLEMENTED.
UNARY: dict[str, tuple[Any, Any]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}


def method_handlers(servicer: Servicer) -> dict[str, grpc.RpcMethodHandler]:
    handlers = {rpc: grpc.unary_unary_rpc_method_handler(servicer.unary(rpc), request_deserializer=req.FromString,
                                                         response_serializer=resp.SerializeToString)
                for rpc, (req, resp) in UNARY.items()}
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        servicer.model_infer, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString)
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        servicer.model_stream_infer, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelStreamInferResponse.SerializeToString)
    return handlers


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """The REST server's certificate for gRPC too (None = plaintext, as REST then is)."""
    if tls.cert_file is None or tls.key_file is None:
        return None
    try:
        pair = (tls.key_file.read_bytes(), tls.cert_file.read_bytes())
        roots = tls.client_ca_file.read_bytes() if tls.client_ca_file is not None else None
    except OSError as exc:
        raise ConfigError(f"TLS setup failed for gRPC: {exc}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=roots,
                                       require_client_auth=tls.require_client_cert and roots is not None)


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(parts: Parts, settings: Settings, *, reuse_port: bool = False) -> grpc.aio.Server | None:
    """Bind and start the gRPC server (None when ``grpc.port`` is 0). A busy port stops start-up.
    ``reuse_port``: one of several worker processes sharing the port (its supervisor holds it)."""
    if settings.grpc.port == 0:
        return None
    limit = settings.grpc.max_message_bytes
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
        # Alone: fail on a port in use instead of silently sharing it with another server.
        ("grpc.so_reuseport", 1 if reuse_port else 0)])
    handlers = method_handlers(Servicer(parts))
    if hasattr(server, "add_registered_method_handlers"):  # grpcio >= 1.62: no per-call method lookup
        server.add_registered_method_handlers(SERVICE, handlers)
    else:  # pragma: no cover
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    target = address(settings.server.host, settings.grpc.port)
    credentials = server_credentials(settings.tls)
    try:
        if credentials is None:
            server.add_insecure_port(target)
        else:
            server.add_secure_port(target, credentials)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {target}: {exc}") from None
    await server.start()
    log.info("listening", extra={"fields": {"grpc": target, "tls": credentials is not None}})
    return server
