"""OTLP export (the optional ``otel`` extra): with ``observability.otlp_endpoint`` set, the server's
spans reach a collector over OTLP/HTTP, continuing the caller's trace."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from obs_testlib import infer_body, settings_for, start_client

pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


async def test_spans_reach_an_otlp_collector(repository: Path, tmp_path: Path) -> None:
    received: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector_app = web.Application()
    collector_app.router.add_post("/v1/traces", traces)
    collector = TestServer(collector_app, host="127.0.0.1")
    await collector.start_server()
    try:
        settings = settings_for(repository, tmp_path / "state", otlp_endpoint=str(collector.make_url("")))
        client = await start_client(settings)
        try:
            import numpy as np

            rows = np.load(repository / "digits" / "data" / "eval.npz")["input"][:2].astype(np.float32)
            response = await client.post("/v2/models/digits/infer", json=infer_body(rows),
                                         headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"})
            assert response.status == 200
            _, trace_id, span_id, _ = response.headers["traceparent"].split("-")
            assert trace_id == TRACE_ID
        finally:
            await client.close()  # shuts the exporter down, flushing the batch
    finally:
        await collector.close()
    body = b"".join(received)
    assert bytes.fromhex(TRACE_ID) in body and bytes.fromhex(span_id) in body
    assert b"POST /v2/models/{model}/infer" in body
