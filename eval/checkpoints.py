"""What to evaluate: the baseline plus every adapter found under CKPT_DIR (a training run
directory, a folder of peft adapter folders, or one adapter folder; see train.run_dir)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from train.run_dir import CONFIG_FILE, find_adapters, read_run_record

log = logging.getLogger(__name__)
BASELINE = "baseline"


@dataclass(frozen=True)
class Checkpoint:
    tag: str
    adapter: Path | None  # None = baseline (no adapter)
    epoch: int | None


def checkpoints_to_evaluate(ckpt_dir: Path, include_baseline: bool = True) -> list[Checkpoint]:
    """Baseline first, then the adapters ordered by epoch (or name)."""
    found = [Checkpoint(a.tag, a.path, a.epoch) for a in find_adapters(ckpt_dir)]
    return ([Checkpoint(BASELINE, None, 0)] if include_baseline else []) + found


def newest_adapter(path: Path) -> Path:
    """The adapter to use from `path` (run dir, folder of adapters, or one adapter): the newest
    by epoch (then name); logs which one when there is a choice."""
    found = find_adapters(path)
    if not found:
        raise FileNotFoundError(f"{path} holds no LoRA adapter (no adapter_config.json)")
    if len(found) > 1:
        log.info("%s: using %s, the newest of %d adapters (pass its folder to choose another)",
                 path, found[-1].tag, len(found))  # fmt: skip
    return found[-1].path


def adapts_point_head(adapters: list[Path]) -> bool:
    """Whether any adapter's saved run config puts LoRA on the point head."""
    configs = [Path(a) / CONFIG_FILE for a in adapters]
    return any("point" in (read_run_record(c).lora.get("heads") or []) for c in configs if c.is_file())


def training_record(adapter: Path | None) -> dict | None:
    """What the adapter's saved run config says about its training data (None for the baseline
    or an adapter saved without a run config); stored with the result for the report."""
    config = None if adapter is None else Path(adapter) / CONFIG_FILE
    if config is None or not config.is_file():
        return None
    data = read_run_record(config).data
    return {"config": str(config), **dataclasses.asdict(data)}
