"""The Estimator on the shipped default ONNX against the training code in PyTorch, crop to result.

Same uint8 crops; training's path: `image_to_tensor` (normalise) -> `resize_images` (antialiased
bilinear to S) -> the network (`training.evaluate.predict`). The runtime's path: numpy
preprocessing -> ONNX Runtime. Skipped where torch or the training code is not installed.
"""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
augment = pytest.importorskip("training.datasets.augment")
evaluate = pytest.importorskip("training.evaluate")

from hkmr_ros.inference import DEFAULT_MODEL, load_estimator  # noqa: E402
from hkmr_ros.inference.model_info import file_sha256  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_model_matches_the_training_pipeline_on_the_same_crops():
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"{DEFAULT_MODEL} missing")
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    checkpoint = ROOT / meta["model"]["checkpoint"]
    if not checkpoint.is_file() or file_sha256(checkpoint) != meta["model"]["checkpoint_sha256"]:
        pytest.skip("the checkpoint the default ONNX was exported from is not here")
    est = load_estimator(None, backend="onnxruntime", threads=1)
    method = evaluate.load_method(checkpoint, "default", torch.device("cpu"))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    crops[1] = 128  # a flat crop too
    mean = torch.tensor(meta["input"]["mean"])[:, None, None]
    std = torch.tensor(meta["input"]["std"])[:, None, None]
    imgs = torch.stack([torch.from_numpy(c.astype(np.float32).transpose(2, 0, 1) / 255.0) for c in crops])
    imgs = (imgs - mean) / std  # as augment.image_to_tensor, with the sidecar's normalisation
    with torch.no_grad():
        want = evaluate.predict(method, imgs, (meta["input"]["mean"], meta["input"]["std"]))
    got = est.estimate(crops)
    for i, m in enumerate(got):
        np.testing.assert_allclose(m.rotmat, want["rotmat"][i].numpy(), atol=1e-3)
        np.testing.assert_allclose(m.betas, want["betas"][i].numpy(), atol=1e-4)
        np.testing.assert_allclose(m.cam, want["cam"][i].numpy(), atol=1e-4)
    # and the network input itself equals training's resize
    x = augment.resize_images(imgs, est.image_size).numpy()
    np.testing.assert_allclose(est.preprocess(crops), x, atol=1e-5)
