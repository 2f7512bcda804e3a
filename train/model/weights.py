"""Loading the published VGGT checkpoint (file, directory or Hugging Face repo id) with a strict key check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

CHECKPOINT_FILES = ("model.safetensors", "model.pt")
OPTIONAL_PREFIX = "track_head."  # ignored exactly when the model was built without a track head


class CheckpointMismatch(RuntimeError):
    """The checkpoint's keys or shapes do not match the model; the message lists them."""


@dataclass
class LoadReport:
    """What happened while loading: where from, what was loaded, and what was skipped or off."""

    source: str
    loaded: int = 0
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 10) -> str:
        lines = [f"checkpoint {self.source}: {self.loaded} tensors loaded, {len(self.ignored)} ignored"]
        for title, keys in (
            ("missing from checkpoint", self.missing),
            ("unexpected in checkpoint", self.unexpected),
            ("shape mismatch", self.shape_mismatch),
        ):
            if keys:
                groups = Counter(".".join(k.split(".")[:2]) for k in keys)
                lines.append(
                    f"  {title}: {len(keys)} ({', '.join(f'{g}: {n}' for g, n in groups.most_common())})"
                )
                lines += [f"    {k}" for k in keys[:limit]] + (
                    [f"    ... {len(keys) - limit} more"] if len(keys) > limit else []
                )
        return "\n".join(lines)


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(
        state.get("model"), dict
    ):  # training checkpoints wrap the weights
        state = state["model"]
    return state


def _download(repo_id: str) -> Path:
    """Fetch the checkpoint through the Hugging Face cache; offline, only a cached copy works."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline = False
    for filename in CHECKPOINT_FILES:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: test it first
            offline = True
        except EntryNotFoundError:
            continue
    if offline:
        raise FileNotFoundError(
            f"{repo_id} is not in the local Hugging Face cache and the Hub cannot be reached. "
            f"Download it where there is network (`hf download {repo_id} model.safetensors`), copy the "
            f"cache (HF_HOME) here, or pass a local path to model.safetensors / model.pt."
        )
    raise FileNotFoundError(f"{repo_id} has none of {CHECKPOINT_FILES}")


def resolve_checkpoint(source: str | Path) -> Path:
    """A file, a directory holding model.safetensors / model.pt, or a Hugging Face repo id -> local file."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in CHECKPOINT_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds none of {CHECKPOINT_FILES}")
    looks_like_repo = str(source).count("/") == 1 and not path.suffix
    if looks_like_repo and not str(source).startswith((".", "/", "~")):
        return _download(str(source))
    raise FileNotFoundError(f"no checkpoint at {source} (not a file, a directory, or a Hugging Face repo id)")


def check_keys(
    model: nn.Module, state: dict[str, Tensor], source: str
) -> tuple[dict[str, Tensor], LoadReport]:
    """Compare checkpoint keys/shapes with the model; track_head.* is dropped only when the model lacks it."""
    expected = model.state_dict()
    report = LoadReport(source=source)
    has_optional = any(k.startswith(OPTIONAL_PREFIX) for k in expected)
    kept = {}
    for key, value in state.items():
        if key not in expected:
            optional = key.startswith(OPTIONAL_PREFIX) and not has_optional
            (report.ignored if optional else report.unexpected).append(key)
        elif tuple(value.shape) != tuple(expected[key].shape):
            report.shape_mismatch.append(
                f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
            )
        else:
            kept[key] = value
    report.missing = [k for k in expected if k not in state]
    report.loaded = len(kept)
    return kept, report


def load_pretrained(model: nn.Module, source: str | Path, strict: bool = True) -> LoadReport:
    """Load VGGT weights into `model` (before LoRA is applied).

    strict=True raises CheckpointMismatch listing missing / unexpected / mis-shaped keys; strict=False
    loads every matching tensor and returns the same report for the caller to show.
    """
    path = resolve_checkpoint(source)
    kept, report = check_keys(model, _read_file(path), str(path))
    if strict and not report.ok:
        raise CheckpointMismatch(report.summary())
    model.load_state_dict(kept, strict=False)
    return report
