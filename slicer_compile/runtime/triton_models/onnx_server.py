"""Triton Python backend: a split's server part through ONNX Runtime, for a Triton
without the onnxruntime backend (the one the nvidia-pytriton wheel bundles).

The ONNX file is ``model.onnx`` beside this one; ``parameters`` (config.pbtxt):
``inputs`` and ``outputs``, the tensor names in order (JSON), ``threads``: ONNX Runtime
intra-op threads (0: one per core). Dynamic batching hands this model several requests
at once: they run as one batch, concatenated along the batch axis and split back.
"""

import json
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        global np, pb_utils
        import numpy as np
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        from slicer_compile.backends.registry import onnxruntime_session_options

        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
        self.inputs, self.outputs = json.loads(parameters["inputs"]), json.loads(parameters["outputs"])
        model = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        options = onnxruntime_session_options(optimize=True, threads=int(parameters["threads"]))
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        feeds = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs}
                 for r in requests]
        sizes = [len(feed[self.inputs[0]]) for feed in feeds]
        try:
            batch = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.inputs}
            results = self.session.run(self.outputs, batch)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the others down: run alone
            if len(requests) == 1:
                return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))]
            return [self.execute([r])[0] for r in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value[start: start + size]))
                       for name, value in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
