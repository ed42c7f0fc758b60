"""Torch-free inference: person crops -> SMPL-format meshes through ONNX Runtime or TensorRT.

    from hkmr_ros.inference import load_estimator
    est = load_estimator()              # hkmr_ros/data/hkmr_default.onnx, backend "auto"
    meshes = est.estimate(crops)        # list of MeshEstimate

numpy, OpenCV and onnxruntime only; tensorrt and cuda-python (or pycuda) are imported when the
TensorRT backend is asked for.
"""
from hkmr_ros.inference.errors import (BackendUnavailableError, EngineError, EstimatorError, InputError,
                                       ModelError, ModelNotFoundError, SidecarError)
from hkmr_ros.inference.estimator import BACKENDS, DEFAULT_MODEL, Estimator, MeshEstimate, load_estimator

__all__ = ["load_estimator", "Estimator", "MeshEstimate", "EstimatorError", "InputError", "ModelError",
           "ModelNotFoundError", "SidecarError", "BackendUnavailableError", "EngineError", "BACKENDS",
           "DEFAULT_MODEL"]
