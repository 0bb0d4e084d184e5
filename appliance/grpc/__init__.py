"""The gRPC front end: the Open Inference Protocol's ``inference.GRPCInferenceService`` (KServe v2
plus the Triton extensions its clients use) on ``grpc.aio``, on the REST server's event loop.

Like the REST front end it only authenticates, decodes and encodes; every inference goes through
the one :class:`~appliance.dataplane.service.InferenceService`, so admission, the cache, batching
across REST and gRPC requests, audit records and metrics are shared. The core never imports this
package. Modules import the ``grpc`` library absolutely (``import grpc``): this package's own
name does not shadow it.
"""
