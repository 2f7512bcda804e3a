"""What a run leaves for `--resume` and how it is read back safely.

`trainer_state.pt` holds only tensors and JSON-like values (numbers, strings, lists, dicts) and
is read with `torch.load(weights_only=True)`, whose unpickler builds nothing else: a crafted
file cannot run code. A checkpoint that cannot be read (truncated, empty, crafted, not matching
the run) is reported and the next older one is tried. `metrics.jsonl` is cut back to the step
the run continues from, so no row is logged twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from shards.atomic import write_text_atomic

from . import run_dir as layout

log = logging.getLogger(__name__)

COUNTERS = ("step", "epoch", "skipped", "sampler_position")


class CheckpointUnreadable(RuntimeError):
    """A checkpoint's files cannot be loaded into this run; the message says why."""


class NoLoadableCheckpoint(RuntimeError):
    """`--resume` found checkpoints but none of them loads; the message lists each problem."""


def rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Only torch draws random numbers in the loop (LoRA dropout); data randomness is a pure
    function of (seed, sample id) and needs no state."""
    state: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict) -> None:
    """Write the trainer state: tensors and JSON-like values only, so `read_state` can load it
    (into a checkpoint folder that is published whole, see shards.atomic)."""
    torch.save(state, Path(path))


def read_state(path: Path) -> dict:
    """The trainer state at `path`, read without unpickling arbitrary objects."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointUnreadable(f"{path} is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, disallowed global: all unreadable
        raise CheckpointUnreadable(f"{path}: {type(exc).__name__}: {_first_line(str(exc))}") from None
    missing = [k for k in ("optimizer", "scheduler", "rng", *COUNTERS) if k not in state]
    if not isinstance(state, dict) or missing:
        raise CheckpointUnreadable(f"{path}: not a trainer state (missing {missing or 'everything'})")
    bad = [k for k in COUNTERS if isinstance(state[k], bool) or not isinstance(state[k], int)]
    if bad:
        raise CheckpointUnreadable(f"{path}: counters {bad} are not integers")
    return state


def load_newest(run_dir: Path, restore: Callable[[Path, dict], None]) -> tuple[Path, dict] | None:
    """Restore the newest complete checkpoint that loads: `restore(checkpoint, state)` applies
    it and raises on any mismatch. Returns it and its state, None when the run has none;
    raises NoLoadableCheckpoint when it has some but none loads."""
    layout.discard_partial(run_dir)
    found = layout.list_checkpoints(run_dir)
    problems = []
    for checkpoint in reversed(found):
        try:
            state = read_state(checkpoint / layout.STATE_FILE)
            restore(checkpoint, state)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, CheckpointUnreadable) else f"{type(exc).__name__}: {exc}"
            problems.append(f"{checkpoint.name}: {_first_line(reason)}")
            log.warning("checkpoint %s cannot be loaded (%s); trying the one before", checkpoint, reason)
            continue
        if problems:
            log.warning("resuming from %s, the newest checkpoint that loads", checkpoint)
        return checkpoint, state
    if problems:
        raise NoLoadableCheckpoint(
            f"none of the {len(found)} checkpoints in {Path(run_dir) / layout.CHECKPOINTS_DIR} loads: "
            + "; ".join(problems)
            + ". Move them away to start afresh, or train into another --out"
        )
    return None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep the log rows up to `last_step` (the step the run continues from); rows after it,
    and a half-written last line of a killed run, are dropped. Returns how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            keep = int(row["step"]) <= last_step
        except (ValueError, KeyError, TypeError):
            keep = False
        kept += [line] if keep else []
        dropped += not keep
    if dropped:
        write_text_atomic(path, "".join(line + "\n" for line in kept))
    return dropped
