"""Triton Python backend: an LLM artifact's server side, its sessions in Triton.

Under Triton's sequence batcher the requests of a sequence carry its correlation id and
START / END flags (control inputs); this model runs them on a
:class:`~slicer_compile.runtime.llm.host.LlmHost`, which holds each sequence's KV cache
of the server's layers and batches the steps that arrive together. The tensors and the
request parameters (``cut``, ``mode``, ``max_new_tokens``, ``step_index``) are the
embedded LLM server's (runtime.llm.server), so ``EdgeLLM`` talks to either.

``parameters`` (config.pbtxt): ``max_sessions``, ``idle_timeout_s``, ``max_kv_bytes``,
``max_batch``; the artifact is ``artifact/`` beside this file.
"""

import json
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        global np, pb_utils, HostError, ProtocolError, Step, cut_payloads
        import numpy as np
        import triton_python_backend_utils as pb_utils

        from slicer_compile.runtime.host import HostError
        from slicer_compile.runtime.llm.host import LlmHost, LlmServerConfig, Step
        from slicer_compile.runtime.protocol import ProtocolError, cut_payloads

        config = json.loads(args["model_config"])
        p = {k: v["string_value"] for k, v in config["parameters"].items()}
        artifact = Path(args["model_repository"]) / args["model_version"] / "artifact"
        self.host = LlmHost(artifact, LlmServerConfig(
            max_sessions=int(p["max_sessions"]), idle_timeout_s=float(p["idle_timeout_s"]),
            max_kv_bytes=int(p["max_kv_bytes"]), max_batch=int(p["max_batch"])))

    def _tensor(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def _payloads(self, request, data, lengths):
        """Concatenated payloads (UINT8 [N]) cut by their lengths (INT64), or None."""
        blob, sizes = self._tensor(request, data), self._tensor(request, lengths)
        if blob is None:
            return None
        if sizes is None:
            raise ProtocolError(f"{data} needs {lengths}")
        return cut_payloads(blob, sizes, data, lengths)

    def _step(self, request):
        parameters = json.loads(request.parameters() or "{}")
        flag = lambda name: bool(self._tensor(request, name).ravel()[0])  # noqa: E731 - the batcher's controls
        hidden = self._tensor(request, "hidden")
        payloads = self._payloads(request, "hidden_payloads", "payload_lengths")
        if payloads is not None:
            hidden = self.host.decode_token_payloads(payloads)
        kv = self._tensor(request, "kv")
        kv = self.host.raw_kv(kv) if kv is not None else None
        kv_payloads = self._payloads(request, "kv_payloads", "kv_lengths")
        if kv_payloads is not None:
            kv = self.host.decode_kv_payloads(kv_payloads)
        return Step(str(request.correlation_id()), start=flag("START"), end=flag("END"), cut=parameters.get("cut"),
                    hidden=hidden, token_ids=self._tensor(request, "input_ids"),
                    handover=parameters.get("mode") == "handover", kv=kv,
                    max_new_tokens=parameters.get("max_new_tokens", 1), index=parameters.get("step_index"))

    def execute(self, requests):
        pending = []
        with self.host.hold():  # the steps that came together, batched together
            for request in requests:
                try:
                    pending.append(self.host.submit(self._step(request)))
                except (HostError, ProtocolError) as exc:
                    pending.append(exc)
        responses = []
        for item in pending:
            try:
                if isinstance(item, Exception):
                    raise item
                result = item.result()
                tokens = pb_utils.Tensor("tokens", np.array(result.tokens, np.int64))
                responses.append(pb_utils.InferenceResponse(output_tensors=[tokens]))
            except (HostError, ProtocolError) as exc:
                status = getattr(exc, "status", 400)
                code = pb_utils.TritonError.INVALID_ARG if status < 500 else pb_utils.TritonError.INTERNAL
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{status}: {exc}", code)))
        return responses

    def finalize(self):
        self.host.stop()
