"""`kitti360-prep build`: plan units (fixed frame ranges of a sequence), skip finished ones,
build the rest in parallel, and record what was written and skipped in the manifest."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import forkserver, get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shards import UnitWriter, discard_debris

from .accumulate import DepthSettings, SweepWindow, read_sweep_inputs, window_frames
from .errors import InputError
from .frames import frame_record, resize_image, resize_labels
from .kitti360 import (
    BUILDING_LABEL,
    Sequence,
    list_sequences,
    read_calibration,
    read_split_lists,
    sequence_name,
)
from .manifest import config_hash, files_fingerprint, update_manifest
from .projection import resized_intrinsics, target_size
from .readahead import ReadAhead
from .units import pending_units, units_skipped

log = logging.getLogger(__name__)
DATASET = "kitti360"
SPLITS = ("train", "val", "all")
SHARD_BYTES_BUDGET = 256 * 2**20  # one shard of frames; a unit writer holds two (filling, writing)
SHARD_FRAMES = 32  # several shard files per unit, so each one's write overlaps the next frames' work
CALIBRATION_FILES = ("perspective.txt", "calib_cam_to_pose.txt", "calib_cam_to_velo.txt")


@dataclass(frozen=True)
class BuildConfig:
    """Everything that changes the written data; hashed into each unit's completion marker."""

    depth: DepthSettings = field(default_factory=DepthSettings)
    width: int | None = 518
    building_labels: tuple[int, ...] = (BUILDING_LABEL,)
    chunk_frames: int = 128

    def to_dict(self) -> dict:
        return asdict(self)

    def frames_per_shard(self, width: int, height: int) -> int:
        """SHARD_FRAMES per shard file, fewer when that would exceed the write buffer's budget."""
        frame_bytes = width * height * (3 + 4 + 1 + 1 + 12)
        return int(max(1, min(self.chunk_frames, SHARD_FRAMES, SHARD_BYTES_BUDGET // frame_bytes)))


@dataclass
class UnitPlan:
    sequence: str
    unit: str
    centres: list[int]
    splits: dict[int, str]
    window_frames: list[int]
    config_hash: str = ""


@dataclass
class SequencePlan:
    name: str
    units: list[UnitPlan]
    skipped: dict[int, str]
    fingerprint: str = ""


def assign_splits(sequence: str, frames: list[int], lists: dict[tuple[str, int], str]) -> dict[int, str]:
    """Official split per frame; unlisted frames take the split of the nearest listed frame of
    the same sequence (val frames come in contiguous blocks), else 'train'."""
    listed = sorted((f, s) for (seq, f), s in lists.items() if seq == sequence)
    if not listed:
        return dict.fromkeys(frames, "train")
    keys = np.array([f for f, _ in listed])
    out = {}
    for frame in frames:
        pos = int(np.clip(np.searchsorted(keys, frame), 1, len(keys) - 1)) if len(keys) > 1 else 0
        best = pos if len(keys) == 1 or abs(keys[pos] - frame) < abs(keys[pos - 1] - frame) else pos - 1
        out[frame] = listed[best][1]
    return out


def plan_sequence(
    root: Path, name: str, split: str, config: BuildConfig, lists: dict[tuple[str, int], str]
) -> SequencePlan:
    """Units of one sequence with their input fingerprints; frames without pose/image are skipped."""
    seq = Sequence(root, name, read_calibration(root))
    image_frames = set(seq.frames)
    posed = set(seq.world_from_rect)
    skipped = {f: "no pose in poses.txt" for f in sorted(image_frames - posed)}
    skipped.update({f: "no image" for f in sorted(posed - image_frames)})
    candidates = sorted(image_frames & posed)
    splits = assign_splits(name, candidates, lists)
    centres = [f for f in candidates if split == "all" or splits[f] == split]
    n = config.depth.accumulate
    calib_files = [root / "calibration" / f for f in CALIBRATION_FILES]
    units: dict[int, list[int]] = {}
    for frame in centres:
        units.setdefault(frame // config.chunk_frames, []).append(frame)
    plans = []
    for key, frames in sorted(units.items()):
        window = sorted({w for f in frames for w in range(f - n, f + n + 1) if w in posed})
        inputs = [*calib_files, seq.pose_dir / "poses.txt"]
        inputs += [seq.image_path(f) for f in frames]
        inputs += [p for f in window for p in (seq.sweep_path(f), seq.semantic_path(f))]
        plan = UnitPlan(
            name, f"{key * config.chunk_frames:010d}", frames, {f: splits[f] for f in frames}, window
        )
        plan.config_hash = config_hash(
            {**config.to_dict(), "centres": frames, "splits": plan.splits}, files_fingerprint(inputs)
        )
        plans.append(plan)
    fingerprint = hashlib.sha256("|".join(p.config_hash for p in plans).encode()).hexdigest()[:16]
    return SequencePlan(name, plans, skipped, fingerprint)


def _read_order(centres: list[int], accumulate: int, poses: dict[int, np.ndarray]) -> list[tuple[str, int]]:
    """Files in the order the unit consumes them: each centre's window sweeps, then its image."""
    order = []
    for centre in sorted(centres):
        order += [("sweep", f) for f in window_frames(centre, accumulate, poses)]
        order.append(("image", centre))
    return order


def fill_unit(
    root: Path, out: Path, plan: UnitPlan, config: BuildConfig, on_frame: Callable[[], None] | None = None
) -> tuple[UnitWriter, dict[int, str]]:
    """Project and write every frame of one unit; returns its writer, still to be committed,
    and the frames skipped with reasons. On error the unit's partial data is discarded."""
    calib = read_calibration(root)
    seq = Sequence(root, plan.sequence, calib)
    size = target_size(config.width, calib.width, calib.height)
    K = resized_intrinsics(calib.K, (calib.width, calib.height), size)
    writer = UnitWriter(
        out, DATASET, plan.sequence, plan.unit, size[1], size[0],
        capacity=len(plan.centres), frames_per_shard=config.frames_per_shard(*size),
    )  # fmt: skip
    skipped: dict[int, str] = {}
    reads = ReadAhead(
        {"sweep": lambda f: read_sweep_inputs(seq, f), "image": seq.read_image},
        _read_order(plan.centres, config.depth.accumulate, seq.world_from_rect),
    )
    window = SweepWindow(seq, config.depth, read=lambda f: reads.get(("sweep", f)))
    try:
        for centre, result in window.run(plan.centres, K, size):
            if on_frame is not None:
                on_frame()
            try:
                if isinstance(result, InputError):
                    raise result
                image = resize_image(reads.get(("image", centre)), size)
            except InputError as exc:
                skipped[centre] = str(exc)
                log.warning("skipping frame %d: %s", centre, exc)
                continue
            semantic = None if result.semantic is None else resize_labels(result.semantic, size)
            arrays, stats = frame_record(
                image, result.depth, semantic, K, np.linalg.inv(window.poses[centre]), config.building_labels
            )
            row = {
                "dataset": DATASET,
                "sequence": plan.sequence,
                "frame": centre,
                "split": plan.splits[centre],
            }
            writer.add(arrays, {**row, **stats, "sweeps": result.sweeps, "depth_source": "lidar"})
    except BaseException:
        writer.abort()
        raise
    finally:
        reads.close()
    return writer, skipped


def build_unit(root: Path, out: Path, plan: UnitPlan, config: BuildConfig) -> dict[int, str]:
    """Build one unit and commit it atomically; returns frames skipped with reasons."""
    writer, skipped = fill_unit(root, out, plan, config)
    writer.commit(plan.config_hash, skipped)
    return skipped


def _build_units_here(
    root: Path, out: Path, units: list[UnitPlan], config: BuildConfig, on_frame: Callable[[], None]
) -> None:
    """Build units one after another in this process. Each unit's commit (its last shard write,
    the rename, the index) runs on a thread while the next unit starts, so the reader and the
    projection never sit idle at unit boundaries; at most one commit is in flight."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unit-commit") as committer:
        previous: Future | None = None
        for unit in units:
            writer, skipped = fill_unit(root, out, unit, config, on_frame)
            if previous is not None:
                previous.result()
            previous = committer.submit(writer.commit, unit.config_hash, skipped)
        if previous is not None:
            previous.result()


def _resolve_sequences(root: Path, seqs: str) -> tuple[list[str], bool]:
    available = list_sequences(root)
    if seqs.strip() == "all":
        return available, False
    names = [sequence_name(s) for s in seqs.split(",") if s.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InputError(root / "data_2d_raw", f"sequence(s) not found: {', '.join(unknown)}")
    return names, True


def _retire_stale_units(out: Path, plan: SequencePlan, force: bool) -> list[UnitPlan]:
    """Delete units of this sequence that the plan no longer has (or all with --force);
    return the planned units that still need building."""
    todo = set(pending_units(out, DATASET, plan.name, {u.unit: u.config_hash for u in plan.units}, force))
    return [u for u in plan.units if u.unit in todo]


def build(
    root: Path,
    out: Path,
    seqs: str = "all",
    split: str = "all",
    config: BuildConfig | None = None,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Build (or resume building) shards for the selected sequences; returns a summary."""
    config = config or BuildConfig()
    root, out = Path(root), Path(out)
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, got {split!r}")
    read_calibration(root)  # fail fast on calibration problems, before any work
    context = worker_context() if workers > 1 else None  # workers start up while units are planned
    names, explicit = _resolve_sequences(root, seqs)
    lists = read_split_lists(root)
    out.mkdir(parents=True, exist_ok=True)
    discard_debris(out)
    plans, empty = [], {}
    for name in names:
        try:
            plans.append(plan_sequence(root, name, split, config, lists))
        except InputError as exc:
            if explicit:
                raise
            empty[name] = str(exc)
            log.warning("skipping sequence %s: %s", name, exc)
    todo = [u for plan in plans for u in _retire_stale_units(out, plan, force)]
    total_units = sum(len(p.units) for p in plans)
    log.info("%d of %d units to build (%d already complete)", len(todo), total_units, total_units - len(todo))
    bar = tqdm(total=sum(len(u.centres) for u in todo), unit="frame", desc="build", disable=not progress)
    if workers <= 1:
        _build_units_here(root, out, todo, config, on_frame=lambda: bar.update(1))
    else:
        # largest units first: workers take them in submission order, so the short ones (a
        # sequence's last, partial unit) fill in at the end instead of leaving a worker idle
        by_size = sorted(todo, key=lambda u: len(u.centres), reverse=True)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(build_unit, root, out, u, config): u for u in by_size}
            for future in as_completed(futures):
                future.result()
                bar.update(len(futures[future].centres))
    bar.close()
    return _record(out, plans, empty, config, split)


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


def _record(
    out: Path, plans: list[SequencePlan], empty: dict[str, str], config: BuildConfig, split: str
) -> dict:
    sequences: dict[str, dict] = {}
    for plan in plans:
        skipped = {**plan.skipped, **units_skipped(out, DATASET, plan.name, [u.unit for u in plan.units])}
        planned = sum(len(u.centres) for u in plan.units)
        sequences[f"{DATASET}/{plan.name}"] = {
            "fingerprint": plan.fingerprint,
            "units": [u.unit for u in plan.units],
            "frames_written": planned - sum(1 for u in plan.units for f in u.centres if f in skipped),
            "skipped": {str(f): r for f, r in sorted(skipped.items())},
        }
    for name, reason in empty.items():
        sequences[f"{DATASET}/{name}"] = {"frames_written": 0, "error": reason}
    manifest = update_manifest(out, DATASET, {**config.to_dict(), "split": split}, sequences)
    return {"manifest": str(manifest), "sequences": sequences}
