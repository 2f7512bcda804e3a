"""A deterministic street: a gently curving path, box buildings in two rows on both sides
(the back row visible through gaps, so viewpoints disagree about occlusion), sidewalks, a
wall, poles, vegetation, terrain, parked cars and one oncoming moving car."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROAD, SIDEWALK, BUILDING, WALL, POLE, VEGETATION, TERRAIN, SKY, CAR = 7, 8, 11, 12, 17, 21, 22, 23, 26
METRES_PER_FRAME = 1.0
MOVING_CAR_SPEED = 0.8  # m per frame, towards the ego vehicle


@dataclass
class Path:
    """Planar path parameterised by arc length s: heading = curvature * s."""

    curvature: float

    def heading(self, s: np.ndarray | float) -> np.ndarray:
        return np.asarray(self.curvature * np.asarray(s, dtype=np.float64))

    def point(self, s: np.ndarray | float, lateral: np.ndarray | float = 0.0) -> np.ndarray:
        """World xy of arc length s, offset `lateral` metres to the left."""
        s = np.asarray(s, dtype=np.float64)
        k = self.curvature
        if abs(k) < 1e-9:
            x, y = s, np.zeros_like(s)
        else:
            x, y = np.sin(k * s) / k, (1 - np.cos(k * s)) / k
        h = self.heading(s)
        lateral = np.asarray(lateral, dtype=np.float64)
        return np.stack([x - np.sin(h) * lateral, y + np.cos(h) * lateral], axis=-1)


@dataclass
class Boxes:
    centres: np.ndarray  # (M,3)
    yaws: np.ndarray  # (M,)
    halves: np.ndarray  # (M,3) half sizes in the box frame (x along the path)
    labels: np.ndarray  # (M,) KITTI-360 label ids
    colours: np.ndarray  # (M,3) base RGB in [0,1]

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def concat(parts: list[Boxes]) -> Boxes:
        return Boxes(*(np.concatenate([getattr(p, f) for p in parts]) for f in Boxes.__dataclass_fields__))


class Street:
    """Static objects plus a moving car placed per frame."""

    def __init__(self, frames: int, rng: np.random.Generator) -> None:
        self.path = Path(curvature=float(rng.uniform(-1, 1) * 0.004))
        self.length = frames * METRES_PER_FRAME + 80.0
        self._rng = rng
        # each item: arc length, lateral offset, base height, length, width, height, label, extra yaw
        items: list[tuple] = []
        s_min, s_max = -30.0, self.length
        # building-free start, then one side built up, then a full canyon: the frames span
        # road-like, mixed and building-rich views
        open_until, one_side_until = 0.45 * frames + 38.0, frames + 8.0
        for side in (-1.0, 1.0):
            start = open_until if side > 0 else one_side_until
            items += self._row(side, start, s_max, 8.0, (8, 22), (6, 10), (7, 18), gap=(0.5, 7))
            items += self._row(side, start + 10.0, s_max, 21.0, (12, 30), (8, 14), (12, 24), gap=(0, 3))
            for s in np.arange(s_min, s_max, 10.0):
                items.append((s + 5.0, side * 6.5, 0.0, 10.0, 3.0, 0.15, SIDEWALK, 0))
            for s in np.arange(s_min + rng.uniform(0, 10), s_max, rng.uniform(14, 22)):
                items.append((s, side * 5.4, 0.15, 0.3, 0.3, 6.0, POLE, 0))
            for s in np.arange(s_min + rng.uniform(0, 15), s_max, rng.uniform(18, 30)):
                items.append((s, side * 4.0, 0.0, 4.2, 1.8, 1.5, CAR, rng.uniform(-0.05, 0.05)))
            for s in rng.uniform(s_min, s_max, 4):
                items.append((s, side * 6.9, 0.15, 2.5, 1.2, 3.5, VEGETATION, 0))
            # a tree line along the unbuilt stretch hides the sides, leaving a road-like view
            tree_end = (open_until if side > 0 else one_side_until) - 3.0
            for s in np.arange(s_min, tree_end, rng.uniform(3.5, 5.0)):
                size = rng.uniform(3.0, 4.5)
                items.append(
                    (s, side * rng.uniform(9.0, 10.5), 0.0, size, size, rng.uniform(7, 10), VEGETATION, 0)
                )
        items.append((rng.uniform(10, max(11.0, s_max - 30)), 7.6, 0.15, 12.0, 0.4, 1.6, WALL, 0))
        for s in rng.uniform(s_min, s_max, 3):
            items.append((s, -6.5, 0.15, 4.0, 2.0, 0.05, TERRAIN, 0))
        self.static = self._boxes(items)
        self.moving_start = float(frames * METRES_PER_FRAME + 25.0)

    def _row(self, side, s_min, s_max, offset, length, depth, height, gap):
        rng = self._rng
        out, s = [], s_min
        while s < s_max:
            ln, dp, h = rng.uniform(*length), rng.uniform(*depth), rng.uniform(*height)
            out.append((s + ln / 2, side * (offset + dp / 2), 0.0, ln, dp, h, BUILDING, 0))
            s += ln + rng.uniform(*gap)
        return out

    def _boxes(self, items) -> Boxes:
        arr = np.array(items, dtype=np.float64)
        s, lat, z0, ln, wd, h, label, dyaw = arr.T
        xy = self.path.point(s, lat)
        centres = np.column_stack([xy, z0 + h / 2])
        colours = self._rng.uniform(0.25, 0.85, (len(arr), 3))
        halves = np.column_stack([ln, wd, h]) / 2
        return Boxes(centres, self.path.heading(s) + dyaw, halves, label.astype(int), colours)

    def moving_car(self, frame: int) -> Boxes:
        s = self.moving_start - MOVING_CAR_SPEED * frame
        return self._boxes([(s, 2.0, 0.0, 4.5, 1.9, 1.6, CAR, np.pi)])

    def at(self, frame: int) -> tuple[Boxes, int]:
        """All boxes at a frame's time and the index of the moving car among them."""
        return Boxes.concat([self.static, self.moving_car(frame)]), len(self.static)
