"""Turn a checkpoint of the seed fork's trainer into a peft adapter folder of this project.

The seed saved `checkpoint_<epoch>.pt` as `{"model": PeftModel.state_dict(), "optimizer": ...,
"epoch": ..., ...}`: the whole wrapped model, base weights included, with LoRA tensors under
`base_model.model.<module>.lora_A.default.weight` (wrapped layers keep their own weights under
`<module>.base_layer.`). Its VGGT uses the published module names, as this project's does.

Read from the keys: the adapted modules, the rank (rows of lora_A) and the model size. Not in
the checkpoint: alpha (the update is scaled by alpha / rank), which comes from `--alpha` or the
seed's training YAML (`lora.alpha`). Every key must be accounted for: unknown keys, missing
ones (a head the seed left out entirely is allowed) and LoRA tensors that do not fit their
layer stop the conversion with a list. With `--weights`, the checkpoint's base weights are
compared with that base: an adapter is only meaningful on the base it was trained on.
"""

from __future__ import annotations

import logging
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from peft import LoraConfig
from safetensors.torch import save_file

from shards.atomic import fresh_staging_dir, publish_dir
from train.model import PRESETS, build_base_model, build_model
from train.run_dir import ADAPTER_WEIGHTS, CONFIG_FILE, write_config

from ..adapter_fit import adapter_mismatches, format_problems

log = logging.getLogger(__name__)
PREFIX = "base_model.model."
SEED_LORA_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B)\.(?P<name>[^.]+)\.weight$"
)
IGNORED_PREFIX = "track_head."  # the project's model has no track head (as in load_pretrained)
PUBLISHED_WEIGHTS = "facebook/VGGT-1B"  # the base the seed fine-tuned
BASE_TOLERANCE = 0.01  # a base tensor "differs" beyond 1% of its largest magnitude (bf16 copies pass)


class SeedCheckpointError(ValueError):
    """The checkpoint cannot be converted; the message says why, listing keys where it applies."""


@dataclass
class SeedState:
    """A seed checkpoint's model state, split: LoRA pairs per module, base weights under the
    published names, and keys that are neither."""

    lora: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    base: dict[str, torch.Tensor] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    adapter_names: set[str] = field(default_factory=set)
    info: dict = field(default_factory=dict)  # epoch, steps

    @property
    def rank(self) -> int:
        ranks = {pair["lora_A"].shape[0] for pair in self.lora.values() if "lora_A" in pair}
        if len(ranks) != 1:
            raise SeedCheckpointError(
                f"LoRA ranks differ between layers ({sorted(ranks)}); the seed used one rank"
            )
        return ranks.pop()

    def saved_adapter(self) -> dict[str, torch.Tensor]:
        """LoRA tensors under peft's saved names (the adapter name dropped)."""
        return {
            f"{PREFIX}{module}.{part}.weight": tensor.contiguous()
            for module, pair in self.lora.items()
            for part, tensor in pair.items()
        }


def load_seed_checkpoint(path: Path) -> SeedState:
    """Read `path` with `weights_only=True` (no code from the file runs) and split its model state."""
    path = Path(path)
    if not path.is_file():
        raise SeedCheckpointError(f"seed checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        raise SeedCheckpointError(
            f"{path}: cannot be read as tensors and plain data (weights_only=True): {reason}"
        ) from None
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise SeedCheckpointError(f"{path}: expected {{'model': state_dict, ...}}, found {found}")
    state = SeedState(info={k: checkpoint[k] for k in ("epoch", "steps") if k in checkpoint})
    for key, tensor in model.items():
        match = SEED_LORA_KEY.match(key)
        if match:
            state.lora.setdefault(match["module"], {})[match["part"]] = tensor
            state.adapter_names.add(match["name"])
        elif key.startswith(PREFIX) and ".lora_" not in key:
            state.base[key.removeprefix(PREFIX).replace(".base_layer.", ".")] = tensor
        else:
            state.unknown.append(key)
    if not state.lora:
        raise SeedCheckpointError(f"{path}: no LoRA tensors ({PREFIX}<module>.lora_A.<name>.weight)")
    return state


def _skeleton(size: str) -> torch.nn.Module:
    """The project's model of `size` without memory (meta tensors): names and shapes only."""
    with torch.device("meta"):
        return build_model(size)


def detect_size(state: SeedState) -> str:
    """The preset whose layout holds every base tensor of the checkpoint with the same shape."""
    shapes = {k: tuple(v.shape) for k, v in state.base.items() if not k.startswith(IGNORED_PREFIX)}
    fitting = []
    for size in PRESETS:
        expected = {k: tuple(v.shape) for k, v in _skeleton(size).state_dict().items()}
        if all(expected.get(k) == shape for k, shape in shapes.items()):
            fitting.append(size)
    if len(fitting) != 1:
        raise SeedCheckpointError(
            f"the checkpoint's base layout fits {fitting or 'no'} model size of {sorted(PRESETS)}; "
            "pass --model-size (the problems are then listed)"
        )
    return fitting[0]


def layout_problems(state: SeedState, size: str) -> list[str]:
    """Unknown, missing and mis-shaped keys against the project's model of `size`."""
    skeleton = _skeleton(size)
    expected = skeleton.state_dict()
    problems = [f"{k}: unknown key" for k in state.unknown]
    for key, tensor in state.base.items():
        if key.startswith(IGNORED_PREFIX):
            continue
        if key not in expected:
            problems.append(f"{PREFIX}{key}: unknown key (no such weight in the model)")
        elif tuple(tensor.shape) != tuple(expected[key].shape):
            problems.append(
                f"{PREFIX}{key}: shape {tuple(tensor.shape)}, the model has {tuple(expected[key].shape)}"
            )
    present_heads = {key.split(".", 1)[0] for key in state.base}
    problems += [
        f"{PREFIX}{key}: missing"
        for key in expected
        if key not in state.base and key.split(".", 1)[0] in present_heads
    ]
    shapes = {k: tuple(v.shape) for k, v in state.saved_adapter().items()}
    problems += adapter_mismatches(skeleton, shapes)
    if len(state.adapter_names) > 1:
        problems.append(f"several adapters in one checkpoint: {sorted(state.adapter_names)}")
    return problems


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float


def lora_settings(state: SeedState, alpha: float | None, seed_config: Path | None) -> LoraSettings:
    """Rank from the tensors; alpha (and dropout) from --alpha or the seed's YAML `lora:` section."""
    rank, dropout = state.rank, 0.0
    if seed_config is not None:
        try:
            section = (yaml.safe_load(Path(seed_config).read_text()) or {}).get("lora") or {}
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise SeedCheckpointError(f"{seed_config}: not a readable seed training config ({exc})") from None
        if "alpha" not in section:
            raise SeedCheckpointError(f"{seed_config}: no lora.alpha")
        if section.get("rank", rank) != rank:
            raise SeedCheckpointError(
                f"{seed_config} says lora.rank {section['rank']}, the checkpoint's tensors have rank {rank}: "
                "not the config this checkpoint was trained with"
            )
        if alpha is not None and float(alpha) != float(section["alpha"]):
            log.warning("--alpha %s overrides lora.alpha %s of %s", alpha, section["alpha"], seed_config)
        alpha = section["alpha"] if alpha is None else alpha
        dropout = float(section.get("dropout", 0.0))
    if alpha is None:
        raise SeedCheckpointError(
            "the checkpoint does not store LoRA alpha (the update is scaled by alpha / rank): pass --alpha, "
            "or --config with the seed's training YAML (its lora.alpha)"
        )
    return LoraSettings(rank, float(alpha), dropout)


def base_differences(state: SeedState, size: str, weights: str) -> list[str]:
    """Base tensors of the checkpoint that differ from `weights` beyond BASE_TOLERANCE."""
    reference = build_base_model(size=size, weights=weights, bf16=False).state_dict()
    differing = []
    for key, tensor in state.base.items():
        if key in reference:
            ref = reference[key].float()
            gap = float((tensor.float() - ref).abs().max()) if ref.numel() else 0.0
            if gap > BASE_TOLERANCE * float(ref.abs().max()) + 1e-8:
                differing.append(f"{key}: differs by up to {gap:.3g}")
    return differing


def convert_seed_checkpoint(
    checkpoint: Path,
    out: Path,
    *,
    alpha: float | None = None,
    seed_config: Path | None = None,
    model_size: str | None = None,
    weights: str | None = None,
    allow_base_mismatch: bool = False,
    force: bool = False,
) -> Path:
    """Write `out/` (adapter_config.json, adapter_model.safetensors, and config.yaml naming the
    base, so `vggt-eval` / `vggt-infer` / `vggt-export merge` pick the right base)."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    state = load_seed_checkpoint(checkpoint)
    size = model_size or detect_size(state)
    problems = layout_problems(state, size)
    if problems:
        raise SeedCheckpointError(format_problems(f"{checkpoint} does not match the {size} model", problems))
    settings = lora_settings(state, alpha, seed_config)
    if weights is None:
        log.warning("base weights not checked against the checkpoint's (pass --weights to check them)")
    elif differing := base_differences(state, size, weights):
        message = format_problems(
            f"{checkpoint}: the base it was trained on differs from {weights}; the adapter alone would "
            "not reproduce its model",
            differing,
        )
        if not allow_base_mismatch:
            raise SeedCheckpointError(message + "\n(--allow-base-mismatch converts it anyway)")
        log.warning(message)
    modules = sorted(state.lora)
    stage = fresh_staging_dir(out)
    try:
        config = LoraConfig(
            r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
            target_modules=modules, bias="none",
        )  # fmt: skip
        config.save_pretrained(str(stage))
        save_file(state.saved_adapter(), str(stage / ADAPTER_WEIGHTS))
        record = {
            "model": {"size": size, "weights": weights or (PUBLISHED_WEIGHTS if size == "1b" else None)},
            "run": {"seed": 0},
            "lora": {"rank": settings.rank, "alpha": settings.alpha, "targets": modules},
            "converted_from": {"checkpoint": str(checkpoint), **state.info},
        }
        write_config(stage / CONFIG_FILE, record)
        publish_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("%d LoRA layers, rank %d, alpha %g -> %s", len(modules), settings.rank, settings.alpha, out)
    return out
