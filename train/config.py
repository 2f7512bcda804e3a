"""Training configuration: typed dataclasses loaded from YAML plus `key=value` overrides,
validated up front with messages that name the offending key."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shards import PATCH_SIZE, STRATA

from .model import PRESETS, LoraSpec
from .run_dir import ModelSpec

PRECISIONS = ("bf16", "fp16", "fp32")
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value or key is invalid; the message names it."""


@dataclass
class ModelConfig(ModelSpec):
    """The base model (size, weights; recorded with every checkpoint) and how it trains."""

    activation_checkpointing: bool = False


@dataclass
class LoraConfig(LoraSpec):
    """Which layers get LoRA and how (train.model.LoraSpec), and where to warm-start from."""

    init_from: str | None = None  # adapter dir of another run (warm start / strategy switch)


@dataclass
class StrataPhase:
    until: float  # fraction of training steps
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class DataConfig:
    shards: str | None = None
    split: str = "train"
    sequences: list[str] | None = None  # train only on these (names or KITTI-360 drive numbers)
    exclude_sequences: list[str] = field(default_factory=list)  # held-out drives, never trained on
    val_buffer_m: float = 50.0  # leave out frames whose camera lies this close to a val frame (0: off)
    seq_len: int = 8
    max_stride: int = 2  # frames in a window are spaced by a random stride in [1, max_stride]
    max_gap: int = 3  # a window never spans a gap of more frames than this in the original numbering
    min_baseline_m: float = 1.0  # windows whose camera path is shorter are redrawn (0: off)
    min_valid_points: int = 2000
    strata_weights: dict[str, float] = field(
        default_factory=lambda: {"building_rich": 0.5, "mixed": 0.3, "road": 0.2}
    )
    strata_schedule: list[StrataPhase] = field(default_factory=list)
    num_workers: int = 2
    prefetch_factor: int = 2
    batch_size: int = 1
    overfit: bool = False  # every sample is the first anchor's window (sanity check of the loop)


@dataclass
class ColourJitterConfig:
    """Per-frame photometric jitter (images only), as torchvision's ColorJitter in upstream VGGT."""

    enabled: bool = True
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.1
    p: float = 0.9  # chance that a frame is jittered


@dataclass
class CropConfig:
    """Output size and geometric augmentation of a window (same for all its frames). The output
    is `width` wide (a multiple of 14; None keeps the stored width) and `height` high (None: the
    largest multiple of 14 the stored aspect allows). With `zoom`, a random region covering
    1/(1+z) of the frame side, z ~ U[0, max_zoom], is resized to the output (depth nearest);
    with `aspect`, the output height/width ratio is drawn in [min_aspect, max_aspect] per step."""

    height: int | None = None
    width: int | None = None
    zoom: bool = True
    max_zoom: float = 0.3
    aspect: bool = False
    min_aspect: float = 0.33
    max_aspect: float = 1.0


@dataclass
class FrameCountConfig:
    """Frames per window drawn per step in [min_frames, max_frames] (data.seq_len when off),
    with the batch sized so that frames x batch stays within frames_per_gpu."""

    enabled: bool = False
    min_frames: int = 2
    max_frames: int = 24
    frames_per_gpu: int = 48


@dataclass
class AugmentConfig:
    colour: ColourJitterConfig = field(default_factory=ColourJitterConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    frames: FrameCountConfig = field(default_factory=FrameCountConfig)


@dataclass
class LossConfig:
    camera_weight: float = 2.0
    depth_weight: float = 5.0
    point_weight: float = 0.0
    gradient_weight: float = 1.0
    semantic_weights: dict[int, float] = field(default_factory=dict)
    facade_boost: float = 1.0  # extra weight on building pixels at step 0 ...
    facade_boost_floor: float = 1.0  # ... decaying linearly to this value
    facade_boost_decay: float = 0.5  # fraction of training over which it decays
    filter_buildings_only: bool = False
    min_valid_pixels: int = 100
    min_valid_frames: int = 2
    depth_quantile: float = 0.98

    def head_weights(self) -> dict[str, float]:
        """Loss weight of each model head's output; heads at 0 are not run in training."""
        return {"camera": self.camera_weight, "depth": self.depth_weight, "point": self.point_weight}


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of steps
    min_lr_ratio: float = 0.1
    clip_heads: float = 0.5
    clip_aggregator: float = 0.3
    grad_accum: int = 1
    # aggregator autocast dtype (heads stay float32); fp16 adds a dynamic loss scale (GradScaler)
    precision: str = "bf16"
    # optimizer steps with non-finite gradients are skipped and counted; this many in a row stop
    # the run (fp16's loss scale may need a few skipped steps to settle at the start)
    max_bad_steps: int = 20


@dataclass
class RunConfig:
    steps: int = 1000
    steps_per_epoch: int = 100
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    # validation every `val_every` steps (0 = none) on `val_windows` fixed windows of `val_split`;
    # it must divide steps_per_epoch so that every checkpoint has a score (the last step and an
    # early stop are validated and checkpointed too)
    val_every: int = 0
    val_split: str = "val"
    val_windows: int = 16
    best_metric: str = "val/abs_rel"  # or val/loss; checkpoints/best names the lowest
    early_stop_patience: int = 0  # validations without a new best before stopping; 0 = never
    image_every: int = 0  # TensorBoard depth pictures of the first val window; 0 = none


@dataclass
class TrainConfig:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {
            _coerce(k, args[0], f"{key} key"): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()
        }
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint in (int, float, str):
        if isinstance(value, bool) or (hint is not str and not isinstance(value, int | float)):
            raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return hint(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key(s): {', '.join(where + k for k in unknown)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a section's own checks (e.g. LoraSpec's)
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def _apply_override(data: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({_yaml_problem(exc)})") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """`problem at line L, column C` of a YAML error, without PyYAML's multi-line dump."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _check_ranges(config: TrainConfig) -> None:
    """Numbers of the loss, optim and run sections that must lie in a range; NaN fails all."""
    loss, optim, run = config.loss, config.optim, config.run
    checks = [
        ("optim.lr", optim.lr, optim.lr > 0, "> 0"),
        ("optim.weight_decay", optim.weight_decay, optim.weight_decay >= 0, ">= 0"),
        ("optim.warmup", optim.warmup, 0 <= optim.warmup < 1, "a fraction of the steps in [0, 1)"),
        ("optim.min_lr_ratio", optim.min_lr_ratio, 0 <= optim.min_lr_ratio <= 1, "in [0, 1]"),
        ("optim.clip_heads", optim.clip_heads, optim.clip_heads > 0, "> 0"),
        ("optim.clip_aggregator", optim.clip_aggregator, optim.clip_aggregator > 0, "> 0"),
        ("optim.grad_accum", optim.grad_accum, optim.grad_accum >= 1, ">= 1"),
        ("optim.max_bad_steps", optim.max_bad_steps, optim.max_bad_steps >= 1, ">= 1"),
        ("run.steps", run.steps, run.steps >= 1, ">= 1"),
        ("run.steps_per_epoch", run.steps_per_epoch, run.steps_per_epoch >= 1, ">= 1"),
        ("run.log_every", run.log_every, run.log_every >= 1, ">= 1"),
        ("run.seed", run.seed, run.seed >= 0, ">= 0"),
        ("run.val_every", run.val_every, run.val_every >= 0, ">= 0"),
        ("run.val_windows", run.val_windows, run.val_windows >= 1, ">= 1"),
        ("run.early_stop_patience", run.early_stop_patience, run.early_stop_patience >= 0, ">= 0"),
        ("run.image_every", run.image_every, run.image_every >= 0, ">= 0"),
        ("loss.min_valid_pixels", loss.min_valid_pixels, loss.min_valid_pixels >= 1, ">= 1"),
        ("loss.min_valid_frames", loss.min_valid_frames, loss.min_valid_frames >= 1, ">= 1"),
        ("loss.depth_quantile", loss.depth_quantile, 0 < loss.depth_quantile <= 1, "in (0, 1]"),
        ("loss.facade_boost_decay", loss.facade_boost_decay, loss.facade_boost_decay >= 0, ">= 0"),
    ]
    for name in ("camera_weight", "depth_weight", "point_weight", "gradient_weight", "facade_boost",
                 "facade_boost_floor"):  # fmt: skip
        value = getattr(loss, name)
        checks.append((f"loss.{name}", value, value >= 0, ">= 0"))
    for label, value in loss.semantic_weights.items():
        checks.append((f"loss.semantic_weights.{label}", value, value >= 0, ">= 0"))
    for key, value, ok, need in checks:
        if not ok or not math.isfinite(value):
            raise ConfigError(f"{key}: must be {need}, got {value!r}")
    if loss.camera_weight + loss.depth_weight + loss.point_weight <= 0:
        raise ConfigError("loss: camera_weight, depth_weight and point_weight are all 0; nothing to train")
    if optim.precision not in PRECISIONS:
        raise ConfigError(f"optim.precision: expected one of {'|'.join(PRECISIONS)}, got {optim.precision!r}")
    idle = [h for h in config.lora.heads if loss.head_weights().get(h, 1.0) == 0]
    if idle:
        raise ConfigError(
            f"lora.heads: {idle} adapted but loss weight 0, so never run in training; "
            "drop them from lora.heads or give them a loss weight"
        )
    _check_validation(run)
    if run.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", run.device):
        raise ConfigError(f"run.device: expected auto, cpu, cuda or cuda:N, got {run.device!r}")


def _check_validation(run: RunConfig) -> None:
    if run.val_every and run.steps_per_epoch % run.val_every:
        raise ConfigError(
            f"run.val_every: {run.val_every} does not divide run.steps_per_epoch={run.steps_per_epoch}; "
            "every checkpoint needs a validation score"
        )
    for key in ("early_stop_patience", "image_every"):
        if getattr(run, key) and not run.val_every:
            raise ConfigError(f"run.{key}: needs validation (set run.val_every)")
    if run.best_metric not in ("val/abs_rel", "val/loss"):
        raise ConfigError(f"run.best_metric: expected val/abs_rel or val/loss, got {run.best_metric!r}")


def validate(config: TrainConfig) -> TrainConfig:
    """Checks that need more than types."""
    if config.model.size not in PRESETS:
        raise ConfigError(f"model.size: expected one of {sorted(PRESETS)}, got {config.model.size!r}")
    for phase in [config.data.strata_weights, *(p.weights for p in config.data.strata_schedule)]:
        bad = sorted(set(phase) - set(STRATA))
        if bad:
            raise ConfigError(f"data.strata_weights: unknown stratum {bad}; known: {STRATA}")
        if any(w < 0 for w in phase.values()) or sum(phase.values()) <= 0:
            raise ConfigError("data.strata_weights: weights must be >= 0 and not all zero")
    _validate_data(config.data)
    _validate_augment(config.augment)
    _check_ranges(config)
    return config


def _validate_data(data: DataConfig) -> None:
    if data.seq_len < 2:
        raise ConfigError("data.seq_len: need at least 2 frames per window")
    for key, low in (("max_stride", 1), ("max_gap", 1), ("val_buffer_m", 0), ("min_baseline_m", 0)):
        if getattr(data, key) < low:
            raise ConfigError(f"data.{key}: must be >= {low}, got {getattr(data, key)}")


def _validate_augment(aug: AugmentConfig) -> None:
    colour, crop, frames = aug.colour, aug.crop, aug.frames
    for key in ("brightness", "contrast", "saturation"):
        if not 0 <= getattr(colour, key) <= 1:
            raise ConfigError(f"augment.colour.{key}: must be in [0, 1], got {getattr(colour, key)}")
    if not 0 <= colour.hue <= 0.5:
        raise ConfigError(f"augment.colour.hue: must be in [0, 0.5], got {colour.hue}")
    if not 0 <= colour.p <= 1:
        raise ConfigError(f"augment.colour.p: must be in [0, 1], got {colour.p}")
    for name in ("height", "width"):
        value = getattr(crop, name)
        if value is not None and (value < PATCH_SIZE or value % PATCH_SIZE):
            raise ConfigError(f"augment.crop.{name}: {value} is not a positive multiple of {PATCH_SIZE}")
    if crop.max_zoom < 0:
        raise ConfigError(f"augment.crop.max_zoom: must be >= 0, got {crop.max_zoom}")
    if not 0 < crop.min_aspect <= crop.max_aspect:
        raise ConfigError(
            f"augment.crop: need 0 < min_aspect <= max_aspect, got {crop.min_aspect}, {crop.max_aspect}"
        )
    if frames.enabled and not 2 <= frames.min_frames <= frames.max_frames <= frames.frames_per_gpu:
        raise ConfigError(
            "augment.frames: need 2 <= min_frames <= max_frames <= frames_per_gpu, got "
            f"{frames.min_frames}, {frames.max_frames}, {frames.frames_per_gpu}"
        )


# keys of the `data` section that moved to `augment` (older configs keep loading)
_MOVED = {"crop_height": ("crop", "height"), "crop_width": ("crop", "width")}


def _migrate(data: dict[str, Any]) -> None:
    """Rewrite keys of older configs in place: data.crop_height/crop_width become
    augment.crop.height/width (a plain crop: no zoom); data.color_jitter x becomes one
    brightness/contrast/saturation strength x for every frame (0: colour jitter off)."""
    section = data.get("data")
    if not isinstance(section, dict):
        return
    old = {k: section.pop(k) for k in (*_MOVED, "color_jitter") if k in section}
    if not old:
        return
    augment = data.setdefault("augment", {})
    if not isinstance(augment, dict):
        raise ConfigError(f"augment: expected a mapping, got {augment!r}")
    crop = augment.setdefault("crop", {})
    for key, (_, new) in _MOVED.items():
        if key in old:
            crop[new] = old[key]
            crop["zoom"] = False
    if "color_jitter" in old:
        strength = old["color_jitter"]
        colour = augment.setdefault("colour", {})
        if not strength:
            colour["enabled"] = False
        else:
            colour.update(
                enabled=True, brightness=strength, contrast=strength, saturation=strength, hue=0.0, p=1.0
            )


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """YAML file (optional) + overrides -> validated TrainConfig."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = loaded
    _migrate(data)
    for override in overrides:
        _apply_override(data, override)
    _migrate(data)
    _map_renamed_keys(data)
    return validate(_build(TrainConfig, data, ""))


def _map_renamed_keys(data: dict[str, Any]) -> None:
    """Configs written before `optim.precision` existed: `optim.bf16: true` means bf16 and
    `false` float32 (it never selected fp16)."""
    optim = data.get("optim")
    if not isinstance(optim, dict) or "bf16" not in optim:
        return
    if "precision" in optim:
        raise ConfigError("optim.bf16 is replaced by optim.precision; give only optim.precision")
    bf16 = optim.pop("bf16")
    if not isinstance(bf16, bool):
        raise ConfigError(
            f"optim.bf16: expected true/false, got {bf16!r} (use optim.precision: bf16|fp16|fp32)"
        )
    optim["precision"] = "bf16" if bf16 else "fp32"
    log.info("optim.bf16: %s read as optim.precision: %s", bf16, optim["precision"])
