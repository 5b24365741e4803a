"""Triton Python-backend models, as files: ``slicer-compile triton`` copies each into a
model's version folder as ``model.py``, unchanged, and its ``config.pbtxt``
``parameters`` say what the instance is (which tensors, shapes, artifact). They import
slicer-compile, so the backend's Python environment must have it (runtime.triton_server
sets one up)."""
