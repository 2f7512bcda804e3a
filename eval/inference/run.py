"""`vggt-infer` end to end: check the inputs, load the base (+ adapter), reconstruct each scene,
write its outputs, and publish OUT only when everything is written.

OUT is filled under a temporary name beside it and renamed at the end, so an interrupted run
leaves no OUT that could pass for a finished one. An existing OUT is replaced only with
`force`, and only if it is a former `vggt-infer` output (or empty).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from shards import TMP_MARK, ShardStore
from shards.atomic import fresh_staging_dir, publish_dir

from ..base_model import resolve_base
from ..checkpoints import newest_adapter
from ..predict import Predictor
from .grid import RESIZE_MODES
from .inputs import InputError, InputFrame, folder_frames, shard_frames, shard_sequences
from .outputs import SCALE_CONVENTION, write_scene
from .reconstruct import grid_mappings, reconstruct
from .windows import default_stride, plan_windows

log = logging.getLogger(__name__)
TOOL = "vggt-infer"
META_FILE = "meta.json"


@dataclass(frozen=True, kw_only=True)
class InferSettings:
    checkpoint: Path | None  # run dir, adapter dir, or None for the base model alone
    out: Path
    images: Path | None = None
    shards: Path | None = None
    split: str = "val"
    sequences: list[str] = field(default_factory=list)
    weights: str | None = None  # None: the run's model.weights
    model_size: str | None = None  # None: the run's model.size
    seed: int | None = None  # None: the run's run.seed
    seq_len: int = 8
    stride: int | None = None  # None: default_stride(seq_len)
    conf_threshold: float = 0.5  # quantile of confidence below which points leave the cloud
    resize: str = "crop"
    intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy: known, not predicted
    colmap_points: int = 50_000
    device: str = "auto"
    bf16: bool = False
    force: bool = False


@dataclass
class Scene:
    """One reconstruction: its output subfolder, frames, and where they came from."""

    subdir: str
    frames: list[InputFrame]
    source: dict
    write_images: bool  # shard frames have no image files for the COLMAP model to point at


def _check_settings(s: InferSettings) -> None:
    if (s.images is None) == (s.shards is None):
        raise InputError("give exactly one input: --images DIR or --shards ROOT")
    if not 0.0 <= s.conf_threshold < 1.0:
        raise InputError(f"--conf-threshold is a quantile in [0, 1), got {s.conf_threshold}")
    if s.resize not in RESIZE_MODES:
        raise InputError(f"--resize must be one of {RESIZE_MODES}, got {s.resize!r}")
    if s.intrinsics is not None and (len(s.intrinsics) != 4 or min(s.intrinsics[:2]) <= 0):
        raise InputError(
            f"--intrinsics takes fx,fy,cx,cy in pixels with positive focal lengths, got {s.intrinsics}"
        )
    if s.colmap_points < 0:
        raise InputError(f"--colmap-points must be >= 0, got {s.colmap_points}")


def _check_out(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if not force:
        raise InputError(f"output {out} already exists; pass --force to replace it")
    if not any(out.iterdir()):
        return
    try:
        ours = json.loads((out / META_FILE).read_text()).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise InputError(f"refusing to replace {out}: it is not a {TOOL} output (no {META_FILE} of ours)")


def _scenes(s: InferSettings) -> list[Scene]:
    if s.images is not None:
        source = {"images": str(Path(s.images).resolve())}
        return [Scene("", folder_frames(s.images), source, write_images=False)]
    try:
        store = ShardStore(s.shards)
        pairs = shard_sequences(store, s.split, s.sequences)
    except (FileNotFoundError, KeyError) as exc:
        raise InputError(f"shard root {s.shards}: {exc}") from None
    return [
        Scene(
            f"{dataset}/{sequence}",
            shard_frames(store, dataset, sequence, s.split),
            {"shards": str(s.shards), "split": s.split, "dataset": dataset, "sequence": sequence},
            write_images=True,
        )
        for dataset, sequence in pairs
    ]


def _write_images(folder: Path, frames: list[InputFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        path = folder / frame.image_name
        if not cv2.imwrite(str(path), cv2.cvtColor(frame.read(), cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


def run_inference(s: InferSettings) -> list[Path]:
    """Write every scene's outputs under `s.out`; returns the point clouds written."""
    _check_settings(s)
    out = Path(s.out)
    _check_out(out, s.force)
    stride = s.stride or default_stride(s.seq_len)
    scenes = _scenes(s)
    for scene in scenes:  # refuse bad input before the model is loaded
        grid_mappings(scene.frames, s.resize)
        plan_windows(len(scene.frames), s.seq_len, stride)
        sizes = {f.size_hw for f in scene.frames}
        if s.intrinsics is not None and len(sizes) > 1:
            raise InputError(
                f"--intrinsics describe one image size; the input has {len(sizes)}: {sorted(sizes)}"
            )
    adapter = None if s.checkpoint is None else newest_adapter(s.checkpoint)
    base = resolve_base([adapter] if adapter else [], s.model_size, s.weights, s.seed)
    start = time.perf_counter()
    predictor = Predictor(base.size, base.weights, s.device, s.bf16, base.seed)
    predictor.use_adapter(adapter)
    load_s = time.perf_counter() - start
    model = {
        **base._asdict(),
        "adapter": str(adapter) if adapter else None,
        "device": str(predictor.device),
        "bf16": s.bf16 and predictor.device.type == "cuda",
    }
    for debris in out.parent.glob(f"{out.name}{TMP_MARK}*"):  # left by a killed run
        shutil.rmtree(debris, ignore_errors=True)
    stage = fresh_staging_dir(out)
    try:
        clouds = []
        for scene in scenes:
            folder = stage / scene.subdir
            folder.mkdir(parents=True, exist_ok=True)
            meta = _run_scene(predictor, scene, folder, s, stride)
            meta.update(model=model, timing={**meta["timing"], "model_load_s": load_s})
            (folder / META_FILE).write_text(json.dumps(meta, indent=1))
            clouds.append(out / scene.subdir / "points.ply")
            log.info("%s: %d frames -> %s", scene.subdir or s.images, len(scene.frames), out / scene.subdir)
        if s.shards is not None:  # shard input: a top-level marker listing the scenes
            top = {"tool": TOOL, "model": model, "scenes": [sc.subdir for sc in scenes]}
            (stage / META_FILE).write_text(json.dumps(top, indent=1))
        publish_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return clouds


def _run_scene(predictor: Predictor, scene: Scene, folder: Path, s: InferSettings, stride: int) -> dict:
    start = time.perf_counter()
    known = None
    if s.intrinsics is not None:
        fx, fy, cx, cy = s.intrinsics
        known = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    recon = reconstruct(predictor, scene.frames, s.seq_len, stride, s.resize, known)
    infer_end = time.perf_counter()
    written = write_scene(folder, scene.frames, recon, s.conf_threshold, s.colmap_points)
    if scene.write_images:
        _write_images(folder / "images", scene.frames)
    end = time.perf_counter()
    return {
        "tool": TOOL,
        "input": scene.source,
        "resize": s.resize,
        "intrinsics": "predicted" if known is None else "given (--intrinsics)",
        "model_input_hw": list(recon.frames[0].mapping.transform.out_hw),
        "scale": SCALE_CONVENTION,
        "windows": {
            "seq_len": s.seq_len,
            "stride": stride,
            "rule": "each frame is taken from the window where it sits most centrally; window k is "
            "brought into window 0's world by a Sim(3) fitted on the frames it shares with window k-1",
            "list": recon.windows,
        },
        **written,
        "timing": {
            "frames": len(scene.frames),
            "model_frames": recon.model_frames,
            "inference_s": recon.inference_s,
            "model_frames_per_s": recon.model_frames / max(recon.inference_s, 1e-9),
            "reconstruct_s": infer_end - start,
            "write_s": end - infer_end,
            "scene_s": end - start,
            "frames_per_s": len(scene.frames) / max(end - start, 1e-9),
            "peak_gpu_mem_gb": None if math.isnan(peak := predictor.peak_memory_gb()) else peak,
        },
    }
