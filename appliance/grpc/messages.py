"""Metadata, configuration, statistics and repository answers as protobuf messages.

The content comes from :mod:`appliance.modelinfo` and the live repository, exactly what REST
serialises to JSON; this module only copies it into Triton's messages.
"""

from __future__ import annotations

from typing import Any

from appliance import modelinfo
from appliance.grpc.protos import grpc_service_pb2 as pb
from appliance.grpc.protos import model_config_pb2 as mc
from appliance.metrics import PROTOCOLS, Metrics
from appliance.repository import Repository


def model_metadata(repository: Repository, name: str, version: str | None) -> pb.ModelMetadataResponse:
    doc = modelinfo.model_metadata(repository, name, version)
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=doc["name"], versions=doc["versions"], platform=doc["platform"],
        inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["inputs"]],
        outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["outputs"]])


def model_config(repository: Repository, name: str, version: str | None) -> pb.ModelConfigResponse:
    doc = modelinfo.triton_config(repository, name, version)
    config = mc.ModelConfig(
        name=doc["name"], platform=doc["platform"], backend=doc["backend"], max_batch_size=doc["max_batch_size"],
        input=[mc.ModelInput(name=t["name"], data_type=t["data_type"], dims=t["dims"]) for t in doc["input"]],
        output=[mc.ModelOutput(name=t["name"], data_type=t["data_type"], dims=t["dims"]) for t in doc["output"]])
    if "dynamic_batching" in doc:
        config.dynamic_batching.preferred_batch_size.extend(doc["dynamic_batching"]["preferred_batch_size"])
    return pb.ModelConfigResponse(config=config)


def model_statistics(repository: Repository, metrics: Metrics, name: str, version: str | None
                     ) -> pb.ModelStatisticsResponse:
    """Triton's statistics from the appliance's own counters, per ready version (every model when
    no name is given): answered requests, their time in the server, waiting for admission and in
    inference. perf_analyzer reads them to find the version it measured (its queue count grows)."""
    entries = [repository.entry(name)] if name else repository.models()
    stats = []
    for entry in entries:
        for number, target in sorted(entry.versions.items()):
            label = str(number)
            if target.ready and (not version or version == label):
                stats.append(_version_statistics(metrics, entry.name, label))
    return pb.ModelStatisticsResponse(model_stats=stats)


def _version_statistics(metrics: Metrics, model: str, version: str) -> pb.ModelStatistics:
    count = int(sum(metrics.requests.labels(model, version, p, "200").value for p in PROTOCOLS))

    def duration(seconds: float) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=count, ns=int(seconds * 1e9))

    inference = metrics.inference_seconds.labels(model, version).total
    stats = pb.InferStatistics(success=duration(metrics.request_seconds.labels(model, version).total),
                               queue=duration(metrics.queue_seconds.labels(model).total),
                               compute_input=duration(0.0), compute_infer=duration(inference),
                               compute_output=duration(0.0))
    return pb.ModelStatistics(name=model, version=version, inference_count=count, execution_count=count,
                              inference_stats=stats)


def repository_index(rows: list[dict[str, Any]]) -> pb.RepositoryIndexResponse:
    index = pb.RepositoryIndexResponse.ModelIndex
    return pb.RepositoryIndexResponse(models=[index(name=r["name"], version=r["version"], state=r["state"],
                                                    reason=r["reason"]) for r in rows])
