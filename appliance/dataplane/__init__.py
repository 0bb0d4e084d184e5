"""The protocol-free data plane: every front end (REST, gRPC, batch jobs) reaches inference here.

::

    tensors     request/response types, datatype tables, tensor digest
    context     RequestContext: who asked, how, and what happened
    service     InferenceService.infer: the whole request path in one function
    admission   adaptive concurrency limit + bounded prioritised queue, 429 pacing
    cache       prediction cache (LRU by bytes, TTL)
    batching    dynamic batcher, one per model version
    parts       build_parts(settings): the one builder the app, benches and tests share

Nothing in this package imports a wire protocol (aiohttp, grpc) or ``appliance.protocol``.
"""
