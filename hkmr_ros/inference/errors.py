"""The estimator's exceptions: one base class to catch, subclasses that say what went wrong.

Each subclass also derives from the matching builtin (ValueError, FileNotFoundError,
RuntimeError), so callers that catch those keep working.
"""
from __future__ import annotations


class EstimatorError(Exception):
    """Base class of everything hkmr_ros.inference raises on purpose."""


class InputError(EstimatorError, ValueError):
    """The crops given to `Estimator.estimate` are not usable (dtype, shape, empty, NaN)."""


class ModelNotFoundError(EstimatorError, FileNotFoundError):
    """The ONNX graph (or its sidecar) does not exist."""


class ModelError(EstimatorError, ValueError):
    """The ONNX graph exists but cannot be loaded or does not have the expected interface."""


class SidecarError(EstimatorError, ValueError):
    """The model's JSON sidecar is unreadable, of an unknown format, or disagrees with the graph."""


class BackendUnavailableError(EstimatorError, RuntimeError):
    """The requested backend (or precision) cannot run here: a package, a provider or a GPU is missing."""


class EngineError(EstimatorError, RuntimeError):
    """A TensorRT engine could not be built, deserialised or run, or a CUDA call failed."""
