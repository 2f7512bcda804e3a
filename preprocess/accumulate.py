"""Multi-sweep depth for KITTI-360 frames: every sweep is read and registered to the world
once per unit (sliding window), then the centre sweep and its +-N posed neighbours are
z-buffered into the centre camera, with dynamic and occluded points removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .kitti360 import Sequence
from .projection import (
    NO_LABELS,
    label_lut,
    register_sweep,
    remove_occluded,
    zbuffer_points,
)


@dataclass(frozen=True)
class DepthSettings:
    """How LiDAR becomes depth; part of the build config hash."""

    accumulate: int = 4
    min_depth: float = 1.0
    max_depth: float = 120.0
    occlusion_radius_native: int = 4
    occlusion_rel_tol: float = 0.05
    dynamic_labels: tuple[int, ...] = (24, 25, 26, 27, 28, 31, 32, 33, 43)

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
class WindowDepth:
    frame: int
    depth: np.ndarray  # (H, W) float32 at the target resolution
    semantic: np.ndarray | None  # native labels of the centre frame
    sweeps: int  # sweeps that contributed
    missing_neighbours: list[int] = field(default_factory=list)


SweepInputs = tuple[np.ndarray, np.ndarray | None]  # LiDAR points, semantic labels


def read_sweep_inputs(sequence: Sequence, frame: int) -> SweepInputs:
    """The files one sweep needs: its points and its frame's labels (to vet dynamic points)."""
    return sequence.read_sweep(frame), sequence.read_semantic(frame)


def window_frames(centre: int, accumulate: int, poses: dict[int, np.ndarray]) -> list[int]:
    """The centre and its posed neighbours within +-accumulate, centre first."""
    around = range(centre - accumulate, centre + accumulate + 1)
    return [centre, *(f for f in around if f != centre and f in poses)]


class SweepWindow:
    """Sliding cache of registered sweeps over one ordered run of centre frames.

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

    def _load(self, frame: int) -> Sweep | InputError:
        """Read, register and vet one sweep; a bad file is remembered as its error."""
        try:
            points, semantic = self._read(frame)
        except InputError as exc:
            return exc
        self.sweeps_read += 1
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
        return window_frames(centre, self.settings.accumulate, self.poses)[1:]

    def depth_for(self, centre: int, K: np.ndarray, size: tuple[int, int]) -> WindowDepth:
        """Depth of `centre` at `size` (W, H) with intrinsics K; raises InputError when the
        centre sweep itself is unusable."""
        s = self.settings
        centre_sweep = self.get(centre)
        if isinstance(centre_sweep, InputError):
            raise centre_sweep
        width, height = size
        depth = np.zeros((height, width), dtype=np.float32)
        rect_from_world = np.linalg.inv(self.poses[centre])
        labels = centre_sweep.semantic if centre_sweep.semantic is not None else NO_LABELS
        all_points = np.ones(len(centre_sweep.world_points), dtype=bool)
        zbuffer_points(
            centre_sweep.world_points, all_points, rect_from_world, K, depth, s.min_depth,
            NO_LABELS, self.seq.calib.K, self._dynamic,
        )  # fmt: skip
        used, missing = 1, []
        for frame in self.neighbours(centre):
            sweep = self.get(frame)
            if isinstance(sweep, InputError):
                missing.append(frame)
                continue
            zbuffer_points(
                sweep.world_points, sweep.trusted, rect_from_world, K, depth, s.min_depth,
                labels, self.seq.calib.K, self._dynamic,
            )  # fmt: skip
            used += 1
        depth[depth > s.max_depth] = 0.0
        remove_occluded(depth, s.occlusion_radius(width / self.seq.calib.width), s.occlusion_rel_tol)
        return WindowDepth(centre, depth, centre_sweep.semantic, used, missing)

    def run(
        self, centres: list[int], K: np.ndarray, size: tuple[int, int]
    ) -> Iterator[tuple[int, WindowDepth | InputError]]:
        """(centre, depth) for each centre in order, reading each sweep once; input errors are
        yielded in place of the depth, not raised, so the caller can skip and count them."""
        for centre in sorted(centres):
            self.evict_before(centre - self.settings.accumulate)
            try:
                yield centre, self.depth_for(centre, K, size)
            except InputError as exc:
                yield centre, exc
