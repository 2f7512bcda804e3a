"""KITTI-360 as a source: units are fixed `chunk_frames` runs of a sequence's posed frames;
each frame's depth is its LiDAR sweep plus its +-N posed neighbours (sweeps.py), merged with
the sequence's static clouds where it has them (static_depth.py), and its building mask
comes from its 2D semantics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np

from shards import ImageSize
from shards.layout import frame_bytes

from ...errors import InputError
from ...imaging import (
    check_chunk_frames,
    check_width,
    resize_image,
    resize_labels,
    resized_intrinsics,
    target_size,
)
from ...kernels import label_lut
from ...manifest import config_hash, files_fingerprint
from ...readahead import ReadAhead
from ...record import Dropped, FrameRecord, Skip
from .. import SequencePlan, UnitPlan
from .reader import (
    BUILDING_LABEL,
    Calibration,
    Sequence,
    list_sequences,
    read_calibration,
    read_split_lists,
    sequence_name,
    split_list_paths,
)
from .static_depth import WINDOW_CACHE, StaticSettings, check_labels, merge_depth, render_clouds
from .static_ply import Window, check_static_ply, list_windows, static_dir
from .sweeps import DepthSettings, SweepAccumulator, read_sweep_inputs, sweep_frames

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "all")
SHARD_BYTES_BUDGET = 256 * 2**20  # one shard of frames; a unit writer holds two (filling, writing)
SHARD_FRAMES = 32  # several shard files per unit, so each one's write overlaps the next frames' work
NONFINITE_POINTS = "non-finite LiDAR points"  # manifest key: sweep frame -> points dropped
CALIBRATION_FILES = ("perspective.txt", "calib_cam_to_pose.txt", "calib_cam_to_velo.txt")


@dataclass(frozen=True)
class Kitti360Config:
    """Everything that changes the written data; hashed into each unit's completion marker
    (field names included: renaming one makes every finished unit look changed)."""

    depth: DepthSettings = field(default_factory=DepthSettings)
    width: int | None = 518
    building_labels: tuple[int, ...] = (BUILDING_LABEL,)
    chunk_frames: int = 128
    # static clouds: None uses a sequence's static/ folder when it has one, True requires it
    static_clouds: bool | None = None
    static: StaticSettings = field(default_factory=StaticSettings)

    def __post_init__(self) -> None:
        check_width(self.width)
        check_chunk_frames(self.chunk_frames)

    def to_dict(self) -> dict:
        return asdict(self)

    def hashed(self, clouds: bool) -> dict:
        """What a unit's config hash covers: the static-cloud settings only where clouds are
        used, so a LiDAR-only unit hashes as it did before clouds existed."""
        out = self.to_dict()
        del out["static_clouds"], out["static"]
        return {**out, "static": self.static.to_dict()} if clouds else out


@dataclass
class Kitti360Unit(UnitPlan[str]):
    """A unit with the static-cloud windows that cover any of its frames."""

    windows: tuple[Window, ...] = ()


def assign_splits(sequence: str, frames: list[int], lists: dict[tuple[str, int], str]) -> dict[int, str]:
    """Official split per frame; unlisted frames take the split of the nearest listed frame of
    the same sequence (val frames come in contiguous blocks). A sequence with no listed frame
    has no known split: an error, never a guess (that would leak val into train)."""
    listed = sorted((f, s) for (seq, f), s in lists.items() if seq == sequence)
    if not listed:
        raise ValueError(f"sequence {sequence} has no frame in the train/val split lists")
    keys = np.array([f for f, _ in listed])
    out = {}
    for frame in frames:
        pos = int(np.clip(np.searchsorted(keys, frame), 1, len(keys) - 1)) if len(keys) > 1 else 0
        best = pos if len(keys) == 1 or abs(keys[pos] - frame) < abs(keys[pos - 1] - frame) else pos - 1
        out[frame] = listed[best][1]
    return out


def lidar_record(
    frame: int,
    split: str,
    image: np.ndarray,
    depth: np.ndarray,
    semantic: np.ndarray | None,
    sweeps: int,
    K: np.ndarray,
    cam_from_world: np.ndarray,
    building_labels: tuple[int, ...],
    static_points: int | None = None,
) -> FrameRecord:
    """A KITTI-360 frame at the stored size: its labels say what is building, and without
    labels nothing is known about buildings. `static_points`: cloud points that gave depth,
    None when no static cloud covered the frame."""
    known = semantic is not None
    building = label_lut(building_labels)[semantic] if known else np.zeros(depth.shape, bool)
    return FrameRecord(
        frame=frame, split=split, image=image, depth=depth, semantic=semantic,
        building_mask=building, building_known=known, K=K, cam_from_world=cam_from_world,
        depth_source="lidar+static" if static_points is not None else "lidar", sweeps=sweeps,
        static_points=static_points or 0,
    )  # fmt: skip


@dataclass
class Kitti360Source:
    """The selected sequences (`seqs`: 'all', short ids '0000,0002' or full names) of a
    KITTI-360 root, with the centre frames of `split` ('train', 'val' or 'all').

    Frames without a pose or an image are skipped when planning; frames with a corrupt image
    or centre sweep while building. Every selected sequence must be usable: one that is not
    stops the build naming it, unless `skip_bad_sequences` (then it is skipped, logged, and
    its reason kept in the manifest)."""

    root: Path
    config: Kitti360Config = field(default_factory=Kitti360Config)
    seqs: str = "all"
    split: str = "all"
    skip_bad_sequences: bool = False
    dataset: ClassVar[str] = "kitti360"
    progress_label: ClassVar[str] = "build"

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @cached_property
    def calibration(self) -> Calibration:
        return read_calibration(self.root)

    def check(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"--split must be one of {SPLITS}, got {self.split!r}")
        self.calibration  # noqa: B018 - calibration problems stop the build before any work

    def plan(self) -> list[SequencePlan]:
        lists = read_split_lists(self.root)
        plans = []
        for name in self._sequence_names():
            try:
                plans.append(self._plan_sequence(name, lists))
            except InputError as exc:
                if not self.skip_bad_sequences:
                    if name in exc.problem or name in str(exc.path):
                        raise
                    raise InputError(exc.path, f"sequence {name}: {exc.problem}") from None
                log.warning("skipping sequence %s: %s", name, exc)
                plans.append(SequencePlan(name, error=str(exc)))
        if self.split != "all" and not any(unit.frames for plan in plans for unit in plan.units):
            lists_dir = split_list_paths(self.root)["train"].parent
            raise InputError(lists_dir, f"no frame of the selected sequences is in the {self.split!r} split")
        return plans

    def _sequence_names(self) -> list[str]:
        """The sequences to build."""
        available = list_sequences(self.root)
        if self.seqs.strip() == "all":
            return available
        names = [sequence_name(s) for s in self.seqs.split(",") if s.strip()]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise InputError(self.root / "data_2d_raw", f"sequence(s) not found: {', '.join(unknown)}")
        return names

    def _plan_sequence(self, name: str, lists: dict[tuple[str, int], str]) -> SequencePlan:
        """Units of one sequence with their config hashes; frames without pose/image are skipped."""
        config = self.config
        seq = Sequence(self.root, name, self.calibration)
        image_frames = set(seq.frames)
        posed = set(seq.world_from_rect)
        skipped = {f: "no pose in poses.txt" for f in sorted(image_frames - posed)}
        skipped.update({f: "no image" for f in sorted(posed - image_frames)})
        candidates = sorted(image_frames & posed)
        try:
            splits = assign_splits(name, candidates, lists)
        except ValueError as exc:
            raise InputError(split_list_paths(self.root)["train"].parent, str(exc)) from None
        centres = [f for f in candidates if self.split == "all" or splits[f] == self.split]
        windows = self._static_windows(name)
        size = target_size(config.width, self.calibration.size)
        n = config.depth.accumulate
        calib_files = [self.root / "calibration" / f for f in CALIBRATION_FILES]
        chunks: dict[int, list[int]] = {}
        for frame in centres:
            chunks.setdefault(frame // config.chunk_frames, []).append(frame)
        units = []
        for key, frames in sorted(chunks.items()):
            unit_splits = {f: splits[f] for f in frames}
            neighbourhood = sorted({s for f in frames for s in range(f - n, f + n + 1) if s in posed})
            inputs = [*calib_files, seq.pose_dir / "poses.txt"]
            inputs += [seq.image_path(f) for f in frames]
            inputs += [p for f in neighbourhood for p in (seq.sweep_path(f), seq.semantic_path(f))]
            used = (
                tuple(w for w in windows if any(w.covers(f) for f in frames)) if windows is not None else ()
            )
            hashed = {**config.hashed(windows is not None), "centres": frames, "splits": unit_splits}
            if windows is not None:
                hashed["static_windows"] = [w.path.name for w in used]
                inputs += [w.path for w in used]
            digest = config_hash(hashed, files_fingerprint(inputs))
            unit_name = f"{key * config.chunk_frames:010d}"
            units.append(Kitti360Unit(name, unit_name, size, unit_splits, digest, used))
        details = {"static_windows": [w.path.name for w in windows]} if windows is not None else {}
        return SequencePlan(name, units, skipped, details)

    def _static_windows(self, name: str) -> list[Window] | None:
        """The sequence's static-cloud windows (headers checked), or None when clouds are off
        for it: --no-static-clouds, or no static/ folder without --static-clouds."""
        folder = static_dir(self.root, name)
        wanted = self.config.static_clouds
        if wanted is False or (wanted is None and not folder.is_dir()):
            return None
        if not folder.is_dir():
            raise InputError(folder, "--static-clouds given but the sequence has no static-cloud folder")
        windows = list_windows(folder)
        for window in windows:
            check_static_ply(window.path)
        return windows

    def frames_per_shard(self, size: ImageSize) -> int:
        """SHARD_FRAMES per shard file, fewer when that would exceed the write buffer's budget."""
        budget = SHARD_BYTES_BUDGET // frame_bytes(*size)
        return int(max(1, min(self.config.chunk_frames, SHARD_FRAMES, budget)))

    def records(self, unit: Kitti360Unit) -> Iterator[FrameRecord | Skip | Dropped]:
        """Each centre of the unit (frames -> split) with its accumulated depth, merged with
        the static clouds that cover it, then the non-finite points dropped from each sweep
        read and from each static window (counted at the window's first frame). Two read-ahead
        threads decode the next frames' sweeps and images while this one projects."""
        seq = Sequence(self.root, unit.sequence, self.calibration)
        if unit.windows:
            log.info("%s unit %s uses static windows %s", unit.sequence, unit.name,
                     ", ".join(w.path.name for w in unit.windows))  # fmt: skip
        K = resized_intrinsics(self.calibration.K, self.calibration.size, unit.size)
        centres = list(unit.frames)
        reads = ReadAhead(
            {"sweep": lambda f: read_sweep_inputs(seq, f), "image": seq.read_image},
            _read_order(centres, self.config.depth.accumulate, seq.world_from_rect),
        )
        sweeps = SweepAccumulator(seq, self.config.depth, read=lambda f: reads.get(("sweep", f)))
        try:
            for centre, result in sweeps.run(centres, K, unit.size):
                try:
                    if isinstance(result, InputError):
                        raise result
                    image = resize_image(reads.get(("image", centre)), unit.size)
                except InputError as exc:
                    yield Skip(centre, str(exc))
                    continue
                semantic = None if result.semantic is None else resize_labels(result.semantic, unit.size)
                cam_from_world = np.linalg.inv(sweeps.poses[centre])
                depth, static_points = self._with_clouds(
                    unit, centre, result.depth, semantic, K, cam_from_world
                )
                yield lidar_record(
                    centre, unit.frames[centre], image, depth, semantic, result.sweeps, K,
                    cam_from_world, self.config.building_labels, static_points,
                )  # fmt: skip
            for frame, count in sorted(sweeps.dropped_points.items()):
                yield Dropped(frame, NONFINITE_POINTS, count)
        finally:
            reads.close()
        for window in unit.windows:
            dropped = WINDOW_CACHE.get(window, self.config.static).nonfinite_dropped
            if dropped:
                yield Dropped(window.start, f"non-finite static-cloud points ({window.path.name})", dropped)

    def _with_clouds(
        self, unit: Kitti360Unit, frame: int, lidar: np.ndarray, semantic: np.ndarray | None,
        K: np.ndarray, cam_from_world: np.ndarray,
    ) -> tuple[np.ndarray, int | None]:  # fmt: skip
        """The frame's depth merged with the clouds of the windows covering it, and the cloud
        points used (None: no window covers the frame, LiDAR only)."""
        covering = [w for w in unit.windows if w.covers(frame)]
        if not covering:
            return lidar, None
        settings, depth = self.config.static, self.config.depth
        windows = [WINDOW_CACHE.get(w, settings) for w in covering]
        cloud = render_clouds(
            windows, cam_from_world, K, lidar.shape, depth.min_depth, depth.max_depth, settings
        )
        check_labels(cloud, windows, semantic, settings, label_lut(depth.dynamic_labels))
        return merge_depth(lidar, cloud, settings.merge_rel_tol)

    def manifest_config(self) -> tuple[str, dict]:
        return self.dataset, {**self.config.to_dict(), "split": self.split}


def _read_order(centres: list[int], accumulate: int, poses: dict[int, np.ndarray]) -> list[tuple[str, int]]:
    """Files in the order the unit consumes them: each centre's neighbourhood sweeps, then its image."""
    order = []
    for centre in sorted(centres):
        order += [("sweep", f) for f in sweep_frames(centre, accumulate, poses)]
        order.append(("image", centre))
    return order
