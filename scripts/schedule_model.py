"""Model of how many static-cloud windows a multi-worker build prepares, and how long it takes,
with the driver's scheduling (runs of consecutive units, `preprocess.driver.unit_runs`) against
handing units out one at a time. No data is read: a frame costs one time step, preparing a
window --prep steps, and each worker keeps its last CACHED_WINDOWS windows (as WINDOW_CACHE does).

The default layout is KITTI-360's nine training sequences (their raw frame counts, roughly),
cut into --chunk-frames units, with windows of --window-frames frames overlapping by
--overlap-frames (KITTI-360's are about 240 frames sharing about 10 m). Workers take the next
task as soon as they are free, in submission order.
Usage: python scripts/schedule_model.py [--workers 2 8 16] [--prep 100] [--chunk-frames 128]
"""

from __future__ import annotations

import argparse
import heapq
from collections import OrderedDict

from preprocess.driver import unit_runs
from preprocess.sources import UnitPlan
from preprocess.sources.kitti360.static_depth import CACHED_WINDOWS
from shards import ImageSize

KITTI360_FRAMES = {
    "0000": 11518, "0002": 19240, "0003": 1031, "0004": 11587, "0005": 6743,
    "0006": 9699, "0007": 3396, "0009": 14056, "0010": 3836,
}  # fmt: skip


def window_starts(frames: int, span: int, overlap: int) -> list[int]:
    return list(range(0, frames, span - overlap))


def simulate(tasks: list[list[UnitPlan]], workers: int, windows: dict, prep: float) -> tuple[int, float]:
    """(windows prepared, finishing time) when `workers` take `tasks` in order, each as soon
    as it is free; windows[(sequence, frame)] lists the windows that cover the frame."""
    caches = [OrderedDict() for _ in range(workers)]
    free = [(0.0, w) for w in range(workers)]
    prepared = 0
    for task in tasks:
        time, worker = heapq.heappop(free)
        cache = caches[worker]
        for unit in task:
            for frame in unit.frames:
                for window in windows[unit.sequence, frame]:
                    if window in cache:
                        cache.move_to_end(window)
                        continue
                    while len(cache) >= CACHED_WINDOWS:
                        cache.popitem(last=False)
                    cache[window] = True
                    prepared += 1
                    time += prep
                time += 1.0
        heapq.heappush(free, (time, worker))
    return prepared, max(time for time, _ in free)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8, 16])
    parser.add_argument("--prep", type=float, default=100.0, help="a window's preparation, in frames' time")
    parser.add_argument("--chunk-frames", type=int, default=128)
    parser.add_argument("--window-frames", type=int, default=240)
    parser.add_argument("--overlap-frames", type=int, default=12)
    args = parser.parse_args()
    size = ImageSize(height=1, width=1)
    units, windows = [], {}
    for sequence, frames in KITTI360_FRAMES.items():
        starts = window_starts(frames, args.window_frames, args.overlap_frames)
        for frame in range(frames):
            windows[sequence, frame] = [(sequence, s) for s in starts if s <= frame < s + args.window_frames]
        for first in range(0, frames, args.chunk_frames):
            last = min(first + args.chunk_frames, frames)
            units.append(UnitPlan(sequence, f"{first:010d}", size, dict.fromkeys(range(first, last)), ""))
    total = sum(len(unit.frames) for unit in units)
    n_windows = len({w for covering in windows.values() for w in covering})
    print(
        f"{len(units)} units, {n_windows} windows, {total} frames; a preparation costs {args.prep:g} frames"
    )
    print(f"{'workers':>7s}  {'scheduling':28s} {'prepared':>8s} {'frames/step/worker':>19s}")
    for workers in args.workers:
        one_by_one = [[u] for u in sorted(units, key=lambda u: len(u.frames), reverse=True)]
        for label, tasks in (
            ("one unit at a time", one_by_one),
            ("runs (unit_runs)", unit_runs(units, workers)),
        ):
            prepared, finish = simulate(tasks, workers, windows, args.prep)
            print(f"{workers:7d}  {label:28s} {prepared:8d} {total / finish / workers:19.3f}")


if __name__ == "__main__":
    main()
