"""The run-directory contract: what a training run leaves on disk and how others find it.

`RUN_DIR/checkpoints/epoch_XXXX/` holds the peft adapter (`adapter_config.json`,
`adapter_model.safetensors`), the trainer state and the run's resolved `config.yaml`;
`RUN_DIR/metrics.jsonl` and `RUN_DIR/tensorboard/` hold the logs. With validation on,
`RUN_DIR/checkpoints/best` is a small JSON file (not a folder, so never taken for a
checkpoint) naming the checkpoint with the best validation score. Checkpoints are written
under a temporary name and renamed when complete (shards.atomic), so a half-written one is
never picked up.

The trainer writes through this module; the evaluator, `vggt-infer` and `vggt-export` read
through it. It imports neither torch nor any trainer code, and reads a run's config
tolerantly: a key added or renamed in a later version does not make older runs unreadable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shards.atomic import discard_staging, is_staging, write_text_atomic

CHECKPOINTS_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"
STATE_FILE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
BEST_FILE = "best"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
EPOCH_RE = re.compile(r"epoch_(\d+)$")


def epoch_dir(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"epoch_{epoch:04d}"


def epoch_of(path: Path) -> int | None:
    """Epoch number in a checkpoint folder's name (`epoch_0003`, `lr1e-4_epoch_3`), else None."""
    match = EPOCH_RE.search(Path(path).name)
    return int(match.group(1)) if match else None


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file() and not is_staging(path)


def is_complete_checkpoint(path: Path) -> bool:
    """A run checkpoint with every file the trainer writes (a resumable one)."""
    path = Path(path)
    return (
        EPOCH_RE.fullmatch(path.name) is not None
        and not is_staging(path)
        and all((path / f).is_file() for f in (STATE_FILE, CONFIG_FILE, *ADAPTER_FILES))
    )


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete_checkpoint(p)]
    return sorted(found, key=lambda p: epoch_of(p))


def discard_partial(run_dir: Path) -> int:
    """Remove half-written checkpoints left by a killed run."""
    return discard_staging(Path(run_dir) / CHECKPOINTS_DIR, recursive=False)


def write_best(run_dir: Path, record: dict) -> None:
    """Name the best checkpoint (`record["checkpoint"]`, its metric and value) atomically."""
    write_text_atomic(Path(run_dir) / CHECKPOINTS_DIR / BEST_FILE, json.dumps(record) + "\n")


def read_best(run_dir: Path) -> dict | None:
    """What `write_best` recorded, or None when the run has no (readable) record."""
    try:
        record = json.loads((Path(run_dir) / CHECKPOINTS_DIR / BEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("checkpoint"), str) else None


def write_config(path: Path, config: dict) -> None:
    write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))


@dataclass(frozen=True)
class Adapter:
    """One trained adapter found on disk: its display tag, folder and epoch (if named by one)."""

    tag: str
    path: Path
    epoch: int | None


def find_adapters(path: Path) -> list[Adapter]:
    """Adapters under `path`, which may be a run directory (`checkpoints/epoch_XXXX`), a
    folder of peft adapter folders, or one adapter folder; ordered by epoch, then name.
    Half-written folders (temporary names, no adapter config) are ignored."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    root = path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path
    candidates = [root] if is_adapter_dir(root) else sorted(p for p in root.iterdir() if p.is_dir())
    found = [Adapter(p.name, p, epoch_of(p)) for p in candidates if is_adapter_dir(p)]
    return sorted(found, key=lambda a: (a.epoch is None, a.epoch if a.epoch is not None else 0, a.tag))


@dataclass
class ModelSpec:
    """Which base model a run adapted; an adapter is only meaningful on this base."""

    size: str = "1b"  # "1b" or "tiny"
    weights: str | None = None  # local path or Hugging Face id; None = random init


@dataclass(frozen=True)
class DataRecord:
    """What a run's saved config says about the frames it trained on, for leakage statements.
    None means the config does not say (a run made before the key existed)."""

    recorded: bool = False  # the config has a `data` section at all
    split: str | None = None
    sequences: tuple[str, ...] | None = None  # None: every sequence (or not recorded)
    exclude_sequences: tuple[str, ...] | None = None
    val_buffer_m: float | None = None  # train frames within this distance of val frames were left out


@dataclass(frozen=True)
class RunRecord:
    """What a run's saved config says about its base model, adapter and data, read tolerantly."""

    path: Path | None
    model: ModelSpec = field(default_factory=ModelSpec)
    seed: int = 0  # fixes the base weights when there are no pretrained ones
    lora: dict = field(default_factory=dict)
    data: DataRecord = field(default_factory=DataRecord)


class RunRecordError(ValueError):
    """A run's saved config cannot say which base model it used; the message names the file."""


def _section(data: dict, key: str, path: Path) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise RunRecordError(f"{path}: `{key}` must be a mapping, got {value!r}")
    return value


def _names(value: object, key: str, path: Path) -> tuple[str, ...] | None:
    """A list of sequence names (or one comma-separated string); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        return tuple(str(v) for v in value)
    raise RunRecordError(f"{path}: data.{key} must be a list of sequence names, got {value!r}")


def _data_record(data: dict, path: Path) -> DataRecord:
    if "data" not in data:
        return DataRecord()
    section = _section(data, "data", path)
    buffer = section.get("val_buffer_m")
    if buffer is not None and (isinstance(buffer, bool) or not isinstance(buffer, int | float)):
        raise RunRecordError(f"{path}: data.val_buffer_m must be a number of metres, got {buffer!r}")
    split = section.get("split")
    return DataRecord(
        recorded=True,
        split=None if split is None else str(split),
        sequences=_names(section.get("sequences"), "sequences", path),
        exclude_sequences=_names(section.get("exclude_sequences"), "exclude_sequences", path),
        val_buffer_m=None if buffer is None else float(buffer),
    )


def read_run_record(path: Path) -> RunRecord:
    """The base model, seed, LoRA and data settings in a run's `config.yaml`; keys it does not
    know are ignored, missing ones take the training defaults (data keys: not recorded)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RunRecordError(f"{path}: not a readable run config ({exc})") from None
    if not isinstance(data, dict):
        raise RunRecordError(f"{path}: top level must be a mapping")
    model, run = _section(data, "model", path), _section(data, "run", path)
    spec = ModelSpec(
        size=str(model.get("size", ModelSpec.size)),
        weights=None if model.get("weights") is None else str(model["weights"]),
    )
    seed = run.get("seed", RunRecord.seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RunRecordError(f"{path}: run.seed must be an integer, got {seed!r}")
    return RunRecord(path, spec, seed, _section(data, "lora", path), _data_record(data, path))


def newest_run_record(adapter_dirs: list[Path]) -> RunRecord | None:
    """The record saved beside the newest adapter folder that has one (folders oldest first;
    None when no folder has one)."""
    saved = [Path(d) / CONFIG_FILE for d in adapter_dirs]
    path = next((p for p in reversed(saved) if p.is_file()), None)
    return None if path is None else read_run_record(path)
