"""What to evaluate: the baseline plus every checkpoint under CKPT_DIR, which may be a
training run directory (checkpoints/epoch_XXXX), a folder of peft adapter folders, or one
adapter folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASELINE = "baseline"
EPOCH_RE = re.compile(r"epoch_(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    tag: str
    adapter: Path | None  # None = baseline (no adapter)
    epoch: int | None


def _is_adapter(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def discover(ckpt_dir: Path, include_baseline: bool = True) -> list[Checkpoint]:
    """Baseline first, then checkpoints ordered by epoch (or name). Half-written folders
    (temporary names, no adapter config) are ignored."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.exists():
        raise FileNotFoundError(f"checkpoint folder {ckpt_dir} does not exist")
    root = ckpt_dir / "checkpoints" if (ckpt_dir / "checkpoints").is_dir() else ckpt_dir
    candidates = [root] if _is_adapter(root) else sorted(p for p in root.iterdir() if p.is_dir())
    found = []
    for path in candidates:
        if ".tmp-" in path.name or not _is_adapter(path):
            continue
        match = EPOCH_RE.search(path.name)
        found.append(Checkpoint(path.name, path, int(match.group(1)) if match else None))
    found.sort(key=lambda c: (c.epoch is None, c.epoch if c.epoch is not None else 0, c.tag))
    return ([Checkpoint(BASELINE, None, 0)] if include_baseline else []) + found
