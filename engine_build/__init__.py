"""Deployment builds of a trained network: the ONNX export (`engine_build.onnx_export`), validated
numerically against PyTorch, which the TensorRT engine and the torch-free runtime are built from."""
