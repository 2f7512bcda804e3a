"""Benchmark `kitti360-prep build` (--accumulate 4, width 518) on the synthetic scene.

Measured in one run, on the same data:
  * build end to end (decode, project, write) with 1 and 2 workers; one worker keeps more than
    one core busy (read-ahead and shard-writer threads), so scaling is also measured per core:
    1 worker confined to 1 core against 2 workers on 2 cores (fresh processes under Linux CPU
    affinity; interpreter start-up and Numba kernel loading not counted for the 1-worker run,
    the 2 workers' start-up counted, and also measured alone to show steady-state scaling);
  * a plain-NumPy per-frame reference that re-reads and re-projects all 2N+1 sweeps for
    every frame and writes the same outputs;
  * the I/O floor: reading and decoding every input once;
  * with --checksum-cost, only the price of the crc32c after every chunk: a 1-worker build and a
    read of every stored frame, each with and without the checksum, in the same run.
Each pipeline but the slow reference runs --repeat times; the median run is reported, since a
shared machine's timings of a few seconds vary by +-10%.

With --cloud-points N (0: skip), one more synthetic sequence of --cloud-frames frames gets
static-cloud windows of at least N points each (KITTI-360's are 5-30 million; the default 470
frames give two windows of 240 frames each sharing 10 m, as KITTI-360's), and one worker
builds it twice in fresh processes, LiDAR-only and with the clouds, --repeat times: frames/s
of both, their ratio (the pair of runs with the median ratio; every ratio listed), and each
worker's peak memory. The windows' preparation (read, grids, planes and patches, levels of
detail; surfels are fitted later, as frames first may show them) is timed apart, and so are
rendering the windows (drawing patches, fitting and drawing discs) and the label check and
merge with LiDAR. Both builds' system CPU time is printed too: the two prepared windows are
about 0.8 GiB of fresh memory, whose pages the kernel zeroes on first touch, and where a
virtual machine's host backs its memory lazily that costs far more than on bare metal.
Usage: python scripts/bench_build.py [--frames 60] [--chunk-frames 128] [--repeat 3] [--workdir DIR]
       [--checksum-cost] [--cloud-points 15000000] [--cloud-frames 470] [--only-clouds]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import cv2
import numpy as np
from zarr.codecs import Crc32cCodec

from preprocess.driver import build
from preprocess.imaging import resize_image, resize_labels, resized_intrinsics, target_size
from preprocess.sources.kitti360 import Kitti360Config, Kitti360Source
from preprocess.sources.kitti360.reader import Sequence, list_sequences, read_calibration
from preprocess.sources.kitti360.source import lidar_record
from preprocess.sources.kitti360.static_ply import check_static_ply, list_windows, static_dir
from preprocess.synthetic import generate_synthetic_kitti360
from preprocess.synthetic.scene import METRES_PER_FRAME, Street
from preprocess.synthetic.static_cloud import AHEAD, BEHIND, arc_length, street_cloud, window_ranges
from shards import ShardStore, UnitWriter
from shards import writer as shard_writer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support ships outside the package
from tests.support.reference_depth import reference_depth  # noqa: E402


def cpu_seconds() -> float:
    """User+system CPU of this process and its finished children (not forkserver workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(r.ru_utime + r.ru_stime for r in usage)


def measured(run, *args, repeat: int = 1) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, frames) of the median of `repeat` runs of run(*args), which
    returns frames."""
    runs = []
    for _ in range(repeat):
        cpu, start = cpu_seconds(), time.perf_counter()
        frames = run(*args)
        runs.append((time.perf_counter() - start, cpu_seconds() - cpu, frames))
    return sorted(runs)[len(runs) // 2]


def io_floor(root: Path) -> int:
    """Read+decode every image, semantic map and sweep once; returns frames seen."""
    frames = 0
    for name in list_sequences(root):
        seq = Sequence(root, name, read_calibration(root))
        for frame in seq.frames:
            cv2.imread(str(seq.image_path(frame)), cv2.IMREAD_COLOR)
            if seq.semantic_path(frame).is_file():
                cv2.imread(str(seq.semantic_path(frame)), cv2.IMREAD_UNCHANGED)
            np.fromfile(seq.sweep_path(frame), dtype=np.float32)
            frames += 1
    return frames


def numpy_reference(root: Path, out: Path, config: Kitti360Config) -> int:
    """The naive pipeline: every frame recomputed from raw files, same outputs written."""
    written = 0
    calib = read_calibration(root)
    size = target_size(config.width, calib.size)
    K = resized_intrinsics(calib.K, calib.size, size)
    dataset = Kitti360Source.dataset
    for name in list_sequences(root):
        seq = Sequence(root, name, calib)
        centres = sorted(set(seq.frames) & set(seq.world_from_rect))
        writer = UnitWriter(out, dataset, name, "reference", size.height, size.width, len(centres))
        for centre in centres:
            depth = reference_depth(seq, centre, K, size, config.depth)
            semantic = seq.read_semantic(centre)
            semantic = None if semantic is None else resize_labels(semantic, size)
            record = lidar_record(
                centre, "train", resize_image(seq.read_image(centre), size), depth, semantic, 9, K,
                np.linalg.inv(seq.world_from_rect[centre]), config.building_labels,
            )  # fmt: skip
            arrays, columns = record.stored()
            writer.add(arrays, {"dataset": dataset, "sequence": name, **columns})
            written += 1
        writer.commit("reference")
    return written


def fresh_build(root: Path, out: Path, config: Kitti360Config, workers: int) -> int:
    shutil.rmtree(out, ignore_errors=True)
    return build(Kitti360Source(root, config), out, workers=workers, progress=False)["frames_written"]


@contextmanager
def chunks_without_checksums() -> Iterator[None]:
    """Shards written as before the crc32c codec (only to price it): same codecs, no checksum."""
    original = shard_writer._compressors
    shard_writer._compressors = lambda size: tuple(
        c for c in original(size) if not isinstance(c, Crc32cCodec)
    )
    try:
        yield
    finally:
        shard_writer._compressors = original


def read_every_frame(out: Path) -> int:
    store = ShardStore(out)
    for dataset, sequence, frame in store.index[["dataset", "sequence", "frame"]].itertuples(index=False):
        store.read(sequence, frame, dataset=dataset)
    return len(store.index)


def checksum_cost(root: Path, work: Path, config: Kitti360Config, repeat: int) -> None:
    """Build and read with and without the per-chunk crc32c, alternating, in this process."""
    rows = {}
    for label, checksums in (("with crc32c", True), ("without crc32c", False)):
        out = work / f"crc_{checksums}"
        with chunks_without_checksums() if not checksums else nullcontext():
            rows[f"build, 1 worker, {label}"] = measured(fresh_build, root, out, config, 1, repeat=repeat)
        rows[f"read every frame, {label}"] = measured(read_every_frame, out, repeat=repeat)
    print(f"{'pipeline':36s} {'frames':>7s} {'seconds':>8s} {'frames/s':>9s} {'CPU s':>7s}")
    for label, (seconds, cpu, n) in rows.items():
        print(f"{label:36s} {n:7d} {seconds:8.2f} {n / seconds:9.1f} {cpu:7.2f}")
    for what in ("build, 1 worker", "read every frame"):
        (wall_on, cpu_on, _), (wall_off, cpu_off, _) = (
            rows[f"{what}, with crc32c"],
            rows[f"{what}, without crc32c"],
        )
        print(f"{what}: time with/without crc32c {wall_on / wall_off:.3f}x, CPU {cpu_on / cpu_off:.3f}x")


CONFINED_BUILD = """
import json, sys, time
from pathlib import Path
from preprocess.sources.kitti360 import Kitti360Config
import preprocess.worker_warmup  # kernels loaded before the clock starts, as build workers have them
sys.path.insert(0, sys.argv[1])
from bench_build import cpu_seconds, fresh_build
config = Kitti360Config(chunk_frames=int(sys.argv[4]))
cpu, start = cpu_seconds(), time.perf_counter()
frames = fresh_build(Path(sys.argv[2]), Path(sys.argv[3]), config, int(sys.argv[5]))
print(json.dumps([time.perf_counter() - start, cpu_seconds() - cpu, frames]))
"""

# Time until every build worker can take work: the forkserver imports and warms the build
# code, then forks the workers. Paid once per multi-worker build.
CONFINED_WORKER_STARTUP = """
import json, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from preprocess.driver import worker_context
workers = int(sys.argv[1])
start = time.perf_counter()
with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:
    [f.result() for f in [pool.submit(os.getpid) for _ in range(workers)]]
    print(json.dumps(time.perf_counter() - start))
"""


def confined(script: str, args: list[str], cores: int):
    """JSON printed last by `script`, run in a fresh process confined to `cores` cores from
    birth, so every thread it and its workers start stays on those cores (affinity is per
    thread)."""
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        preexec_fn=lambda: os.sched_setaffinity(0, allowed),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def confined_build(root: Path, out: Path, config: Kitti360Config, workers: int) -> tuple[float, float, int]:
    """(wall, CPU, frames) of a build with `workers` workers confined to as many cores."""
    args = [str(Path(__file__).parent), str(root), str(out), str(config.chunk_frames), str(workers)]
    return tuple(confined(CONFINED_BUILD, args, workers))


PROBE_SPACING = 0.5  # metres: a cheap sampling whose point count scales to any spacing

# one worker building in a fresh process: (seconds, peak resident GiB, frames, the seconds
# spent preparing static windows, rendering them (patches and discs), and checking labels
# and merging with LiDAR (wall time on the build's one core, which its read-ahead and writer
# threads share), then the build's user and system CPU seconds)
MEMORY_BUILD = """
import json, resource, sys, time
from pathlib import Path
from preprocess.sources.kitti360 import Kitti360Config, source, static_depth
import preprocess.worker_warmup
sys.path.insert(0, sys.argv[1])
from bench_build import fresh_build
spent = {"prepare": 0.0, "render": 0.0, "merge": 0.0}
def timed(step, function):
    def run(*args):
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            spent[step] += time.perf_counter() - start
    return run
static_depth.prepare_window = timed("prepare", static_depth.prepare_window)
source.render_clouds = timed("render", source.render_clouds)
source.check_labels = timed("merge", source.check_labels)
source.merge_depth = timed("merge", source.merge_depth)
config = Kitti360Config(chunk_frames=int(sys.argv[4]), static_clouds=sys.argv[5] == "1")
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
frames = fresh_build(Path(sys.argv[2]), Path(sys.argv[3]), config, 1)
seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
cpu = [after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime]
print(json.dumps([seconds, after.ru_maxrss / 2**20, frames, *spent.values(), *cpu]))
"""


def spacing_for(frames: int, points: int, seed: int = 0) -> float:
    """Sample spacing that gives the smallest static window of a `frames`-frame synthetic
    sequence at least `points` points (counts scale with 1 / spacing^2)."""
    street = Street(frames, np.random.default_rng(seed))
    cloud = street_cloud(street, PROBE_SPACING, np.random.default_rng(seed))
    along = arc_length(street, np.column_stack([cloud["x"], cloud["y"]]).astype(np.float64))
    smallest = min(
        int(((along >= a * METRES_PER_FRAME - BEHIND) & (along <= b * METRES_PER_FRAME + AHEAD)).sum())
        for a, b in window_ranges(frames)
    )
    return 0.97 * PROBE_SPACING * float(np.sqrt(smallest / points))


def cloud_rows(work: Path, frames: int, points: int, chunk_frames: int, repeat: int) -> None:
    """LiDAR-only against LiDAR + static clouds on one sequence, one worker each; `repeat`
    pairs of runs, the pair with the median ratio reported."""
    root = work / "clouds" / "KITTI-360"
    if not root.is_dir():
        spacing = spacing_for(frames, points)
        generate_synthetic_kitti360(
            work / "clouds", frames=frames, seed=0, sequences=1, static_spacing=spacing
        )
    windows = list_windows(static_dir(root, list_sequences(root)[0]))
    sizes = [check_static_ply(window.path)[1] for window in windows]
    args = [str(Path(__file__).parent), str(root)]

    def build_pair() -> dict:
        """A LiDAR-only and a clouds build, each in a fresh process on one core."""
        return {
            clouds: confined(
                MEMORY_BUILD, [*args, str(work / f"clouds_{clouds}"), str(chunk_frames), clouds], 1
            )
            for clouds in ("0", "1")
        }

    pairs = [build_pair() for _ in range(repeat)]
    ratios = [(pair["1"][2] / pair["1"][0]) / (pair["0"][2] / pair["0"][0]) for pair in pairs]
    runs = pairs[int(np.argsort(ratios)[len(ratios) // 2])]
    spans = [w.end - w.start + 1 for w in windows]
    print(f"\nstatic clouds: 1 sequence x {frames} frames, {len(windows)} windows of "
          f"{min(sizes) / 1e6:.1f}-{max(sizes) / 1e6:.1f} M points over {min(spans)}-{max(spans)} frames, "
          "1 worker on 1 core")  # fmt: skip
    print(f"{'pipeline':32s} {'frames':>7s} {'seconds':>8s} {'frames/s':>9s} {'peak GiB':>9s}")
    for clouds, label in (("0", "LiDAR only"), ("1", "LiDAR + static clouds")):
        seconds, peak, n = runs[clouds][:3]
        print(f"{label:32s} {n:7d} {seconds:8.2f} {n / seconds:9.2f} {peak:9.2f}")
    (t0, _, n0, *_, user0, sys0), (t1, _, n1, prep, render, merge, user1, sys1) = runs["0"], runs["1"]
    lidar_fps = n0 / t0
    print(
        f"frames/s with clouds / LiDAR only: {(n1 / t1) / lidar_fps:.2f} "
        f"(median of {repeat} pairs of runs: {' '.join(f'{r:.2f}' for r in sorted(ratios))})"
    )
    print(f"peak memory with clouds / LiDAR only: {runs['1'][1] / runs['0'][1]:.2f}x")
    per_window = prep / len(windows)
    print(
        "window preparation (read, grids, planes and patches, levels of detail): "
        f"{per_window:.1f} s per window, once per worker"
    )
    print(
        f"time with clouds: preparing windows {prep:.1f} s, rendering them (patches and discs) "
        f"{render:.1f} s, labels and merge {merge:.1f} s, the rest {t1 - prep - render - merge:.1f} s"
    )
    per_frame = (t1 - prep) / n1  # the clouds build without its window preparation
    print(
        f"without the preparation: {1 / per_frame:.2f} frames/s, "
        f"{1 / per_frame / lidar_fps:.2f} of LiDAR only"
    )
    print(
        f"CPU time, user + system: LiDAR only {user0:.1f} + {sys0:.1f} s, with clouds {user1:.1f} + "
        f"{sys1:.1f} s (system: mostly the kernel zeroing the fresh pages the prepared windows take)"
    )


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--frames", type=int, default=60, help="frames per synthetic sequence (2 sequences)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--chunk-frames", type=int, default=128, help="frames per unit (one work item)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per pipeline (median reported)")
    parser.add_argument("--checksum-cost", action="store_true", help="only price the per-chunk crc32c")
    parser.add_argument(
        "--cloud-points", type=int, default=15_000_000, help="points per static window (0: skip)"
    )
    parser.add_argument("--cloud-frames", type=int, default=470, help="frames of the static-cloud sequence")
    parser.add_argument("--only-clouds", action="store_true", help="run the static-cloud rows only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_build_"))
    if args.cloud_points and not args.checksum_cost:
        cloud_rows(work, args.cloud_frames, args.cloud_points, args.chunk_frames, args.repeat)
    if args.only_clouds:
        return
    root = work / "synthetic" / "KITTI-360"
    if not root.is_dir():  # a kept --workdir is reused (same frames: pass the same --frames)
        generate_synthetic_kitti360(
            work / "synthetic", frames=args.frames, seed=0, sequences=2, static_spacing=None
        )
    config = Kitti360Config(chunk_frames=args.chunk_frames)  # --accumulate 4, width 518
    fresh_build(root, work / "warmup", config, workers=1)  # JIT cache + page cache warm
    if args.checksum_cost:
        checksum_cost(root, work, config, args.repeat)
        return

    rows = [
        ("build, 1 worker", *measured(fresh_build, root, work / "w1", config, 1, repeat=args.repeat)),
        ("build, 2 workers", *measured(fresh_build, root, work / "w2", config, 2, repeat=args.repeat)),
        ("NumPy per-frame reference", *measured(numpy_reference, root, work / "ref", config)),
        ("I/O floor (read+decode once)", *measured(io_floor, root, repeat=args.repeat)),
    ]
    if hasattr(os, "sched_setaffinity") and os.cpu_count() >= 2:
        for label, workers in (("build, 1 worker on 1 core", 1), ("build, 2 workers on 2 cores", 2)):
            runs = [
                confined_build(root, work / f"cores{workers}", config, workers) for _ in range(args.repeat)
            ]
            rows.append((label, *sorted(runs)[len(runs) // 2]))
        startups = sorted(confined(CONFINED_WORKER_STARTUP, ["2"], 2) for _ in range(args.repeat))
        startup = startups[len(startups) // 2]
    print(f"\nsynthetic KITTI-360, 2 sequences x {args.frames} frames, --accumulate 4, width 518, "
          f"{os.cpu_count()} CPU cores")  # fmt: skip
    print(f"{'pipeline':32s} {'frames':>7s} {'seconds':>8s} {'frames/s':>9s} {'CPU s':>7s}")
    # multi-worker builds fork their workers from a forkserver: not our children, CPU not seen
    for label, seconds, cpu, n in rows:
        cpu_text = "-" if "workers" in label else f"{cpu:.2f}"
        print(f"{label:32s} {n:7d} {seconds:8.2f} {n / seconds:9.1f} {cpu_text:>7s}")
    fps1, fps2, ref, floor, *per_core = (n / seconds for _, seconds, _, n in rows)
    print(f"\nspeed-up vs NumPy reference (1 worker): {fps1 / ref:.1f}x")
    print(f"1 worker time / I/O-floor time (per frame): {floor / fps1:.2f}x")
    print(f"scaling 1 -> 2 workers: {fps2 / fps1:.2f}x")
    if per_core:
        print(
            f"scaling per core, 1 worker on 1 core -> 2 workers on 2 cores: {per_core[1] / per_core[0]:.2f}x"
        )
        _, two_cores, _, n2 = rows[5]
        print(
            f"  the 2-worker build includes {startup:.2f} s of one-time worker start-up; without it: "
            f"{n2 / (two_cores - startup) / per_core[0]:.2f}x"
        )


if __name__ == "__main__":
    main()
