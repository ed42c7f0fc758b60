"""The pre-rendered store: a stored sample equals its freshly rendered twin, rendering resumes and
splits over processes with identical bytes, a killed renderer leaves no workers behind, and
training resumes bit-identically from a store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import training.body.pose_sampler  # noqa: F401  (roma before any EGL context)
from test_smplify import write_tiny_smpl
from training.body.body_model import load_body_model
from training.config import load_config
from training.datasets.store import (
    StoreDataset,
    complete_shards,
    create_store,
    generator_config,
    read_store_manifest,
    ready_samples,
    render_store,
    resize_uint8,
    shard_files,
)
from training.datasets.store import main as store_main
from training.datasets.synthetic import LABEL_KEYS, SyntheticGenerator
from training.train import train

SMOKE = Path(__file__).resolve().parents[1] / "training" / "configs" / "smoke.yaml"
SIZE = 64


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(body model file, store of 10 samples in shards of 4 at 64 px)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("store")
    body = write_tiny_smpl(root / "tiny_smpl.npz")
    render_store(root / "s", 10, seed=5, image_size=SIZE, shard_size=4, body_model_file=str(body), progress=False)
    return body, root / "s"


def test_sample_equals_its_freshly_rendered_twin(store):
    body, root = store
    manifest = read_store_manifest(root)
    assert complete_shards(root, manifest) == [0, 1, 2]
    dataset = StoreDataset(root)
    assert len(dataset) == 10 and dataset.image_size == SIZE
    generator = SyntheticGenerator(load_body_model(body), 5, generator_config(manifest))
    for index in (0, 5, 9):
        # rendered afresh with the batch its shard was rendered in (the body model's float sums
        # depend on the batch); alone, the labels agree to float precision
        shard = range(index // 4 * 4, min(index // 4 * 4 + 4, 10))
        fresh = generator.generate(list(shard))[index % 4]
        alone = generator.generate([index])[0]
        assert np.allclose(alone["joints_spin24"], fresh["joints_spin24"], atol=1e-5)
        stored = dataset.raw_sample(index)
        assert stored["img"].dtype == np.uint8 and stored["img"].shape == (SIZE, SIZE, 3)
        assert np.array_equal(stored["img"], resize_uint8(fresh["img"][None], SIZE)[0])
        labels = np.load(shard_files(root, index // 4)["labels"])
        for key in LABEL_KEYS:
            assert np.array_equal(labels[key][index % 4], fresh[key]), key
        assert np.array_equal(stored["joints_3d"][:, :3], fresh["joints_spin24"])
    item = dataset.sample(3)
    assert item["img"].dtype == torch.uint8 and item["img"].shape == (3, SIZE, SIZE)


def test_resumed_and_multiprocess_rendering_give_the_same_bytes(store, tmp_path, capsys):
    body, root = store
    reference = {s: shard_files(root, s)["images"].read_bytes() for s in range(3)}
    # two processes, interrupted after shard 1 (its labels missing), then resumed
    render_store(tmp_path / "p", 10, seed=5, image_size=SIZE, shard_size=4, processes=2,
                 body_model_file=str(body), progress=False)
    shard_files(tmp_path / "p", 1)["labels"].unlink()
    shard_files(tmp_path / "p", 2)["images"].write_bytes(b"partial")
    shard_files(tmp_path / "p", 2)["labels"].unlink()
    manifest = read_store_manifest(tmp_path / "p")
    assert complete_shards(tmp_path / "p", manifest) == [0]
    assert len(StoreDataset(tmp_path / "p")) == 4  # only the gap-free prefix of complete shards
    assert ready_samples(tmp_path / "p", manifest) == 4
    assert store_main(["info", str(tmp_path / "p"), "--ready"]) == 0
    assert capsys.readouterr().out.strip() == "4"
    render_store(tmp_path / "p", 10, seed=5, image_size=SIZE, shard_size=4, body_model_file=str(body), progress=False)
    for s in range(3):
        assert shard_files(tmp_path / "p", s)["images"].read_bytes() == reference[s]


def test_store_settings_are_checked(store, tmp_path):
    body, root = store
    with pytest.raises(ValueError, match="other settings"):
        create_store(root, 10, seed=6, image_size=SIZE, shard_size=4, body_model_file=str(body))
    with pytest.raises(ValueError, match="complete samples"):
        StoreDataset(root, num_samples=11)
    with pytest.raises(FileNotFoundError, match="no store manifest"):
        StoreDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="other settings"):
        create_store(root, 10, seed=5, image_size=SIZE, shard_size=4, body_model_file=str(body), bystander_prob=0.5)
    with pytest.raises(ValueError, match="probability"):
        create_store(tmp_path / "b", 10, seed=5, image_size=SIZE, bystander_prob=1.5)


def test_store_written_before_an_option_existed_still_resumes(store, tmp_path):
    body, root = store
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((root / "manifest.json").read_text())
    for key in ("bystander_prob", "bystander_depth_gap", "bystander_offset"):
        del manifest["generator"][key]
    (old / "manifest.json").write_text(json.dumps(manifest))
    resumed = create_store(old, 10, seed=5, image_size=SIZE, shard_size=4, body_model_file=str(body))
    assert resumed["generator"]["bystander_prob"] == 0.0


def store_config(store, *extra):
    body, root = store
    return load_config(SMOKE, [f"model.body_model={body}", "data.synthetic_roots=[]", f"data.store_roots=[{root}]",
                               f"data.image_size={SIZE}", "device=cpu", "prior.kind=none",
                               "model.regressor_kwargs={inner_iters: 1, outer_iters: 2}", "optim.batch_size=3",
                               "data.augment_kwargs={occluder_prob: 0.5}", "log.checkpoint_every=2",
                               "optim.lr_schedule=cosine", "optim.warmup_steps=1", "optim.channels_last=true",
                               *extra])


def test_training_resumes_bit_identically_from_the_store(store, tmp_path):
    straight = train(store_config(store, "optim.steps=4"), tmp_path / "straight")
    train(store_config(store, "optim.steps=2"), tmp_path / "split")
    resumed = train(store_config(store, "optim.steps=4"), tmp_path / "split", resume=True)
    assert resumed.losses == straight.losses[2:]
    a = torch.load(tmp_path / "straight" / "checkpoint_00000004.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint_00000004.pt", weights_only=False)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the number of store samples used is resolved and saved with the run
    assert load_config(tmp_path / "split" / "config.yaml").data.store_samples == [10]


def test_stop_at_then_resume_equals_the_straight_run(store, tmp_path):
    """--stop-at keeps the schedule (cosine to optim.steps): stopping and resuming changes nothing."""
    straight = train(store_config(store, "optim.steps=4"), tmp_path / "straight")
    stopped = train(store_config(store, "optim.steps=4", "log.checkpoint_every=100"), tmp_path / "split", stop_at=3)
    assert stopped.step == 3 and stopped.checkpoint.name == "checkpoint_00000003.pt"
    resumed = train(store_config(store, "optim.steps=4", "log.checkpoint_every=100"), tmp_path / "split", resume=True)
    assert stopped.losses + resumed.losses == straight.losses


# stands in for render_store's worker pool: two spawned processes that would outlive their parent
SLEEPING_POOL = """
import multiprocessing, time
from training.datasets.store import stopped_with
ctx = multiprocessing.get_context("spawn")
workers = [ctx.Process(target=time.sleep, args=(600,)) for _ in range(2)]
with stopped_with(workers):
    for w in workers:
        w.start()
    print(" ".join(str(w.pid) for w in workers), flush=True)
    for w in workers:
        w.join()
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_to_the_renderer_stops_its_workers():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    parent = subprocess.Popen([sys.executable, "-c", SLEEPING_POOL], stdout=subprocess.PIPE, text=True, env=env)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    parent.send_signal(signal.SIGTERM)  # the parent alone, as `kill PID` or a scheduler sends it
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    assert not any(alive(p) for p in pids)


def test_an_error_in_the_pool_stops_its_workers():
    import multiprocessing
    import time

    from training.datasets.store import stopped_with

    workers = [multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,))]
    with pytest.raises(RuntimeError, match="boom"):
        with stopped_with(workers):
            workers[0].start()
            raise RuntimeError("boom")
    assert not workers[0].is_alive() and workers[0].exitcode == -signal.SIGTERM
