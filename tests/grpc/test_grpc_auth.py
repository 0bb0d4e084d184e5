"""The gRPC port goes through the same principals, scopes, TLS and audit as REST: API keys in the
``authorization`` / ``x-api-key`` metadata, mutual TLS with the REST certificates, refusals
audited. In-process: the real application and gRPC server on 127.0.0.1, real runtimes."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import grpc
import numpy as np
from conftest import free_port
from grpc_testlib import running
from server_testlib import settings_for

from appliance.cli import main
from appliance.grpc.protos import grpc_service_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auth"))
from auth_testlib import Pki, create_key

SERVICE = "/inference.GRPCInferenceService/"
ROW = pb.ModelInferRequest(model_name="digits", inputs=[pb.ModelInferRequest.InferInputTensor(
    name="input", datatype="FP32", shape=[1, 64])], raw_input_contents=[np.ones((1, 64), np.float32).tobytes()])


def _cli(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(args))


async def _code(channel: grpc.aio.Channel, rpc: str, request: object, response: type,
                metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    stub = channel.unary_unary(SERVICE + rpc, request_serializer=type(request).SerializeToString,
                               response_deserializer=response.FromString)
    try:
        await stub(request, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_keys_scopes_and_audit(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    app_key, dash_key = create_key(state, "app", "infer"), create_key(state, "dash", "read")
    assert _cli("audit", "init-keys", "--state-dir", str(state)) == 0
    settings = settings_for(repository, state, audit={"enabled": True}, grpc={"port": free_port()})
    infer, meta = ("ModelInfer", ROW, pb.ModelInferResponse), ("ModelMetadata", pb.ModelMetadataRequest(
        name="digits"), pb.ModelMetadataResponse)
    async with running(settings) as channel:
        U, D, OK = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OK
        assert await _code(channel, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse) == OK  # open
        assert await _code(channel, *infer) == U
        assert await _code(channel, *infer, metadata=(("x-api-key", "mak_0123456789abcdef_nope"),)) == U
        assert await _code(channel, *infer, metadata=(("authorization", f"Bearer {dash_key}"),)) == D
        assert await _code(channel, *meta, metadata=(("authorization", f"Bearer {dash_key}"),)) == OK
        assert await _code(channel, *meta, metadata=(("x-api-key", app_key),)) == D
        assert await _code(channel, *infer, metadata=(("authorization", f"Bearer {app_key}"),)) == OK
        assert await _code(channel, *infer, metadata=(("x-api-key", app_key),)) == OK
        load = ("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="digits"),
                pb.RepositoryModelLoadResponse)
        assert await _code(channel, *load, metadata=(("x-api-key", app_key),)) == D
    out = tmp_path / "export.jsonl"
    assert _cli("audit", "export", "--state-dir", str(state), "--output", str(out)) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    failures = [r for r in records if r["action"] == "auth_failure"]
    assert [(r["status"], r["principal"]) for r in failures] == [(401, ""), (401, ""), (403, "dash"), (403, "app"),
                                                                (403, "app")]
    assert all("GRPCInferenceService" in r["detail"] for r in failures)
    served = [r for r in records if r.get("model") == "digits" and r["status"] == 200 and r["principal"] == "app"]
    assert len(served) >= 2


async def test_mutual_tls_with_the_rest_certificates(repository: Path, tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki", "grpc")
    cert, key = pki.issue("127.0.0.1", server=True)
    client_cert, client_key = pki.issue("edge-1")
    tls = {"cert_file": cert, "key_file": key, "client_ca_file": pki.ca_file, "require_client_cert": True}
    settings = settings_for(repository, tmp_path / "state", tls=tls, grpc={"port": free_port()})
    credentials = grpc.ssl_channel_credentials(pki.ca_file.read_bytes(), client_key.read_bytes(),
                                               client_cert.read_bytes())
    async with running(settings, credentials) as channel:
        assert await _code(channel, "ModelInfer", ROW, pb.ModelInferResponse) == grpc.StatusCode.OK
        anonymous = grpc.aio.secure_channel(f"127.0.0.1:{settings.grpc.port}",
                                            grpc.ssl_channel_credentials(pki.ca_file.read_bytes()))
        try:  # no client certificate: the handshake fails, nothing is served
            assert await _code(anonymous, "ModelInfer", ROW, pb.ModelInferResponse) == grpc.StatusCode.UNAVAILABLE
        finally:
            await anonymous.close()
