"""Triton Python backend: a codec payload (UINT8 [N]) -> the activation it stands for.

Configured by the model's ``parameters`` (config.pbtxt): ``artifact_id``; ``input``,
``output``: tensor names; ``shape``, ``dtype``: what the payload must decode to (JSON);
``centre``: the channel offsets the edge coded out (codec.centring, JSON, or "null").
A payload of another artifact (request parameter ``slicer_artifact_id``), shape or
dtype, or one that does not decode, is answered with an error, never a tensor.
"""

import json


def _parameter(config: dict, key: str) -> str:
    return config["parameters"][key]["string_value"]


class TritonPythonModel:
    def initialize(self, args):
        # Imported here, not at the top: Triton loads this file once to read its
        # config, before the environment question is settled.
        global np, pb_utils, decode, PayloadError, restored
        import numpy as np
        import triton_python_backend_utils as pb_utils

        from slicer_compile.codec import PayloadError, decode
        from slicer_compile.codec.centring import Centre, restored

        config = json.loads(args["model_config"])
        self.artifact_id = _parameter(config, "artifact_id")
        self.input, self.output = _parameter(config, "input"), _parameter(config, "output")
        self.shape = json.loads(_parameter(config, "shape"))
        self.dtype = np.dtype(_parameter(config, "dtype"))
        centre = json.loads(_parameter(config, "centre"))
        self.centre = Centre.from_dict(centre, tuple(self.shape), self.output) if centre else None

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                parameters = json.loads(request.parameters() or "{}")
                if parameters.get("slicer_artifact_id", self.artifact_id) != self.artifact_id:
                    raise PayloadError(f"the request is for artifact {parameters['slicer_artifact_id']!r}, "
                                       f"this repository serves {self.artifact_id!r}")
                payload = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()
                value = decode(np.ascontiguousarray(payload, dtype=np.uint8).tobytes())
                if list(value.shape) != self.shape:
                    raise PayloadError(f"the payload decodes to {list(value.shape)}, expected {self.shape}")
                tensor = pb_utils.Tensor(self.output, restored(value, self.centre).astype(self.dtype))
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            except PayloadError as exc:  # the client's mistake: 400, not the server's 500
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
