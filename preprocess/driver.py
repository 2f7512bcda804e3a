"""The one build driver behind `kitti360-prep build` and `kitti360-prep colmap`.

It asks a source (preprocess.sources) for its plan, removes what killed runs left behind and
the units the plan no longer has, builds the units not yet finished with their planned
config hash, and records what was written and skipped in the manifest. A unit is finished
once its index file carries that hash, so a re-run resumes where a killed one stopped and
rebuilds what changed.

Units are built one after another in this process, or in worker processes forked from a
server that has already imported and warmed the build code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import closing
from multiprocessing import forkserver, get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TypedDict

from tqdm import tqdm

from shards import UnitWriter, discard_debris, remove_unit
from shards.index import index_config_hash, index_notes, index_skipped
from shards.layout import INDEX_DIR, index_path, parse_unit_name, unit_name

from .manifest import sequence_fingerprint, update_manifest
from .record import Skip, UnitNote
from .sources import SequencePlan, Source, UnitPlan

log = logging.getLogger(__name__)


class BuildSummary(TypedDict):
    """What a build wrote, for every source alike."""

    manifest: str  # path of the manifest, where the reasons are
    sequences: dict[str, dict]  # "dataset/sequence" -> its manifest entry
    frames_written: int  # over all sequences
    skipped: dict[str, str]  # "dataset/sequence/frame" -> reason, over all sequences


def build(
    source: Source, out: str | Path, workers: int = 1, force: bool = False, progress: bool = True
) -> BuildSummary:
    """Build (or resume building) every unit `source` plans into the output root `out`.

    `workers` > 1 builds units in that many processes; `force` rebuilds finished units too.
    """
    out = Path(out)
    source.check()
    context = worker_context() if workers > 1 else None  # workers start up while units are planned
    sequences = source.plan()
    out.mkdir(parents=True, exist_ok=True)
    discard_debris(out)
    todo = [unit for sequence in sequences for unit in _pending_units(out, source.dataset, sequence, force)]
    total = sum(len(sequence.units) for sequence in sequences)
    log.info("%d of %d units to build (%d already complete)", len(todo), total, total - len(todo))
    frames = sum(len(unit.frames) for unit in todo)
    bar = tqdm(total=frames, unit="frame", desc=source.progress_label, disable=not progress)
    if context is None:
        _build_here(source, out, todo, on_frame=lambda: bar.update(1))
    else:
        # largest units first: workers take them in submission order, so the short ones (a
        # sequence's last, partial unit) fill in at the end instead of leaving a worker idle
        by_size = sorted(todo, key=lambda unit: len(unit.frames), reverse=True)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_build_unit, source, out, unit): unit for unit in by_size}
            for future in as_completed(futures):
                future.result()
                bar.update(len(futures[future].frames))
    bar.close()
    return _record(out, source, sequences)


def worker_context() -> BaseContext:
    """Workers fork from a server that imported and warmed the build code once (about 2 s a
    worker otherwise); spawn where there is no forkserver (Windows). The server starts here,
    so its imports overlap whatever the caller does before submitting work."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(["preprocess.worker_warmup"])
    forkserver.ensure_running()
    return context


def _fill_unit(
    source: Source, out: Path, unit: UnitPlan, on_frame: Callable[[], None] | None = None
) -> tuple[UnitWriter, dict[int, str], dict[str, int]]:
    """Write every frame the source yields for `unit`; returns the writer, still to be
    committed, the frames skipped with reasons and the source's notes. On error the partial
    unit is discarded."""
    writer = UnitWriter(
        out, source.dataset, unit.sequence, unit.name, unit.size.height, unit.size.width,
        capacity=len(unit.frames), frames_per_shard=source.frames_per_shard(unit.size),
    )  # fmt: skip
    skipped: dict[int, str] = {}
    notes: dict[str, int] = {}
    try:
        with closing(source.records(unit)) as records:
            for record in records:
                if isinstance(record, UnitNote):
                    notes[record.key] = record.value
                    continue
                if on_frame is not None:
                    on_frame()
                if isinstance(record, Skip):
                    skipped[record.frame] = record.reason
                    named = f" ({record.name})" if record.name else ""
                    log.warning("skipping frame %d%s: %s", record.frame, named, record.reason)
                    continue
                arrays, columns = record.stored()
                writer.add(arrays, {"dataset": source.dataset, "sequence": unit.sequence, **columns})
    except BaseException:
        writer.abort()
        raise
    return writer, skipped, notes


def _build_unit(source: Source, out: Path, unit: UnitPlan) -> dict[int, str]:
    """Build one unit and commit it atomically (a worker's job); returns frames skipped with reasons."""
    writer, skipped, notes = _fill_unit(source, out, unit)
    writer.commit(unit.config_hash, skipped, notes)
    return skipped


def _build_here(source: Source, out: Path, units: list[UnitPlan], on_frame: Callable[[], None]) -> None:
    """Build units one after another in this process. Each unit's commit (its last shard write,
    the rename, the index) runs on a thread while the next unit starts, so the reader and the
    projection never sit idle at unit boundaries; at most one commit is in flight."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unit-commit") as committer:
        previous: Future | None = None
        for unit in units:
            writer, skipped, notes = _fill_unit(source, out, unit, on_frame)
            if previous is not None:
                previous.result()
            previous = committer.submit(writer.commit, unit.config_hash, skipped, notes)
        if previous is not None:
            previous.result()


def _pending_units(out: Path, dataset: str, sequence: SequencePlan, force: bool) -> list[UnitPlan]:
    """Delete units of this sequence that the plan no longer has (all with `force`) and return
    the planned units not yet finished with their config hash. A sequence that could not be
    planned keeps whatever it has."""
    if sequence.error is not None:
        return []
    planned = {unit.name for unit in sequence.units}
    for path in (out / INDEX_DIR).glob(f"{unit_name(dataset, sequence.name, '')}*.parquet"):
        _, name, unit = parse_unit_name(path.stem)
        if name == sequence.name and (force or unit not in planned):
            remove_unit(out, dataset, sequence.name, unit)
    return [
        unit for unit in sequence.units
        if index_config_hash(index_path(out, dataset, sequence.name, unit.name)) != unit.config_hash
    ]  # fmt: skip


def _manifest_entry(out: Path, dataset: str, sequence: SequencePlan) -> dict:
    """A built sequence's manifest entry: its units, frames written, and every frame skipped
    (before or while building) with its reason."""
    if sequence.error is not None:
        return {"frames_written": 0, "error": sequence.error}
    skipped = dict(sequence.skipped)
    notes: dict[str, int] = {}
    for unit in sequence.units:
        skipped.update(index_skipped(index_path(out, dataset, sequence.name, unit.name)))
        notes.update(index_notes(index_path(out, dataset, sequence.name, unit.name)))
    return {
        "fingerprint": sequence_fingerprint(unit.config_hash for unit in sequence.units),
        "units": [unit.name for unit in sequence.units],
        "frames_written": sum(1 for unit in sequence.units for f in unit.frames if f not in skipped),
        "skipped": {str(f): reason for f, reason in sorted(skipped.items())},
        **({"notes": dict(sorted(notes.items()))} if notes else {}),
        **sequence.details,
    }


def _record(out: Path, source: Source, sequences: list[SequencePlan]) -> BuildSummary:
    entries = {f"{source.dataset}/{s.name}": _manifest_entry(out, source.dataset, s) for s in sequences}
    section, config = source.manifest_config()
    manifest = update_manifest(out, section, config, entries)
    return BuildSummary(
        manifest=str(manifest),
        sequences=entries,
        frames_written=sum(entry["frames_written"] for entry in entries.values()),
        skipped={
            f"{key}/{frame}": reason
            for key, entry in entries.items()
            for frame, reason in entry.get("skipped", {}).items()
        },
    )
