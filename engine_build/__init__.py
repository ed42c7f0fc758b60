"""Deployment builds of a trained network (torch side): `python -m engine_build` exports the network
with its body model to one straight ONNX graph (onnx_export, body, rotations), validates it against
PyTorch and writes the sidecar the torch-free runtime reads; gpu_check compares the GPU paths
(torch CUDA, ONNX Runtime CUDA, TensorRT) with ONNX Runtime CPU. See docs/engines.md."""
