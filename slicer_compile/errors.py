"""Typed exceptions shared by every layer of slicer-compile.

Library code raises these; the CLI turns them into a one-line message and a
non-zero exit code. Each one is also a ``ValueError`` where the cause is bad
input, so callers that only know the standard library still catch them.
"""


class SlicerCompileError(Exception):
    """Base class of every error slicer-compile raises on purpose."""


class ConfigError(SlicerCompileError, ValueError):
    """A codec or compiler setting is outside its valid range."""


class PayloadError(SlicerCompileError, ValueError):
    """A payload is malformed, truncated, oversized or inconsistent.

    The decoder raises only this, whatever the bytes: it validates every
    length, count and index against the buffer and the configured limits
    before it allocates anything.
    """


class TensorError(SlicerCompileError, ValueError):
    """A tensor handed to an encoder cannot be encoded (NaN/Inf, bad dtype, too large)."""


class InputError(SlicerCompileError, ValueError):
    """An input array does not match what the model expects (name, rank, shape, dtype)."""


class ModelError(SlicerCompileError, ValueError):
    """A model file cannot be loaded, normalised or split (not ONNX, truncated, no valid cut)."""


class DeviceError(SlicerCompileError, ValueError):
    """An unknown device name, or a device profile that cannot be read."""


class ArtifactError(SlicerCompileError, ValueError):
    """An artifact directory is missing, incomplete or of another schema version."""


class BackendUnavailableError(SlicerCompileError, RuntimeError):
    """A backend (TensorRT, a GPU) is not available on this machine; the message says what is missing."""
