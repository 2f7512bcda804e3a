"""Does a LoRA adapter fit a base model? Checked from the adapter's tensors before peft sees them.

peft reports the first problem it meets, and tensors for layers its config does not target are
only warned about and then ignored, which silently changes the model. Here every LoRA tensor is
matched to a layer of the base and compared with that layer's shape, and all mismatches are
listed at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from torch import nn

# peft's saved layout: base_model.model.<module>.lora_A.weight (the adapter name is dropped)
SAVED_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_magnitude_vector)(\.weight)?$"
)
LIST_LIMIT = 20


class AdapterMismatch(ValueError):
    """An adapter does not fit the base model; the message lists every mismatched key."""


class LayerShape(NamedTuple):
    """What a LoRA pair on a layer must look like: A is (rank, *a_tail), B is (out, rank, *b_tail)."""

    out_features: int
    a_tail: tuple[int, ...]
    b_tail: tuple[int, ...]


def lora_layer_shape(module: nn.Module) -> LayerShape | None:
    """Shapes LoRA tensors of `module` must have; None for layers peft cannot adapt here."""
    if isinstance(module, nn.Linear):
        return LayerShape(module.out_features, (module.in_features,), ())
    if isinstance(module, nn.Conv2d):
        return LayerShape(module.out_channels, (module.in_channels, *module.kernel_size), (1, 1))
    return None


def lora_shape_problems(
    module_name: str, layer: LayerShape, a: tuple[int, ...], b: tuple[int, ...]
) -> list[str]:
    """Mismatches between one layer and its lora_A / lora_B shapes (empty when they fit)."""
    problems = []
    if a[1:] != layer.a_tail:
        problems.append(
            f"{module_name}.lora_A: shape {a}, the layer needs (rank, {', '.join(map(str, layer.a_tail))})"
        )
    if b[:1] != (layer.out_features,) or b[2:] != layer.b_tail:
        tail = "".join(f", {n}" for n in layer.b_tail)
        problems.append(
            f"{module_name}.lora_B: shape {b}, the layer needs ({layer.out_features}, rank{tail})"
        )
    if a[:1] != b[1:2]:
        problems.append(f"{module_name}: lora_A rank {a[:1]} differs from lora_B rank {b[1:2]}")
    return problems


def adapter_mismatches(model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Every way the saved adapter tensors `shapes` (key -> shape, peft's saved key layout) fail
    to fit `model` (the base, without peft): keys of no LoRA kind, layers the base lacks or
    cannot adapt, wrong shapes, and layers with only one half of their LoRA pair."""
    modules = dict(model.named_modules())
    problems: list[str] = []
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        match = SAVED_KEY.match(key)
        if match is None:
            problems.append(f"{key}: not a LoRA tensor of peft's saved layout")
            continue
        pairs.setdefault(match["module"], {})[match["part"]] = tuple(shape)
    for name, parts in sorted(pairs.items()):
        module = modules.get(name)
        layer = None if module is None else lora_layer_shape(module)
        if module is None:
            problems.append(f"{name}: no such layer in the base model")
        elif layer is None:
            problems.append(f"{name}: a {type(module).__name__}, which takes no LoRA")
        elif "lora_A" not in parts or "lora_B" not in parts:
            missing = "lora_A" if "lora_A" not in parts else "lora_B"
            problems.append(f"{name}.{missing}: missing (the layer has only half of its LoRA pair)")
        else:
            problems += lora_shape_problems(name, layer, parts["lora_A"], parts["lora_B"])
            magnitude = parts.get("lora_magnitude_vector")
            if magnitude is not None and max(magnitude, default=0) != layer.out_features:
                problems.append(
                    f"{name}.lora_magnitude_vector: shape {magnitude}, the layer has "
                    f"{layer.out_features} outputs"
                )
    return problems


def format_problems(title: str, problems: list[str], limit: int = LIST_LIMIT) -> str:
    lines = [f"{title} ({len(problems)}):", *(f"  {p}" for p in problems[:limit])]
    if len(problems) > limit:
        lines.append(f"  ... {len(problems) - limit} more")
    return "\n".join(lines)


def check_adapter_fits(model: nn.Module, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Raise AdapterMismatch listing every key of the adapter at `source` that does not fit."""
    problems = adapter_mismatches(model, shapes)
    if problems:
        raise AdapterMismatch(format_problems(f"adapter {source} does not fit the base model", problems))
