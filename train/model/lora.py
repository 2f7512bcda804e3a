"""LoRA on VGGT through peft: pick target layers from a small spec, report what trains,
save, load, copy and merge adapters.

Targets are resolved to an explicit list of full module names, so the adapter_config.json written by
peft documents exactly which layers were adapted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file
from torch import nn

from train.run_dir import ADAPTER_WEIGHTS

log = logging.getLogger(__name__)

BLOCK_SUBMODULES = ("qkv", "proj", "fc1", "fc2")
DPT_HEADS = {"depth": "depth_head", "point": "point_head"}
HEADS = {**DPT_HEADS, "camera": "camera_head"}


@dataclass
class LoraSpec:
    """Which layers get LoRA and how.

    heads: any of "depth", "point", "camera". DPT heads adapt every Conv2d (1x1 projections, the
    stride-2 resize conv, all scratch convs); their two ConvTranspose2d layers stay frozen because
    peft has no LoRA for them. The camera head adapts its Linear layers named in `submodules`.
    frame_blocks / global_blocks: aggregator block indices, e.g. "16-23", "0,4,8-11", "all" or None.
    submodules: Linear layers inside transformer blocks: qkv, proj (attention), fc1, fc2 (MLP).
    """

    heads: list[str] = field(default_factory=lambda: ["depth"])
    frame_blocks: str | None = None
    global_blocks: str | None = None
    submodules: list[str] = field(default_factory=lambda: list(BLOCK_SUBMODULES))
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    rslora: bool = False
    dora: bool = False

    def __post_init__(self) -> None:
        unknown_heads = set(self.heads) - set(HEADS)
        unknown_subs = set(self.submodules) - set(BLOCK_SUBMODULES)
        if unknown_heads or unknown_subs:
            raise ValueError(
                f"unknown LoRA heads {sorted(unknown_heads)} / submodules {sorted(unknown_subs)}; "
                f"heads are {sorted(HEADS)}, submodules {list(BLOCK_SUBMODULES)}"
            )
        if self.rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {self.rank}")


def parse_block_range(text: str | None, depth: int) -> list[int]:
    """ "16-23" / "0,4,8-11" / "all" / None -> sorted block indices, each checked against `depth`."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return []
    if str(text).strip().lower() == "all":
        return list(range(depth))
    indices: set[int] = set()
    for part in str(text).split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            indices.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ValueError(f"bad block range {text!r}; use e.g. '16-23', '0,4,8-11' or 'all'") from None
    if bad := [i for i in indices if not 0 <= i < depth]:
        raise ValueError(f"block indices {sorted(bad)} outside 0-{depth - 1} in {text!r}")
    return sorted(indices)


def lora_target_names(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Full names of the modules that `spec` selects in a (non-peft) VGGT model."""
    modules = dict(model.named_modules())
    depth = len(model.aggregator.frame_blocks)
    prefixes = [f"aggregator.frame_blocks.{i}." for i in parse_block_range(spec.frame_blocks, depth)]
    prefixes += [f"aggregator.global_blocks.{i}." for i in parse_block_range(spec.global_blocks, depth)]
    selected_heads = [HEADS[h] for h in spec.heads]
    missing = [h for h in selected_heads if modules.get(h) is None]
    if missing:
        raise ValueError(f"LoRA targets heads the model does not have: {missing}")
    names = []
    for name, module in modules.items():
        head = name.split(".", 1)[0]
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in spec.submodules:
            in_blocks = name.startswith(tuple(prefixes))
            if in_blocks or (head == "camera_head" and head in selected_heads):
                names.append(name)
        elif isinstance(module, nn.Conv2d) and head in selected_heads and head in DPT_HEADS.values():
            names.append(name)
    if not names:
        raise ValueError(f"LoRA spec selects no layers: {spec}")
    return names


def apply_lora(model: nn.Module, spec: LoraSpec) -> PeftModel:
    """Wrap `model` (pretrained weights already loaded) with LoRA adapters; all base weights are frozen."""
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=lora_target_names(model, spec),
        use_rslora=spec.rslora,
        use_dora=spec.dora,
        bias="none",
    )
    return get_peft_model(model, config)


def save_adapter(model: PeftModel, directory: str | Path) -> Path:
    """Write adapter_config.json + adapter_model.safetensors (peft's standard layout)."""
    model.save_pretrained(str(directory))
    return Path(directory)


def load_adapter(model: nn.Module, directory: str | Path, trainable: bool = False) -> PeftModel:
    """Attach a saved adapter to a base model with its weights loaded; trainable=True to keep training."""
    return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)


def merge_adapter(model: PeftModel) -> nn.Module:
    """Fold the LoRA deltas into the base weights and return the plain model (fast inference, no peft)."""
    return model.merge_and_unload()


def load_adapter_weights(model: PeftModel, directory: Path) -> None:
    """Restore adapter tensors saved by `save_adapter` into an identically configured model."""
    state = load_file(str(Path(directory) / ADAPTER_WEIGHTS), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{directory}: adapter does not match this run's LoRA targets")


def copy_matching_adapter(model: PeftModel, adapter_dir: str | Path) -> int:
    """Copy the LoRA tensors of another run's adapter into the matching layers of `model`
    (warm start, strategy switch); returns how many tensors were copied."""
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"lora.init_from: {path} not found")
    saved = load_file(str(path))
    result = set_peft_model_state_dict(model, saved)
    unexpected = len(getattr(result, "unexpected_keys", []) or [])
    copied = len(saved) - unexpected
    log.info(
        "warm start from %s: %d of %d adapter tensors matched this run's targets", path, copied, len(saved)
    )
    return copied


@dataclass
class GroupStats:
    group: str
    total: int = 0
    trainable: int = 0
    lora_modules: int = 0


def _group_of(name: str) -> str:
    """aggregator.frame_blocks.3.attn.qkv.lora_A.default.weight -> aggregator.frame_blocks."""
    name = name.removeprefix("base_model.model.")
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "aggregator" and len(parts) > 2 else parts[0]


def parameter_counts(model: nn.Module) -> list[GroupStats]:
    """Total and trainable parameter counts per module group (aggregator parts, each head)."""
    groups: dict[str, GroupStats] = {}
    for name, param in model.named_parameters():
        stats = groups.setdefault(_group_of(name), GroupStats(_group_of(name)))
        stats.total += param.numel()
        stats.trainable += param.numel() if param.requires_grad else 0
        stats.lora_modules += ".lora_A." in name and name.endswith(".weight")
    return list(groups.values())


def trainable_parameter_table(model: nn.Module) -> Table:
    """A rich table of parameters per module group; print it with rich's Console."""
    table = Table(title="Trainable parameters")
    for column in ("group", "parameters", "trainable", "%", "LoRA layers"):
        table.add_column(column, justify="left" if column == "group" else "right")
    groups = parameter_counts(model)
    total = GroupStats(
        "total", *(sum(getattr(g, f) for g in groups) for f in ("total", "trainable", "lora_modules"))
    )
    for g in [*groups, total]:
        pct = 100.0 * g.trainable / max(g.total, 1)
        table.add_row(g.group, f"{g.total:,}", f"{g.trainable:,}", f"{pct:.3f}", str(g.lora_modules))
    return table


def print_trainable_parameters(model: nn.Module, console: Console | None = None) -> None:
    (console or Console()).print(trainable_parameter_table(model))
