"""Batch prediction jobs: a file or folder of rows in, Parquet predictions out, resumable.

::

    readers      a file or folder (Parquet, CSV, JSON lines, .npy/.npz) → Arrow record batches
    features     Arrow columns → the model's input tensors, bad rows set aside with their reason
    output       part files + an fsync'd journal: what was committed survives kill -9
    runner       reader thread → InferenceService.infer (protocol "batch", background) → writer
    manager      the server's jobs (POST/GET/DELETE /v2/jobs): confined paths, cancel, status
    progress     rows/s and ETA: a bar on a terminal, log lines elsewhere

Jobs are a front end like REST: they reach the model only through the service, so model
resolution, the runtime, the batcher and admission are the ones live requests use. Nothing here
imports a wire protocol.
"""
