"""Multi-sweep depth for KITTI-360 frames: every sweep is read and registered to the world
once per unit (a sliding cache), then the centre sweep and its +-N posed neighbours (the
centre's sweep neighbourhood) are z-buffered into the centre camera, with dynamic and
occluded points removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from shards import ImageSize

from ...errors import InputError
from ...kernels import NO_LABELS, label_lut, register_sweep, remove_occluded, zbuffer_points
from .reader import DYNAMIC_LABELS, Sequence, SweepPoints


@dataclass(frozen=True)
class DepthSettings:
    """How LiDAR becomes depth; part of the build config hash."""

    accumulate: int = 4
    min_depth: float = 1.0
    max_depth: float = 120.0
    occlusion_radius_native: int = 4
    occlusion_rel_tol: float = 0.05
    dynamic_labels: tuple[int, ...] = DYNAMIC_LABELS

    def __post_init__(self) -> None:
        if self.accumulate < 0:
            raise ValueError(f"--accumulate must be >= 0 (sweeps each side), got {self.accumulate}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"depth range needs 0 <= min < max, got {self.min_depth}, {self.max_depth}")

    def occlusion_radius(self, scale: float) -> int:
        """Neighbourhood for the occlusion test, shrunk with the image (LiDAR gaps shrink too)."""
        return max(1, round(self.occlusion_radius_native * scale))


# A sweep keeps the points its own camera sees up to this many native pixels outside the
# image: more than enough for every point that lands inside the frame's resized image.
OWN_VIEW_MARGIN_PX = 1


@dataclass
class Sweep:
    """One frame's sweep in world coordinates, with the points its own semantics trust."""

    frame: int
    world_points: np.ndarray  # (N, 3) float64; only those its camera sees when it has labels
    trusted: np.ndarray  # (N,) bool: usable when accumulated into another frame
    semantic: np.ndarray | None  # native-resolution labels of this frame


@dataclass
class AccumulatedDepth:
    """A centre frame's depth from its sweep neighbourhood."""

    frame: int
    depth: np.ndarray  # (H, W) float32 at the target resolution
    semantic: np.ndarray | None  # native labels of the centre frame
    sweeps: int  # sweeps that contributed (unusable neighbours do not)


SweepInputs = tuple[SweepPoints, np.ndarray | None]  # LiDAR points, semantic labels


def read_sweep_inputs(sequence: Sequence, frame: int) -> SweepInputs:
    """The files one sweep needs: its points and its frame's labels (to vet dynamic points)."""
    return sequence.read_sweep(frame), sequence.read_semantic(frame)


def sweep_frames(centre: int, accumulate: int, poses: dict[int, np.ndarray]) -> list[int]:
    """A centre's sweep neighbourhood: the centre and its posed neighbours within
    +-accumulate, centre first."""
    around = range(centre - accumulate, centre + accumulate + 1)
    return [centre, *(f for f in around if f != centre and f in poses)]


class SweepAccumulator:
    """Depth of an ordered run of centre frames from their sweep neighbourhoods, through a
    sliding cache that registers each sweep once.

    `read` fetches a frame's SweepInputs (default: straight from disk; the build passes a
    read-ahead so decoding overlaps projection)."""

    def __init__(
        self, sequence: Sequence, settings: DepthSettings, read: Callable[[int], SweepInputs] | None = None
    ) -> None:
        self.seq = sequence
        self.settings = settings
        self.poses = sequence.world_from_rect
        self._read = read or (lambda frame: read_sweep_inputs(sequence, frame))
        self._cache: dict[int, Sweep | InputError] = {}
        self._dynamic = label_lut(settings.dynamic_labels)
        self.sweeps_read = 0
        self.dropped_points: dict[int, int] = {}  # sweep frame -> non-finite points dropped

    def _load(self, frame: int) -> Sweep | InputError:
        """Read, register and vet one sweep; a bad file is remembered as its error."""
        try:
            (points, dropped), semantic = self._read(frame)
        except InputError as exc:
            return exc
        self.sweeps_read += 1
        if dropped:
            self.dropped_points[frame] = dropped
        calib = self.seq.calib
        world, trusted = register_sweep(
            points, self.poses[frame] @ calib.rect_from_velo, calib.rect_from_velo, calib.K,
            NO_LABELS if semantic is None else semantic, self._dynamic, OWN_VIEW_MARGIN_PX,
        )  # fmt: skip
        return Sweep(frame, world, trusted, semantic)

    def get(self, frame: int) -> Sweep | InputError:
        if frame not in self._cache:
            self._cache[frame] = self._load(frame)
        return self._cache[frame]

    def evict_before(self, frame: int) -> None:
        for old in [f for f in self._cache if f < frame]:
            del self._cache[old]

    def neighbours(self, centre: int) -> list[int]:
        return sweep_frames(centre, self.settings.accumulate, self.poses)[1:]

    def depth_for(self, centre: int, K: np.ndarray, size: ImageSize) -> AccumulatedDepth:
        """Depth of `centre` at `size` with intrinsics K; raises InputError when the centre
        sweep itself is unusable."""
        s = self.settings
        centre_sweep = self.get(centre)
        if isinstance(centre_sweep, InputError):
            raise centre_sweep
        depth = np.zeros(size, dtype=np.float32)
        rect_from_world = np.linalg.inv(self.poses[centre])
        labels = centre_sweep.semantic if centre_sweep.semantic is not None else NO_LABELS
        all_points = np.ones(len(centre_sweep.world_points), dtype=bool)
        zbuffer_points(
            centre_sweep.world_points, all_points, rect_from_world, K, depth, s.min_depth,
            NO_LABELS, self.seq.calib.K, self._dynamic,
        )  # fmt: skip
        used = 1
        for frame in self.neighbours(centre):
            sweep = self.get(frame)
            if isinstance(sweep, InputError):
                continue
            zbuffer_points(
                sweep.world_points, sweep.trusted, rect_from_world, K, depth, s.min_depth,
                labels, self.seq.calib.K, self._dynamic,
            )  # fmt: skip
            used += 1
        depth[depth > s.max_depth] = 0.0
        radius = s.occlusion_radius(size.width / self.seq.calib.size.width)
        remove_occluded(depth, radius, s.occlusion_rel_tol)
        return AccumulatedDepth(centre, depth, centre_sweep.semantic, used)

    def run(
        self, centres: list[int], K: np.ndarray, size: ImageSize
    ) -> Iterator[tuple[int, AccumulatedDepth | InputError]]:
        """(centre, depth) for each centre in order, reading each sweep once; input errors are
        yielded in place of the depth, not raised, so the caller can skip and count them."""
        for centre in sorted(centres):
            self.evict_before(centre - self.settings.accumulate)
            try:
                yield centre, self.depth_for(centre, K, size)
            except InputError as exc:
                yield centre, exc
