"""The floor under the appliance: a bare aiohttp + uvloop + orjson handler calling ONNX Runtime.

Run by ``serving_engine.py`` on the same core and under the same load as the appliance, so the
cost of every stage the appliance adds (auth, admission, cache, batching, audit, metrics, logs)
shows as the gap between the two in the same run. Speaks just enough of the protocol for
perf_analyzer (metadata, config, JSON infer of one FP32 input).

    python bench/bare_server.py MODEL.onnx PORT
"""

from __future__ import annotations

import asyncio
import os
import sys

import numpy as np
import onnxruntime as ort
import orjson
import uvloop
from aiohttp import web


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))  # stay on the cores taskset gave us
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    width = session.get_inputs()[0].shape[1]
    classes = session.get_outputs()[0].shape[1]
    meta = {"name": "digits", "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": in_name, "datatype": "FP32", "shape": [-1, width]}],
            "outputs": [{"name": out_name, "datatype": "FP32", "shape": [-1, classes]}]}
    config = {"name": "digits", "platform": "onnxruntime_onnx", "max_batch_size": 64,
              "input": [{"name": in_name, "data_type": "TYPE_FP32", "dims": [width]}],
              "output": [{"name": out_name, "data_type": "TYPE_FP32", "dims": [classes]}]}

    async def infer(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        tensor = doc["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        y = session.run([out_name], {in_name: x})[0]
        body = {"model_name": "digits", "model_version": "1",
                "outputs": [{"name": out_name, "datatype": "FP32", "shape": list(y.shape), "data": y.reshape(-1)}]}
        return web.Response(body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                            content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def metadata(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(meta), content_type="application/json")

    async def model_config(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(config), content_type="application/json")

    app = web.Application()
    async def server(request: web.Request) -> web.Response:
        return web.json_response({"name": "bare", "version": "0", "extensions": []})

    app.router.add_get("/v2", server)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/health/live", ready)
    app.router.add_get("/v2/models/digits", metadata)
    app.router.add_get("/v2/models/digits/config", model_config)
    app.router.add_post("/v2/models/digits/infer", infer)
    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
