"""The Open Inference Protocol's gRPC messages (KServe v2 + Triton's extensions), vendored.

``grpc_service.proto`` and ``model_config.proto`` are Triton's, unmodified (BSD-3-Clause, see
``LICENSE`` and ``README.md`` here); ``*_pb2.py`` / ``*_pb2.pyi`` are generated from them by
``python -m appliance.grpc.protos.generate`` and committed, so installing the server needs neither
protoc nor grpcio-tools. A test regenerates them and fails if the committed files drift.

The messages live in a descriptor pool of their own, not protobuf's default pool: Triton's client
(``tritonclient.grpc``) and other libraries register the same ``inference.*`` names from their own
copies of these files, and two different copies in one pool refuse to load.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool

#: The pool the generated modules register into (see the module docstring for why not Default()).
POOL = descriptor_pool.DescriptorPool()
