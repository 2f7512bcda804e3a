"""Run-directory checkpoints: `checkpoints/epoch_XXXX/` holds the peft adapter, the trainer
state and the resolved config. Written to a temporary name and renamed when complete, so
a half-written checkpoint is never picked up."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.yaml"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
EPOCH_RE = re.compile(r"^epoch_(\d{4,})$")
TMP_MARK = ".tmp-"


def epoch_dir(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"epoch_{epoch:04d}"


def is_complete(path: Path) -> bool:
    return EPOCH_RE.match(path.name) is not None and all(
        (path / f).is_file() for f in (STATE_FILE, CONFIG_FILE, *ADAPTER_FILES)
    )


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: int(EPOCH_RE.match(p.name).group(1)))


def staging_dir(final: Path) -> Path:
    tmp = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, final: Path) -> None:
    """Atomically move a fully written checkpoint into place."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_config(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def discard_partial(run_dir: Path) -> None:
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for p in root.iterdir():
            if TMP_MARK in p.name:
                shutil.rmtree(p, ignore_errors=True)
