"""Query a running model-appliance the way an operator would after install.sh: readiness,
metadata, and a real prediction from every served version of the bundled ``digits`` model.

Runs with the installed venv's Python (stdlib + scikit-learn's bundled digits data), prints one
JSON object with what it saw, and exits non-zero when a check fails.

    python query.py --url http://127.0.0.1:8080 [--key-file /etc/model-appliance/admin.key]
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_CONTEXT = ssl._create_unverified_context()  # the installer's self-signed certificate, on loopback


def call(url: str, key: str | None, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=_CONTEXT) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else {}
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def wait_ready(base: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if call(f"{base}/v2/health/ready", None)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{base} not ready after {timeout} s")


def predict(base: str, key: str | None, version: str) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data[:16].astype("float32"), digits.target[:16]
    body = {"id": f"check-v{version}",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    status, answer = call(f"{base}/v2/models/digits/versions/{version}/infer", key, body)
    if status != 200:
        return {"version": version, "status": status, "answer": answer, "ok": False}
    probabilities = answer["outputs"][0]["data"]
    predicted = [max(range(10), key=lambda j, i=i: probabilities[i * 10 + j]) for i in range(len(y))]
    correct = sum(int(p == t) for p, t in zip(predicted, y.tolist(), strict=True))
    _, meta = call(f"{base}/v2/models/digits/versions/{version}", key)
    params = meta.get("parameters", {})
    return {"version": version, "status": status, "correct": f"{correct}/{len(y)}",
            "runtime": params.get("runtime"), "precision": params.get("precision"),
            "ok": correct >= len(y) - 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--ready-only", action="store_true", help="wait for readiness, print the seconds")
    args = parser.parse_args()
    base = args.url.rstrip("/")
    if args.ready_only:
        print(f"{wait_ready(base, args.timeout):.2f}")
        return 0
    key = args.key_file.read_text().strip() if args.key_file and args.key_file.exists() else None
    report: dict[str, Any] = {"ready_wait_s": round(wait_ready(base, args.timeout), 2), "auth": bool(key)}
    if key:
        report["no_credentials_status"] = call(f"{base}/v2/models/digits", None)[0]
    status, meta = call(f"{base}/v2/models/digits", key)
    report["metadata_status"] = status
    report["versions"] = meta.get("versions", [])
    report["predictions"] = [predict(base, key, v) for v in report["versions"]]
    ok = (status == 200 and bool(report["predictions"]) and all(p["ok"] for p in report["predictions"])
          and report.get("no_credentials_status", 401) == 401)
    report["ok"] = ok
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
