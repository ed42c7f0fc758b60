"""The training entry point: a smoke run, learning, checkpoints, exact resume, the discriminator
ablation, SMPLify in the loop, clear errors, and a 2-process DistributedDataParallel run on gloo.

Data: a few synthetic samples rendered here with a tiny SMPL-format body model (tests/test_smplify.py),
so that everything runs in seconds on a CPU.
"""
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import training.body.pose_sampler  # noqa: F401  (roma before any EGL context: see the report)
from test_smplify import fit_problem, keypoints_of, write_tiny_smpl
from training.body.body_model import load_body_model
from training.config import load_config
from training.smplify import SMPLify, weak_perspective_to_translation
from training.train import (
    SeededSamples,
    StreamSampler,
    build_dataset,
    latest_checkpoint,
    main,
    smplify_supervision,
    train,
)

SMOKE = Path(__file__).resolve().parents[1] / "training" / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(body model file, synthetic shard folder of 8 samples, pose prior file)."""
    from training.datasets.synthetic import GeneratorConfig, generate_dataset
    from training.models.pose_prior import PosePriorConfig, PosePriorEncoder, save_pose_prior

    root = tmp_path_factory.mktemp("tiny")
    body = write_tiny_smpl(root / "tiny_smpl.npz")
    generate_dataset(root / "synthetic", 8, seed=3, body_model=load_body_model(body), shard_size=4,
                     cfg=GeneratorConfig(batch_size=8), progress=False)
    torch.manual_seed(0)
    prior = save_pose_prior(PosePriorEncoder(PosePriorConfig(latent_dim=4, hidden_dim=16, num_hidden_layers=1)),
                            root / "prior.pt")
    return body, root / "synthetic", prior


def tiny_overrides(tiny, *extra):
    body, data, prior = tiny
    return [f"model.body_model={body}", f"data.synthetic_roots=[{data}]", f"prior.vae_path={prior}",
            "data.image_size=32", "device=cpu",
            "model.regressor_kwargs={inner_iters: 1, outer_iters: 2}", *extra]


def tiny_config(tiny, *extra):
    return load_config(SMOKE, tiny_overrides(tiny, *extra))


def test_smoke_run_writes_checkpoints_config_and_logs(tiny, tmp_path):
    out = tmp_path / "run"
    args = ["--config", str(SMOKE), "--out", str(out)]
    for item in tiny_overrides(tiny, "optim.steps=4", "log.checkpoint_every=1", "log.keep_checkpoints=2"):
        args += ["--set", item]
    assert main(args) == 0
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_00000003.pt", "checkpoint_00000004.pt"]
    assert latest_checkpoint(out).name == "checkpoint_00000004.pt"
    saved = load_config(out / "config.yaml")
    assert saved == tiny_config(tiny, "optim.steps=4", "log.checkpoint_every=1", "log.keep_checkpoints=2")
    ckpt = torch.load(out / "checkpoint_00000004.pt", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["sampler"]["position"] == 4 * 4
    assert {"model", "optimizer", "scaler", "rng", "config"} <= set(ckpt)
    assert any((out / "tb").glob("events.out.tfevents.*"))
    # --resume without --config continues the saved run, here with a larger budget
    assert main(["--resume", "--out", str(out), "--set", "optim.steps=5"]) == 0
    assert latest_checkpoint(out).name == "checkpoint_00000005.pt"
    assert load_config(out / "config.yaml").optim.steps == 5


def test_validation_hook_reports_mpjpe(tiny, tmp_path):
    _, data, _ = tiny
    result = train(tiny_config(tiny, "optim.steps=2", f"data.val_root={data}", "log.val_every=1"), tmp_path / "run")
    assert set(result.metrics) == {"mpjpe", "pa_mpjpe"}
    assert 0 < result.metrics["pa_mpjpe"] < result.metrics["mpjpe"] < 1e4  # mm; Procrustes can only help
    # the run's curves, as training.plot_run reads and draws them
    from training import plot_run

    curves = plot_run.read_scalars(tmp_path / "run")
    steps, values = curves["val/mpjpe"]
    assert list(steps) == [1, 2] and np.isclose(values[-1], result.metrics["mpjpe"], rtol=1e-5)
    assert plot_run.main([str(tmp_path / "run"), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_run.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 1
    assert np.allclose(plot_run.running_mean(np.array([1.0, 3.0, 5.0]), 2), [1.0, 2.0, 4.0])


def test_loss_decreases_on_a_repeated_batch(tiny, tmp_path):
    # 8 samples, batch 8, no augmentation: every step sees the same batch
    cfg = tiny_config(tiny, "optim.steps=12", "optim.batch_size=8", "optim.lr=2e-3", "data.augment=false",
                      "log.checkpoint_every=1000")
    result = train(cfg, tmp_path / "run")
    first, last = result.losses[0], sum(result.losses[-3:]) / 3
    assert last < 0.7 * first, result.losses


def test_resume_continues_exactly(tiny, tmp_path):
    # two synthetic sources mixed by ratio, so the mixed dataset's epochs are exercised too
    body, data, _ = tiny
    extra = ("data.augment=false", f"data.synthetic_roots=[{data}, {data}]", "data.ratios=[0.7, 0.3]",
             "optim.batch_size=3", "log.checkpoint_every=2", "optim.grad_clip=1.0")
    straight = train(tiny_config(tiny, "optim.steps=4", *extra), tmp_path / "straight")
    train(tiny_config(tiny, "optim.steps=2", *extra), tmp_path / "split")
    resumed = train(tiny_config(tiny, "optim.steps=4", *extra), tmp_path / "split", resume=True)
    assert resumed.step == 4 and len(resumed.losses) == 2
    assert resumed.losses == straight.losses[2:]
    a = torch.load(tmp_path / "straight" / "checkpoint_00000004.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint_00000004.pt", weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # and training did move the parameters
    c = torch.load(tmp_path / "split" / "checkpoint_00000002.pt", weights_only=False)
    assert any(not torch.equal(c["model"][k], b["model"][k]) for k in b["model"])


def test_init_checkpoint_starts_from_its_weights(tiny, tmp_path):
    first = train(tiny_config(tiny, "optim.steps=2", "log.checkpoint_every=2"), tmp_path / "first")
    # another seed would initialise differently; the weights of the first run win, and step is 0
    cfg = tiny_config(tiny, "optim.steps=0", "seed=5", f"model.init_checkpoint={first.checkpoint}")
    started = train(cfg, tmp_path / "second")
    assert started.step == 0
    for key, value in first.model.state_dict().items():
        assert torch.equal(started.model.state_dict()[key], value), key
    with pytest.raises(FileNotFoundError, match="no_such.pt"):
        train(tiny_config(tiny, f"model.init_checkpoint={tmp_path / 'no_such.pt'}"), tmp_path / "x")
    other = tiny_config(tiny, "optim.steps=0", "model.regressor=hmr", "model.regressor_kwargs={}",
                        f"model.init_checkpoint={first.checkpoint}")
    with pytest.raises(ValueError, match="does not fit"):
        train(other, tmp_path / "y")


def test_resume_needs_a_checkpoint(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tiny), tmp_path / "empty", resume=True)


def test_stream_sampler_restarts_anywhere_and_splits_over_processes():
    data = list(range(10))
    full = StreamSampler(data, seed=5)
    it = iter(full)
    stream = [next(it) for _ in range(25)]
    assert sorted(i for i, _, _ in stream[:10]) == data  # an epoch is a permutation
    assert [e for _, e, _ in stream] == [p // 10 for p in range(25)]
    assert [i for i, _, _ in stream[:10]] != [i for i, _, _ in stream[10:20]]  # reshuffled per epoch
    it = iter(StreamSampler(data, seed=5, start=13))
    assert [next(it) for _ in range(12)] == stream[13:]
    ranks = [iter(StreamSampler(data, seed=5, rank=r, world_size=2)) for r in range(2)]
    halves = [[next(r)[0] for _ in range(5)] for r in ranks]
    assert sorted(halves[0] + halves[1]) == data


def test_seeded_samples_depend_on_the_position_only():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return {"x": torch.rand(3) + index}

    samples = SeededSamples(Noisy(), seed=1)
    torch.manual_seed(0)
    a = samples[(2, 0, 7)]["x"]
    state = torch.get_rng_state()
    torch.rand(5)  # any history
    b = samples[(2, 0, 7)]["x"]
    assert torch.equal(a, b)
    assert not torch.equal(a, samples[(2, 0, 8)]["x"])
    torch.set_rng_state(state)
    before = torch.get_rng_state()
    samples[(1, 0, 3)]
    assert torch.equal(before, torch.get_rng_state())  # the training RNG is left alone


def test_discriminator_ablation_runs(tiny, tmp_path):
    from training.models.discriminator import PoseShapeDiscriminator

    cfg = tiny_config(tiny, "prior.kind=discriminator", "optim.steps=2", "loss.lambda_adv=0.5")
    result = train(cfg, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "checkpoint_00000002.pt", weights_only=False)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    torch.manual_seed(cfg.seed)
    fresh = PoseShapeDiscriminator().state_dict()
    assert fresh.keys() == ckpt["discriminator"].keys()
    assert any(not torch.equal(fresh[k], ckpt["discriminator"][k]) for k in fresh)
    assert all(s["step"] == 2 for s in ckpt["disc_optimizer"]["state"].values())


def test_smplify_in_the_loop_supervises_samples_without_smpl(tiny):
    body_model = load_body_model(tiny[0])
    fitter = SMPLify(body_model, None, camera_iters=10, body_iters=30, lr=0.02)
    gt_pose, gt_betas, gt_cam, pose, betas, cam = fit_problem(4)
    t = weak_perspective_to_translation(gt_cam, fitter.focal_length, fitter.image_res)
    keypoints = keypoints_of(fitter, gt_pose, gt_betas, t)
    keypoints[3, :, 2] = 0.0  # sample 3: no 2D annotation
    batch = {"keypoints_2d": keypoints, "has_smpl": torch.tensor([1.0, 0.0, 0.0, 0.0]),
             "pose": torch.zeros(4, 72), "betas": torch.zeros(4, 10)}
    outputs = {"pose": torch.stack([pose, pose], 1), "betas": torch.stack([betas, betas], 1),
               "cam": torch.stack([cam, cam], 1)}
    new, used = smplify_supervision(fitter, outputs, batch, threshold=1e9)
    assert used == 2
    assert new["has_smpl"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert torch.equal(new["pose"][[0, 3]], batch["pose"][[0, 3]])  # ground truth / nothing to fit
    assert not torch.allclose(new["pose"][1:3], pose[1:3])  # the fit, not the regressor's estimate
    assert batch["has_smpl"].tolist() == [1.0, 0.0, 0.0, 0.0]  # the input batch is not modified
    _, used = smplify_supervision(fitter, outputs, batch, threshold=0.0)
    assert used == 0  # no fit is good enough


def test_clear_errors(tiny, tmp_path, capsys):
    body, data, _ = tiny
    assert main(["--config", str(tmp_path / "nowhere.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["--config", str(SMOKE), "--set", "optim.lrr=1"]) == 2
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train(tiny_config(tiny, f"data.synthetic_roots=[{tmp_path / 'nowhere'}]"), tmp_path / "a")
    with pytest.raises(ValueError, match="no training data"):
        train(tiny_config(tiny, "data.synthetic_roots=[]"), tmp_path / "b")
    with pytest.raises(ValueError, match="known: vae, discriminator, none"):
        train(tiny_config(tiny, "prior.kind=gmm"), tmp_path / "c")
    with pytest.raises(ValueError, match="unknown regressor 'hkmr2'"):
        train(tiny_config(tiny, "model.regressor=hkmr2"), tmp_path / "d")
    with pytest.raises(ValueError, match="2 entries for 1 sources"):
        build_dataset(tiny_config(tiny, "data.ratios=[1, 2]").data)
    spin = tmp_path / "spin"
    (spin / "dataset_extras").mkdir(parents=True)
    (spin / "lsp_dataset_original").mkdir()
    np.savez(spin / "dataset_extras" / "lsp_dataset_original_train.npz", imgname=np.array([], dtype=str),
             center=np.zeros((0, 2)), scale=np.zeros(0))
    with pytest.raises(ValueError, match="'lsp-orig' is empty"):
        build_dataset(tiny_config(tiny, "data.synthetic_roots=[]", f"data.spin_root={spin}",
                                  "data.spin_datasets=[lsp-orig]").data)
    with pytest.raises(ValueError, match="unknown SPIN dataset 'lsp-new'"):
        build_dataset(tiny_config(tiny, "data.synthetic_roots=[]", f"data.spin_root={spin}",
                                  "data.spin_datasets=[lsp-new]").data)
    with pytest.raises(FileNotFoundError, match="spin_root"):
        build_dataset(tiny_config(tiny, f"data.spin_root={tmp_path / 'nospin'}", "data.spin_datasets=[mpii]").data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, args: list, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import torch.distributed as dist
    from training.train import parse_args, train as run

    parsed = parse_args(args)
    result = run(load_config(parsed.config, parsed.overrides), parsed.out)
    torch.save(dict(result.model.named_parameters()), Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("prior", ["vae", "discriminator"])
def test_two_process_ddp_on_gloo(tiny, tmp_path, prior):
    out = tmp_path / "ddp"
    args = ["--config", str(SMOKE), "--out", str(out)]
    for item in tiny_overrides(tiny, "optim.steps=2", "optim.batch_size=4", f"prior.kind={prior}"):
        args += ["--set", item]
    (tmp_path / "states").mkdir()
    # fork: the workers inherit the imported modules (a fresh interpreter takes seconds to import torch)
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, _free_port(), args, str(tmp_path / "states")),
                                          nprocs=2, start_method="fork")
    assert (out / "checkpoint_00000002.pt").is_file()
    ckpt = torch.load(out / "checkpoint_00000002.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["sampler"]["batch_per_process"] == 2
    # parameters (not BatchNorm's running statistics, which each process keeps for its own data)
    a = torch.load(tmp_path / "states" / "rank0.pt")
    b = torch.load(tmp_path / "states" / "rank1.pt")
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], ckpt["model"][key]), key
    assert ("discriminator" in ckpt) == (prior == "discriminator")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_on_gpu_and_resume(tiny, tmp_path, dtype):
    extra = ("device=cuda", "optim.amp=true", f"optim.amp_dtype={dtype}", "data.augment=false",
             "log.checkpoint_every=2")
    train(tiny_config(tiny, "optim.steps=2", *extra), tmp_path / "run")
    result = train(tiny_config(tiny, "optim.steps=4", *extra), tmp_path / "run", resume=True)
    assert result.step == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    ckpt = torch.load(tmp_path / "run" / "checkpoint_00000004.pt", weights_only=False)
    assert "cuda" in ckpt["rng"][0]
    assert (ckpt["scaler"].get("scale") is not None) == (dtype == "float16")


def test_init_ablation_starts_an_ablated_hkmr_from_full_weights(tiny, tmp_path):
    first = train(tiny_config(tiny, "optim.steps=2", "log.checkpoint_every=2"), tmp_path / "first")
    ablated = "model.regressor_kwargs={inner_iters: 1, outer_iters: 2, joint_hierarchy: false, backward_pass: false}"
    with pytest.raises(ValueError, match="does not fit"):  # without init_ablation the layers differ
        train(tiny_config(tiny, "optim.steps=0", ablated, f"model.init_checkpoint={first.checkpoint}"), tmp_path / "a")
    started = train(tiny_config(tiny, "optim.steps=0", ablated, f"model.init_checkpoint={first.checkpoint}",
                                "model.init_ablation=true"), tmp_path / "b")
    full = first.model.state_dict()
    for key, value in started.model.state_dict().items():
        assert torch.equal(value, full[key][:, : value.shape[1]] if "_weights." in key else full[key]), key
    assert any("backward_" in key for key in full)
    assert not any("backward_" in key for key in started.model.state_dict())
    with pytest.raises(ValueError, match="needs model.init_checkpoint"):
        train(tiny_config(tiny, "model.init_ablation=true"), tmp_path / "c")
    hmr = tiny_config(tiny, "model.regressor=hmr", "model.regressor_kwargs={}", "model.init_ablation=true",
                      f"model.init_checkpoint={first.checkpoint}")
    with pytest.raises(ValueError, match="ablated HKMR"):
        train(hmr, tmp_path / "d")


@pytest.mark.parametrize("grouped", [True, False])
def test_cpu_runs_switch_large_depthwise_convolutions(tiny, grouped):
    from training.models.depthwise import GroupedWeightGradDepthwiseConv2d
    from training.train import Process, build_run

    run = build_run(tiny_config(tiny, f"optim.grouped_depthwise_grad={str(grouped).lower()}"), Process())
    switched = sum(type(m) is GroupedWeightGradDepthwiseConv2d for m in run.model.modules())
    assert switched == (6 if grouped else 0)  # MobileNetV3-large's 5x5 depthwise convolutions
