"""``inference.GRPCInferenceService``: thin handlers over the one service.

Every handler builds a :class:`RequestContext` (``protocol="grpc"``, the call's deadline as the
request's deadline), checks the caller with :class:`CallGuard`, calls the service or the live
repository, and encodes. Whatever goes wrong leaves through :meth:`_refuse`: the service's one
door (metrics, audit record, 429 pacing) with the HTTP-equivalent status, then the gRPC status of
``appliance.grpc.errors``. An unexpected exception is logged and answered INTERNAL through the
same door (as a 500); it never reaches grpc's own handler, and never stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc

from appliance import __version__
from appliance.auth.principal import Principal
from appliance.dataplane.context import RequestContext
from appliance.dataplane.tensors import InferRequest
from appliance.errors import ApplianceError, InferenceFailed, InvalidInput, ModelNotReady
from appliance.grpc import messages
from appliance.grpc.auth import CallGuard, client_address
from appliance.grpc.codec import decode_request, encode_response
from appliance.grpc.errors import code_of, trailers_of
from appliance.grpc.protos import grpc_service_pb2 as pb
from appliance.logs import RequestLog
from appliance.parts import Parts
from appliance.protocol.errors import status_of

log = logging.getLogger("appliance.grpc")
request_log = RequestLog(logging.getLogger("appliance.request"))
SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ["model_configuration", "model_repository", "statistics"]
_OFFLOAD_BYTES = 1 << 20  # decode/encode tensors above 1 MiB in a thread, off the event loop
Context: TypeAlias = grpc.aio.ServicerContext
Body = Callable[[Any, RequestContext], Awaitable[Any]]


class Servicer:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.service = parts.service
        self.repository = parts.repository
        self.calls = CallGuard(parts.guard)
        self.max_elements = parts.settings.limits.max_tensor_elements
        self.default_timeout_ms = parts.settings.limits.default_timeout_ms
        self.request_log = parts.settings.observability.request_log

    # --- inference ------------------------------------------------------------------------
    async def model_infer(self, message: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        ctx = self._context(context, "ModelInfer")
        try:
            self.calls.check(context, ctx, "ModelInfer", message.model_name)
            response = await self._infer(ctx, message)
        except ApplianceError as error:
            await self._refuse(ctx, error, context, message.model_name)
        except Exception:
            log.exception("unhandled error in ModelInfer")
            await self._refuse(ctx, InferenceFailed("internal server error"), context, message.model_name)
        self._log(ctx, 200)
        return response

    async def _infer(self, ctx: RequestContext, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """Decode (only once admission has room), infer, encode. The service names ``ctx.model``
        once it has resolved it: a name a client made up never becomes a metric label."""
        ctx.body_bytes = sum(map(len, message.raw_input_contents))  # admission's byte cap, before decoding

        async def decode() -> InferRequest:
            if ctx.body_bytes > _OFFLOAD_BYTES:
                request = await asyncio.to_thread(decode_request, message, self.max_elements)
            else:
                request = decode_request(message, self.max_elements)
            ctx.apply_parameters(request.parameters, self.default_timeout_ms)
            return request

        response = await self.service.infer(ctx, message.model_name, message.model_version or None, decode)
        if sum(a.nbytes for a in response.outputs.values()) > _OFFLOAD_BYTES:
            return await asyncio.to_thread(encode_response, response)
        return encode_response(response)

    async def model_stream_infer(self, messages_in: AsyncIterator[pb.ModelInferRequest],
                                 context: Context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests of one stream are served concurrently (batched together like any others) and
        answered as they finish; a failed request is an in-stream error, not the end of the stream."""
        ctx = self._context(context, "ModelStreamInfer")
        try:
            principal = self.calls.authenticate(context, ctx)
        except ApplianceError as error:
            await self._refuse(ctx, error, context)
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read_stream(messages_in, ctx, principal, answers))
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()

    async def _read_stream(self, messages_in: AsyncIterator[pb.ModelInferRequest], first: RequestContext,
                           principal: Principal, answers: asyncio.Queue[pb.ModelStreamInferResponse | None]) -> None:
        pending: set[asyncio.Task[None]] = set()
        try:
            async for message in messages_in:
                task = asyncio.create_task(self._stream_one(message, first, principal, answers))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)
        finally:
            for task in pending:
                task.cancel()
            answers.put_nowait(None)

    async def _stream_one(self, message: pb.ModelInferRequest, first: RequestContext, principal: Principal,
                          answers: asyncio.Queue[pb.ModelStreamInferResponse | None]) -> None:
        ctx = RequestContext(request_id=_request_id(), client=first.client, protocol="grpc",
                             operation=first.operation, deadline=first.deadline)
        try:
            self.calls.authorize(principal, ctx, "ModelStreamInfer", message.model_name)
            answers.put_nowait(pb.ModelStreamInferResponse(infer_response=await self._infer(ctx, message)))
            self._log(ctx, 200)
            return
        except ApplianceError as error:
            status, text = status_of(error), error.message
            await self.service.refuse(ctx, error, status)
            self._log(ctx, status, message.model_name)
        except Exception:
            log.exception("unhandled error in ModelStreamInfer")
            text = "internal server error"
            await self.service.refuse(ctx, InferenceFailed(text), 500)
        echo = pb.ModelInferResponse(id=message.id, model_name=message.model_name,
                                     model_version=message.model_version)
        answers.put_nowait(pb.ModelStreamInferResponse(error_message=text, infer_response=echo))

    # --- health, metadata, repository --------------------------------------------------------
    async def _server_live(self, request: Any, ctx: RequestContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, request: Any, ctx: RequestContext) -> pb.ServerReadyResponse:
        ready = self.parts.state.ready and not self.service.draining and self.repository.all_ready()
        return pb.ServerReadyResponse(ready=ready)

    async def _server_metadata(self, request: Any, ctx: RequestContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="model-appliance", version=__version__, extensions=EXTENSIONS)

    async def _model_ready(self, request: pb.ModelReadyRequest, ctx: RequestContext) -> pb.ModelReadyResponse:
        try:
            self.repository.resolve(request.name, request.version or None)
        except ModelNotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def _model_metadata(self, request: pb.ModelMetadataRequest, ctx: RequestContext) -> Any:
        return messages.model_metadata(self.repository, request.name, request.version or None)

    async def _model_config(self, request: pb.ModelConfigRequest, ctx: RequestContext) -> Any:
        return messages.model_config(self.repository, request.name, request.version or None)

    async def _model_statistics(self, request: pb.ModelStatisticsRequest, ctx: RequestContext) -> Any:
        return messages.model_statistics(self.repository, self.parts.metrics, request.name, request.version or None)

    async def _repository_index(self, request: pb.RepositoryIndexRequest, ctx: RequestContext) -> Any:
        return messages.repository_index(self.parts.models.index(ready_only=request.ready))

    async def _repository_load(self, request: pb.RepositoryModelLoadRequest, ctx: RequestContext) -> Any:
        if any(key == "config" or key.startswith("file:") for key in request.parameters):
            raise InvalidInput("loading with an inline config or files is not supported: publish a version "
                               "into the repository (appliance models add) and load it")
        ctx.model = name = request.model_name
        loaded = await self.parts.models.load(name, ctx.principal)
        failed = [v for v in loaded if not v.ready]
        if failed and not any(v.ready for v in loaded):
            raise ModelNotReady(f"model '{name}' version {failed[0].version} failed to load: {failed[0].reason}")
        return pb.RepositoryModelLoadResponse()

    async def _repository_unload(self, request: pb.RepositoryModelUnloadRequest, ctx: RequestContext) -> Any:
        ctx.model = request.model_name
        await self.parts.models.unload(request.model_name, ctx.principal)
        return pb.RepositoryModelUnloadResponse()

    def unary(self, rpc: str) -> Callable[[Any, Context], Awaitable[Any]]:
        """The handler of a non-inference RPC: context, auth, the body, errors through one door."""
        body: Body = {
            "ServerLive": self._server_live, "ServerReady": self._server_ready,
            "ServerMetadata": self._server_metadata, "ModelReady": self._model_ready,
            "ModelMetadata": self._model_metadata, "ModelConfig": self._model_config,
            "ModelStatistics": self._model_statistics, "RepositoryIndex": self._repository_index,
            "RepositoryModelLoad": self._repository_load, "RepositoryModelUnload": self._repository_unload,
        }[rpc]

        async def handle(request: Any, context: Context) -> Any:
            ctx = self._context(context, rpc)
            try:
                self.calls.check(context, ctx, rpc, getattr(request, "name", None) or
                                 getattr(request, "model_name", None))
                return await body(request, ctx)
            except ApplianceError as error:
                await self._refuse(ctx, error, context)
            except Exception:
                log.exception("unhandled error in %s", rpc)
                await self._refuse(ctx, InferenceFailed("internal server error"), context)

        return handle

    # --- the shared steps ---------------------------------------------------------------------
    def _context(self, context: Context, rpc: str) -> RequestContext:
        ctx = RequestContext(request_id=_request_id(), client=client_address(context.peer()), protocol="grpc",
                             operation=f"/{SERVICE}/{rpc}")
        remaining = context.time_remaining()
        if remaining is not None:  # the call's deadline is the request's (the protocol's `timeout` cannot extend it)
            ctx.deadline = ctx.started + remaining
        return ctx

    async def _refuse(self, ctx: RequestContext, error: ApplianceError, context: Context,
                      asked_model: str = "") -> NoReturn:
        status = status_of(error)
        await self.service.refuse(ctx, error, status)  # metrics, audit, 429 pacing: one door
        if ctx.model or asked_model:
            self._log(ctx, status, asked_model)
        await context.abort(code_of(error), error.message, trailing_metadata=trailers_of(error))
        raise AssertionError("abort() raises")  # pragma: no cover

    def _log(self, ctx: RequestContext, status: int, asked_model: str = "") -> None:
        """The request log line (inference only, not 429s: a flood is counted, not logged)."""
        if self.request_log and status != 429 and request_log.enabled():
            request_log.write({
                "request_id": ctx.request_id, "trace_id": ctx.trace_id, "principal": ctx.principal,
                "model": ctx.model or asked_model, "version": ctx.version, "protocol": "grpc", "status": status,
                "batch_size": ctx.batch_size, "cache_hit": ctx.cache_hit,
                "latency_ms": round((time.monotonic() - ctx.started) * 1000, 3)})


def _request_id() -> str:
    return f"{random.getrandbits(128):032x}"  # unique, not secret (see protocol/middleware.py)
