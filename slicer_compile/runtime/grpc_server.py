"""The KServe v2 gRPC transport (``GRPCInferenceService``, the protocol Triton speaks),
served by grpcio in front of a :class:`~slicer_compile.runtime.host.ModelHost`, so that
``tritonclient.grpc`` works against the embedded server as it does against Triton.

The protobuf messages and the service stub come from tritonclient's grpc package
(the triton extra: ``pip install '.[triton]'``); grpcio enforces the message size
limit. Tensors travel as ``raw_input_contents`` / ``raw_output_contents``; every
input's byte count is checked against its datatype and shape before an array is made.
"""

from __future__ import annotations

import math
from concurrent import futures
from pathlib import Path

import numpy as np

from slicer_compile import __version__
from slicer_compile.errors import BackendUnavailableError, SlicerCompileError
from slicer_compile.runtime.access import Access
from slicer_compile.runtime.host import HostError, ModelHost
from slicer_compile.runtime.protocol import ARTIFACT_PARAMETER, DATATYPES, InferMessage, datatype_of

#: HTTP status (what the host speaks) -> gRPC status code name.
_GRPC_CODE = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 500: "INTERNAL",
              503: "UNAVAILABLE"}


def _grpc_modules():
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError:
        raise BackendUnavailableError("the gRPC endpoint needs grpcio and tritonclient's KServe v2 protobuf: "
                                      "pip install '.[triton]' in the slicer-compile source tree") from None
    return grpc, service_pb2, service_pb2_grpc


def _parameter_value(parameter):
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)


def message_from_request(request, max_bytes: int) -> InferMessage:
    """A ModelInferRequest as an :class:`InferMessage`, every size checked first (no
    tensor may claim more than ``max_bytes``, the request limit)."""
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise HostError(400, "bad_request", f"{len(request.inputs)} inputs but {len(request.raw_input_contents)} "
                                            "raw contents")
    tensors = {}
    for index, entry in enumerate(request.inputs):
        dtype = DATATYPES.get(entry.datatype)
        if dtype is None:
            raise HostError(400, "bad_request", f"input {entry.name!r}: unknown datatype {entry.datatype!r}")
        shape = tuple(int(d) for d in entry.shape)
        if any(d < 0 for d in shape) or math.prod(shape) * dtype.itemsize > max_bytes:
            raise HostError(400, "bad_request", f"input {entry.name!r}: shape {shape} is not allowed")
        if not request.raw_input_contents:
            raise HostError(400, "bad_request", "inputs must travel as raw_input_contents")
        raw = request.raw_input_contents[index]
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise HostError(400, "bad_request", f"input {entry.name!r}: {len(raw)} bytes for {entry.datatype} {shape}")
        if entry.name in tensors:
            raise HostError(400, "bad_request", f"input {entry.name!r} is given twice")
        tensors[entry.name] = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    parameters = {key: _parameter_value(value) for key, value in request.parameters.items()}
    return InferMessage(tensors, parameters, request.id, request.model_name)


class _Service:
    """GRPCInferenceService's calls, each a thin translation to the host."""

    def __init__(self, host: ModelHost, service_pb2, grpc):
        self.host, self.pb, self.grpc = host, service_pb2, grpc

    def _abort(self, context, error: HostError):
        self.host.metrics.count_error(getattr(error, "model", ""), error.reason)
        context.abort(getattr(self.grpc.StatusCode, _GRPC_CODE.get(error.status, "UNKNOWN")), str(error))

    def ServerLive(self, request, context):  # noqa: N802 (the service's names)
        return self.pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return self.pb.ServerReadyResponse(ready=self.host.accepting)

    def ModelReady(self, request, context):  # noqa: N802
        return self.pb.ModelReadyResponse(ready=self.host.accepting and request.name in self.host.models)

    def ServerMetadata(self, request, context):  # noqa: N802
        meta = self.host.server_metadata()
        return self.pb.ServerMetadataResponse(name=meta["name"], version=__version__, extensions=meta["extensions"])

    def ModelMetadata(self, request, context):  # noqa: N802
        try:
            meta = self.host.model(request.name).metadata()
        except HostError as exc:
            return self._abort(context, exc)
        tensor = self.pb.ModelMetadataResponse.TensorMetadata
        return self.pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t.get("datatype", ""), shape=t.get("shape", []))
                     for t in meta["outputs"]])

    def ModelConfig(self, request, context):  # noqa: N802
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2

        try:
            entry = self.host.model(request.name).config_entry()
        except HostError as exc:
            return self._abort(context, exc)
        return self.pb.ModelConfigResponse(config=json_format.ParseDict(entry, model_config_pb2.ModelConfig()))

    def ModelStatistics(self, request, context):  # noqa: N802
        from google.protobuf import json_format

        try:
            stats = self.host.statistics(request.name)
        except HostError as exc:
            return self._abort(context, exc)
        return json_format.ParseDict({"model_stats": stats}, self.pb.ModelStatisticsResponse())

    def RepositoryIndex(self, request, context):  # noqa: N802
        index = self.pb.RepositoryIndexResponse.ModelIndex
        return self.pb.RepositoryIndexResponse(models=[index(**entry) for entry in self.host.repository_index()])

    def ModelInfer(self, request, context):  # noqa: N802
        if not self.host.admit():
            return self._abort(context, HostError(503, "shutting_down", "the server is shutting down"))
        try:
            message = message_from_request(request, self.host.config.max_request_bytes)
            reply = self.host.infer(request.model_name, message)
        except HostError as exc:
            exc.model = request.model_name
            return self._abort(context, exc)
        finally:
            self.host.release()
        response = self.pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        for key, value in reply.parameters.items():
            parameter = response.parameters[key]
            if isinstance(value, bool):
                parameter.bool_param = value
            elif isinstance(value, int):
                parameter.int64_param = value
            elif isinstance(value, float):
                parameter.double_param = value
            else:
                parameter.string_param = str(value)
        for name, array in reply.tensors.items():
            array = np.ascontiguousarray(array)
            response.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
            response.raw_output_contents.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        return response


def _token_interceptor(grpc, access: Access):
    """Refuse (UNAUTHENTICATED) every call but the health checks without the token."""
    open_methods = ("/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")

    def refuse(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")

    refusal = grpc.unary_unary_rpc_method_handler(refuse)

    class TokenInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            metadata = dict(details.invocation_metadata or ())
            if details.method in open_methods or access.authorized(metadata.get("authorization")):
                return continuation(details)
            return refusal

    return TokenInterceptor()


class GrpcEndpoint:
    """A grpcio server for one host on ``address:port`` (port 0: any free one).

    grpcio bounds what the HTTP side bounds by hand: message sizes (the request limit),
    and concurrent calls (``max_connections``; beyond, RESOURCE_EXHAUSTED).
    """

    def __init__(self, host: ModelHost, address: str = "127.0.0.1", port: int = 8701, access: Access | None = None):
        grpc, service_pb2, service_pb2_grpc = _grpc_modules()
        access = access or Access()
        config = host.config
        limit = int(config.max_request_bytes)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="grpc"),
                                  options=[("grpc.max_receive_message_length", limit),
                                           ("grpc.max_send_message_length", max(limit, 64 << 20))],
                                  maximum_concurrent_rpcs=config.max_connections,
                                  interceptors=[_token_interceptor(grpc, access)] if access.token else None)
        servicer = type("Servicer", (_Service, service_pb2_grpc.GRPCInferenceServiceServicer), {})
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer(host, service_pb2, grpc), self.server)
        target = f"{address}:{port}"
        try:
            if access.tls:
                credentials = grpc.ssl_server_credentials([(Path(access.tls_key).read_bytes(),
                                                            Path(access.tls_cert).read_bytes())])
                self.port = self.server.add_secure_port(target, credentials)
            else:
                self.port = self.server.add_insecure_port(target)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise SlicerCompileError(f"cannot listen for gRPC on {target}")
        self.address = address

    @property
    def url(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> "GrpcEndpoint":
        self.server.start()
        return self

    def stop(self, grace_s: float = 30) -> None:
        self.server.stop(grace_s).wait()


__all__ = ["ARTIFACT_PARAMETER", "GrpcEndpoint", "message_from_request"]
