"""keep_freed_memory: a CPU training step reuses its freed activations instead of faulting their
pages in again (MobileNetV3-small at 96 px, batch 32: thousands of page faults per step by default)."""
import platform
import subprocess
import sys

import pytest

STEPS = """
import resource, sys
import torch
from training.allocator import keep_freed_memory
from training.models.encoders import build_encoder
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
encoder = build_encoder("mobilenet_v3_small").train()
images = torch.randn(32, 3, 96, 96)
faults = []
for step in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    encoder.zero_grad(set_to_none=True)
    encoder(images).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[2:]) / 3)  # after two warm-up steps
"""


def page_faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_training_steps_reuse_freed_memory():
    kept, default = page_faults_per_step("keep"), page_faults_per_step("default")
    assert kept < 1024, (kept, default)  # under 4 MB of fresh pages a step (here about 9,500 pages by default)
    assert kept <= default
