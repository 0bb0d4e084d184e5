"""The committed ``*_pb2`` modules are exactly what the vendored ``.proto`` files generate, and
they load beside Triton's own client (which registers the same ``inference.*`` names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.grpc.protos import generate


def test_generated_modules_match_the_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    for path in generate.generate(tmp_path):
        committed = generate.HERE / path.name
        assert committed.read_text() == path.read_text(), f"{path.name} is stale: python -m {generate.__name__}"


def test_messages_coexist_with_tritonclient() -> None:
    pytest.importorskip("tritonclient.grpc")
    import tritonclient.grpc  # noqa: F401 - registers Triton's copy in protobuf's default pool

    from appliance.grpc.protos import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name="digits", raw_input_contents=[b"\0" * 4])
    assert pb.ModelInferRequest.FromString(request.SerializeToString()) == request


def test_the_package_does_not_shadow_the_grpc_library() -> None:
    """``appliance.grpc`` imports ``grpc`` absolutely: it must get the library, not itself."""
    import grpc

    from appliance.grpc import errors, server

    assert server.grpc is grpc and errors.grpc is grpc and hasattr(grpc, "aio")
    assert "appliance" not in Path(grpc.__file__).parts
