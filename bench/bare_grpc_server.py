"""The floor under the appliance's gRPC endpoint: a bare ``grpc.aio`` KServe servicer (uvloop)
running ONNX Runtime inline, no stage at all: what Python's gRPC can carry on one core.

Run by ``grpc_vs_bare.py`` on the same core and under the same load as the appliance. Speaks just
enough of ``inference.GRPCInferenceService`` for perf_analyzer ``-i grpc`` (liveness, readiness,
metadata, config, statistics, unary and streaming infer of one FP32 input, raw tensors), with the
appliance's own generated messages.

    python bench/bare_grpc_server.py MODEL.onnx PORT
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from appliance.grpc.protos import grpc_service_pb2 as pb
from appliance.grpc.protos import model_config_pb2 as mc


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))  # stay on the cores taskset gave us
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    width, classes = session.get_inputs()[0].shape[1], session.get_outputs()[0].shape[1]
    tensor = pb.ModelMetadataResponse.TensorMetadata
    metadata = pb.ModelMetadataResponse(name="digits", versions=["1"], platform="onnxruntime_onnx",
                                        inputs=[tensor(name=in_name, datatype="FP32", shape=[-1, width])],
                                        outputs=[tensor(name=out_name, datatype="FP32", shape=[-1, classes])])
    config = pb.ModelConfigResponse(config=mc.ModelConfig(
        name="digits", platform="onnxruntime_onnx", max_batch_size=64,
        input=[mc.ModelInput(name=in_name, data_type="TYPE_FP32", dims=[width])],
        output=[mc.ModelOutput(name=out_name, data_type="TYPE_FP32", dims=[classes])]))

    async def infer(request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(request.inputs[0].shape)
        y = session.run([out_name], {in_name: x})[0]
        return pb.ModelInferResponse(
            model_name="digits", model_version="1", id=request.id, raw_output_contents=[y.tobytes()],
            outputs=[pb.ModelInferResponse.InferOutputTensor(name=out_name, datatype="FP32", shape=y.shape)])

    async def stream(requests: AsyncIterator[pb.ModelInferRequest], context: Any
                     ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in requests:
            yield pb.ModelStreamInferResponse(infer_response=await infer(request, context))

    def constant(answer: Any) -> Any:
        async def handler(request: Any, context: Any) -> Any:
            return answer
        return handler

    unary = {
        "ServerLive": (pb.ServerLiveRequest, constant(pb.ServerLiveResponse(live=True))),
        "ServerReady": (pb.ServerReadyRequest, constant(pb.ServerReadyResponse(ready=True))),
        "ModelReady": (pb.ModelReadyRequest, constant(pb.ModelReadyResponse(ready=True))),
        "ServerMetadata": (pb.ServerMetadataRequest, constant(pb.ServerMetadataResponse(name="bare"))),
        "ModelMetadata": (pb.ModelMetadataRequest, constant(metadata)),
        "ModelConfig": (pb.ModelConfigRequest, constant(config)),
        "ModelStatistics": (pb.ModelStatisticsRequest, constant(pb.ModelStatisticsResponse(
            model_stats=[pb.ModelStatistics(name="digits", version="1")]))),
        "ModelInfer": (pb.ModelInferRequest, infer),
    }
    handlers = {name: grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=request.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString if name == "ModelInfer"
        else lambda m: m.SerializeToString()) for name, (request, handler) in unary.items()}
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        stream, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelStreamInferResponse.SerializeToString)

    async def serve() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_registered_method_handlers("inference.GRPCInferenceService", handlers)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
