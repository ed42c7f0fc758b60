"""The one configuration system of training and evaluation: nested dataclasses loaded from YAML.

A run is fully described by one `Config`: YAML files set it, `--set section.key=value`
overrides it from the command line, and the resolved config is saved beside the checkpoints so
that a checkpoint always carries what produced it. Unknown keys are errors (a typo must not
silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml


@dataclass
class ModelConfig:
    """Encoder + regressor (`training.models.mesh_regressor.build_model`)."""
    encoder: str = "resnet50"
    regressor: str = "hkmr"  # 'hkmr' | 'hmr'
    encoder_weights: Optional[str] = None  # local file of ImageNet weights; None = random init
    # a released model.pt or a run's checkpoint whose network weights a fresh run starts from
    # (fine-tuning; supersedes encoder_weights); ignored by --resume, which loads its own checkpoint
    init_checkpoint: Optional[str] = None
    # init_checkpoint is a full HKMR (hierarchy, backward passes) and this config one of its
    # ablations (regressor_kwargs): the layers the ablation lacks are dropped, see
    # HKMRRegressor.state_from_full
    init_ablation: bool = False
    rotation: str = "6d"  # rotation representation the regressor predicts
    body_model: Optional[str] = None  # SMPL-format file; None = $HKMR_SMPL_MODEL or the open default
    # passed to the regressor as keyword arguments, e.g. HKMR's ablations
    # joint_hierarchy, backward_pass, inner_iters, outer_iters
    regressor_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Training data: synthetic shard folders and/or SPIN's npz files, mixed by ratios."""
    synthetic_roots: List[str] = field(default_factory=list)
    # pre-rendered stores (training.datasets.store): uint8 crops at the input size, the fast path
    store_roots: List[str] = field(default_factory=list)
    # samples used from each store (its first complete shards); 0 / missing = all complete at the
    # start, resolved and saved in the run's config so that a resumed run reads the same samples
    store_samples: List[int] = field(default_factory=list)
    spin_root: Optional[str] = None  # folder holding SPIN's dataset_extras npz files and images
    spin_datasets: List[str] = field(default_factory=list)  # e.g. h36m, lsp-orig, mpii, coco, ...
    # one ratio per source: synthetic roots, then store roots, then spin datasets; empty = uniform
    ratios: List[float] = field(default_factory=list)
    image_size: int = 224  # network input side; crops are resized when it differs from 224
    augment: bool = True
    augment_kwargs: Dict[str, Any] = field(default_factory=dict)
    num_workers: int = 2
    val_root: Optional[str] = None  # held-out synthetic shard folder for MPJPE / PA-MPJPE during training


@dataclass
class OptimConfig:
    """AdamW and the step budget."""
    lr: float = 5e-5
    weight_decay: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    batch_size: int = 64  # global: split evenly over the processes of a distributed run
    steps: int = 100000
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: bool = True  # mixed precision on a GPU; always off on a CPU
    amp_dtype: str = "float16"  # 'float16' | 'bfloat16'
    disc_lr: float = 1e-4  # discriminator (prior='discriminator')
    lr_schedule: str = "constant"  # 'constant' | 'cosine' (to lr * min_lr_ratio at `steps`)
    warmup_steps: int = 0  # linear warm-up from 0
    min_lr_ratio: float = 0.02
    frozen_encoder_stages: int = 0  # first encoder stages frozen (encoders.encoder_stages)
    frozen_steps: int = 0  # ... for this many steps; 0 = the whole run
    channels_last: bool = False  # NHWC images and encoder (faster convolutions on CPUs)
    # on a CPU, 5x5 depthwise weight gradients as one grouped convolution (training/models/depthwise.py)
    grouped_depthwise_grad: bool = True
    # on a CPU, glibc keeps freed memory for reuse instead of faulting it in anew (training/allocator.py)
    keep_freed_memory: bool = True
    threads: int = 0  # torch intra-op threads; 0 = torch's default


@dataclass
class LossConfig:
    """Weights of the paper's equation (3), plus the adversarial weight of the discriminator ablation."""
    lambda_smpl: float = 1.0
    lambda_3d: float = 5.0
    lambda_2d: float = 5.0
    lambda_kl: float = 0.001
    # betas inside L_smpl. SPIN's 0.001 suits real data, whose betas are pseudo ground truth; with
    # exact betas (synthetic data) a larger weight stops the network from shrinking the body to
    # lower the 3D joint error while its pose is still poor.
    lambda_betas: float = 0.001
    lambda_adv: float = 0.1
    # joints from training.body.joints_only (equal to the full body model's, no mesh skinning)
    joints_only: bool = True


@dataclass
class PriorConfig:
    """Pose prior: the paper's VAE encoder, HMR's discriminator (ablation) or none."""
    kind: str = "vae"  # 'vae' | 'discriminator' | 'none'
    vae_path: Optional[str] = None  # None = the package's default prior file


@dataclass
class SmplifyConfig:
    """SMPLify-style fitting, in the training loop (SPIN) and optionally at evaluation."""
    in_the_loop: bool = False
    camera_iters: int = 30  # stage 1: camera translation + global orientation on the torso
    body_iters: int = 70  # stage 2: everything
    lr: float = 0.01
    focal_length: float = 5000.0  # pixels, for a `image_res` crop (SPIN)
    image_res: int = 224
    sigma: float = 100.0  # Geman-McClure scale, pixels
    prior_weight: float = 4.78  # on the prior term (squared in the loss, as SMPLify)
    shape_weight: float = 5.0
    depth_weight: float = 100.0  # keeps the depth near the regressor's estimate
    threshold: float = 100.0  # fits with a per-joint reprojection loss above this are not used


@dataclass
class LogConfig:
    log_every: int = 50
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3  # most recent checkpoints kept on disk
    val_every: int = 0  # steps between validations on data.val_root; 0 = only at the end
    checkpoint_minutes: float = 0.0  # also checkpoint when this much wall time passed; 0 = off
    val_samples: int = 0  # validate on the first N samples of data.val_root; 0 = all
    progress: bool = True  # tqdm bar


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    smplify: SmplifyConfig = field(default_factory=SmplifyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    device: str = "auto"  # 'auto' (CUDA when available) | 'cuda' | 'cpu'


class ConfigError(ValueError):
    """A config file or override that does not match `Config`."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (ints widen to floats); raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 (PyYAML) reads 1e-4, without a dot, as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp!r}")


def _update(obj: Any, values: Dict[str, Any], where: str) -> None:
    """Set the fields of dataclass `obj` from `values`, recursing into nested sections."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {path!r} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _update(current, value, path)
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def config_from_dict(values: Dict[str, Any], source: str = "<dict>") -> Config:
    """A `Config` from a nested mapping; errors name `source` and the offending key."""
    cfg = Config()
    try:
        _update(cfg, values or {}, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply `section.key=value` strings in place (values parsed as YAML: 1e-4, true, [1, 2])."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else None
        nested: Dict[str, Any] = {}
        node = nested
        keys = dotted.strip().split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        try:
            _update(cfg, nested, "")
        except ConfigError as e:
            raise ConfigError(f"--set {item}: {e}") from None
    return cfg


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (None = defaults), then apply command-line overrides."""
    values: Dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        source = str(p)
    cfg = config_from_dict(values, source)
    return apply_overrides(cfg, overrides)


def config_to_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
