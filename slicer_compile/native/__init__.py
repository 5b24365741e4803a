"""Neutral helpers for the native code, imported by the codec and the backends alike
(and importing neither): where the C++/CUDA sources and builds are (``locations``),
the CMake runner (``cmake``), and cuda-python device buffers (``cuda``)."""
