"""The one build driver behind `kitti360-prep build` and `kitti360-prep colmap`.

It asks a source (preprocess.sources) for its plan, removes what killed runs left behind and
the units the plan no longer has, builds the units not yet finished with their planned
config hash, and records what was written and skipped in the manifest. A unit is finished
once its index file carries that hash, so a re-run resumes where a killed one stopped and
rebuilds what changed.

Units are built one after another in this process, or in worker processes forked from a
server that has already imported and warmed the build code, each building runs of consecutive
units (unit_runs); both die with the build. One build at a time writes to an output root (an
OS file lock held for the whole build).
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
from shards.index import index_config_hash, index_dropped, index_skipped, read_index_file
from shards.integrity import ShardError, check_unit
from shards.layout import INDEX_DIR, index_path, parse_unit_name, shard_relpath, unit_name

from .lifetime import build_lock, die_with_parent
from .manifest import sequence_fingerprint, update_manifest
from .record import Dropped, Skip
from .sources import SequencePlan, Source, UnitPlan

log = logging.getLogger(__name__)
RUNS_PER_WORKER = 4  # see unit_runs


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
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    source.check()
    context = worker_context() if workers > 1 else None  # workers start up while units are planned
    sequences = source.plan()
    with build_lock(out):
        discard_debris(out)
        todo = [u for sequence in sequences for u in _pending_units(out, source.dataset, sequence, force)]
        total = sum(len(sequence.units) for sequence in sequences)
        log.info("%d of %d units to build (%d already complete)", len(todo), total, total - len(todo))
        bar = tqdm(total=_frames(todo), unit="frame", desc=source.progress_label, disable=not progress)
        if context is None:
            _build_here(source, out, todo, on_frame=lambda: bar.update(1))
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=die_with_parent)
            with pool:
                futures = {pool.submit(_build_run, source, out, run): run for run in unit_runs(todo, workers)}
                for future in as_completed(futures):
                    future.result()
                    bar.update(_frames(futures[future]))
        bar.close()
        return _record(out, source, sequences)


def worker_context() -> BaseContext:
    """Workers fork from a server that imported and warmed the build code once (about 2 s a
    worker otherwise); spawn where there is no forkserver (Windows). The server starts here,
    so its imports overlap whatever the caller does before submitting work."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(["preprocess.forkserver_preload"])
    forkserver.ensure_running()
    return context


Counts = dict[str, dict[int, int]]  # what was dropped -> frame -> how many


def _fill_unit(
    source: Source, out: Path, unit: UnitPlan, on_frame: Callable[[], None] | None = None
) -> tuple[UnitWriter, dict[int, str], Counts]:
    """Write every frame the source yields for `unit`; returns the writer, still to be
    committed, the frames skipped with reasons and the input elements dropped. On error the
    partial unit is discarded."""
    writer = UnitWriter(
        out, source.dataset, unit.sequence, unit.name, unit.size.height, unit.size.width,
        capacity=len(unit.frames), frames_per_shard=source.frames_per_shard(unit.size),
    )  # fmt: skip
    skipped: dict[int, str] = {}
    dropped: Counts = {}
    try:
        with closing(source.records(unit)) as records:
            for record in records:
                if isinstance(record, Dropped):
                    dropped.setdefault(record.what, {})[record.frame] = record.count
                    log.warning("frame %d: dropped %d %s", record.frame, record.count, record.what)
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
    return writer, skipped, dropped


def unit_runs(units: list[UnitPlan], workers: int) -> list[list[UnitPlan]]:
    """The units (in plan order) cut into runs of consecutive units of one sequence, each one
    worker's job, largest first. A worker keeps what neighbouring units share: a static-cloud
    window is prepared once per worker for every unit it covers, so units handed out one by
    one, each to whichever worker was free, had every worker prepare most windows anew. A run
    holds at most total frames / (RUNS_PER_WORKER * workers) frames (one unit at least), so
    that the last runs still keep every worker busy; largest first, so that the short ones (a
    sequence's last) fill in at the end instead of leaving a worker idle."""
    limit = _frames(units) // (RUNS_PER_WORKER * workers)
    runs: list[list[UnitPlan]] = []
    for unit in units:
        last = runs[-1] if runs else None
        if last and last[-1].sequence == unit.sequence and _frames(last) + len(unit.frames) <= limit:
            last.append(unit)
        else:
            runs.append([unit])
    return sorted(runs, key=_frames, reverse=True)


def _frames(units: list[UnitPlan]) -> int:
    return sum(len(unit.frames) for unit in units)


def _build_run(source: Source, out: Path, run: list[UnitPlan]) -> None:
    """Build a run of units, each committed atomically (a worker's job)."""
    _build_here(source, out, run, on_frame=lambda: None)


def _build_here(source: Source, out: Path, units: list[UnitPlan], on_frame: Callable[[], None]) -> None:
    """Build units one after another in this process. Each unit's commit (its last shard write,
    the rename, the index) runs on a thread while the next unit starts, so the reader and the
    projection never sit idle at unit boundaries; at most one commit is in flight."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unit-commit") as committer:
        previous: Future | None = None
        for unit in units:
            writer, skipped, dropped = _fill_unit(source, out, unit, on_frame)
            if previous is not None:
                previous.result()
            previous = committer.submit(writer.commit, unit.config_hash, skipped, dropped)
        if previous is not None:
            previous.result()


def _pending_units(out: Path, dataset: str, sequence: SequencePlan, force: bool) -> list[UnitPlan]:
    """Delete units of this sequence that the plan no longer has (all with `force`) and return
    the planned units not yet finished. A sequence that could not be planned keeps whatever it
    has."""
    if sequence.error is not None:
        return []
    planned = {unit.name for unit in sequence.units}
    for path in (out / INDEX_DIR).glob(f"{unit_name(dataset, sequence.name, '')}*.parquet"):
        _, name, unit = parse_unit_name(path.stem)
        if name == sequence.name and (force or unit not in planned):
            remove_unit(out, dataset, sequence.name, unit)
    return [unit for unit in sequence.units if not _finished(out, dataset, unit)]


def _finished(out: Path, dataset: str, unit: UnitPlan) -> bool:
    """A unit is finished when its index file carries the planned config hash and the data it
    lists is there (every shard file present, shapes as indexed); a damaged one is rebuilt."""
    path = index_path(out, dataset, unit.sequence, unit.name)
    if index_config_hash(path) != unit.config_hash:
        return False
    rows = read_index_file(path)
    if rows.empty:
        return True
    try:
        check_unit(out / shard_relpath(dataset, unit.sequence, unit.name), rows)
    except ShardError as exc:
        log.warning("rebuilding %s/%s unit %s: %s", dataset, unit.sequence, unit.name, exc)
        return False
    return True


def _manifest_entry(out: Path, dataset: str, sequence: SequencePlan) -> dict:
    """A built sequence's manifest entry: its units, frames written, and every frame skipped
    (before or while building) with its reason."""
    if sequence.error is not None:
        return {"frames_written": 0, "error": sequence.error}
    skipped = dict(sequence.skipped)
    dropped: Counts = {}
    for unit in sequence.units:
        path = index_path(out, dataset, sequence.name, unit.name)
        skipped.update(index_skipped(path))
        for what, counts in index_dropped(path).items():
            dropped.setdefault(what, {}).update(counts)
    return {
        "fingerprint": sequence_fingerprint(unit.config_hash for unit in sequence.units),
        "units": [unit.name for unit in sequence.units],
        "frames_written": sum(1 for unit in sequence.units for f in unit.frames if f not in skipped),
        "skipped": {str(f): reason for f, reason in sorted(skipped.items())},
        "dropped": {what: {str(f): n for f, n in sorted(c.items())} for what, c in sorted(dropped.items())},
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
