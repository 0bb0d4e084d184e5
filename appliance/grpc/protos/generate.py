"""Regenerate ``*_pb2.py`` and ``*_pb2.pyi`` from the vendored ``.proto`` files (needs grpcio-tools).

    python -m appliance.grpc.protos.generate [OUTPUT_DIR]

protoc writes top-level imports (``import model_config_pb2``) and registers into protobuf's default
descriptor pool; both are rewritten so the modules import as ``appliance.grpc.protos.*`` and use the
package's private :data:`~appliance.grpc.protos.POOL`. No ``*_pb2_grpc.py`` is generated: the
servicer registers its own method handlers (``appliance.grpc.server``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("model_config.proto", "grpc_service.proto")
PACKAGE = "appliance.grpc.protos"


def _rewrite(text: str) -> str:
    text = text.replace("import model_config_pb2 as", f"from {PACKAGE} import model_config_pb2 as")
    if "_descriptor_pool.Default()" in text:
        text = text.replace("_descriptor_pool.Default()", "_POOL")
        text = text.replace("from google.protobuf import descriptor_pool as _descriptor_pool\n",
                            f"from google.protobuf import descriptor_pool as _descriptor_pool\nfrom {PACKAGE} import "
                            "POOL as _POOL\n", 1)
    return text


def generate(output: Path) -> list[Path]:
    """Write the generated modules into ``output``; returns their paths."""
    from grpc_tools import protoc  # test/dev dependency only

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{HERE}", f"--python_out={tmp}", f"--pyi_out={tmp}", *(str(HERE / p) for p in PROTOS)]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        written = []
        for path in sorted(Path(tmp).iterdir()):
            target = output / path.name
            target.write_text(_rewrite(path.read_text()))
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
