"""Admission over gRPC: where REST answers 429 + Retry-After, gRPC ends RESOURCE_EXHAUSTED with the
``grpc-retry-pushback-ms`` trailer; the refusals are counted with protocol="grpc", and REST and
gRPC requests share one admission (in-process server, real runtimes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
from conftest import free_port
from grpc_testlib import running
from server_testlib import publish_heavy_model, settings_for

from appliance.grpc.protos import grpc_service_pb2 as pb

HEAVY = pb.ModelInferRequest(model_name="heavy", inputs=[pb.ModelInferRequest.InferInputTensor(
    name="x", datatype="FP32", shape=[64, 1024])], raw_input_contents=[np.ones((64, 1024), np.float32).tobytes()])


async def test_overload_is_resource_exhausted_with_pushback(repository: Path, tmp_path: Path) -> None:
    publish_heavy_model(repository, layers=16)
    settings = settings_for(repository, tmp_path / "state", grpc={"port": free_port()},
                            limits={"adaptive": False, "max_concurrency": 1, "max_queue": 0, "refusals_per_s": 0})
    async with running(settings) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        calls = [infer(HEAVY, timeout=60) for _ in range(6)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        answered = [o for o in outcomes if isinstance(o, pb.ModelInferResponse)]
        assert answered and refused, outcomes
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            pushback = dict(error.trailing_metadata() or ())["grpc-retry-pushback-ms"]
            assert int(pushback) >= 1
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady",
                                    request_serializer=pb.ServerReadyRequest.SerializeToString,
                                    response_deserializer=pb.ServerReadyResponse.FromString)
        assert (await ready(pb.ServerReadyRequest())).ready
