"""Run the model window by window over the input frames and gather one reconstruction in the
world of the first window (rules in eval.inference.windows)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from train.model import decode_pose

from ..predict import Predictor
from .grid import GridMapping, grid_transform, to_model_input
from .inputs import InputError, InputFrame
from .windows import IDENTITY, WindowPrediction, central_windows, chain_to, plan_windows


class PredictionError(ValueError):
    """The model's output cannot be used (e.g. a degenerate camera); the message names the frames."""


@dataclass
class FramePrediction:
    """One frame on the model grid, in the shared world: depth and confidence [H',W'], camera,
    grid intrinsics, the resized image (colours of the points) and where the grid sits."""

    depth: np.ndarray
    confidence: np.ndarray
    cam_from_world: np.ndarray
    intrinsics: np.ndarray
    colors: np.ndarray  # uint8 [H',W',3]
    mapping: GridMapping
    window: int


@dataclass
class Reconstruction:
    frames: list[FramePrediction]
    windows: list[dict] = field(default_factory=list)  # frames, scale to the world, fit residual
    model_frames: int = 0  # frames through the model (shared frames count once per window)
    inference_s: float = 0.0


def grid_mappings(frames: list[InputFrame], mode: str) -> list[GridMapping]:
    """Each frame's place on the model grid; frames of one run must share a grid size."""
    mappings = [GridMapping(grid_transform(*f.size_hw, mode), f.size_hw) for f in frames]
    grids: dict[tuple[int, int], list[str]] = {}
    for frame, mapping in zip(frames, mappings, strict=True):
        grids.setdefault(mapping.transform.out_hw, []).append(
            f"{frame.image_name} {frame.size_hw[1]}x{frame.size_hw[0]}"
        )
    if len(grids) > 1:
        groups = "; ".join(
            f"{len(names)} image(s) -> {w}x{h} (e.g. {names[0]})" for (h, w), names in grids.items()
        )
        hint = " or --resize pad (every image becomes 518x518)" if mode == "crop" else ""
        raise InputError(
            f"images of different aspect ratios map to different model input sizes: {groups}. "
            f"A window needs one size: split the folder{hint}"
        )
    return mappings


def _predict_window(
    predictor: Predictor,
    frames: list[InputFrame],
    indices: list[int],
    mode: str,
    cache: dict[int, tuple],
    known: dict[int, np.ndarray] | None,
) -> tuple[WindowPrediction, dict[int, tuple], float]:
    """Model inputs are reused for frames the previous window already decoded; `known` grid
    intrinsics, when given, replace the predicted ones."""
    inputs = {i: cache.get(i) or to_model_input(frames[i].read(), mode) for i in indices}
    batch = torch.stack([inputs[i][0] for i in indices])
    start = time.perf_counter()
    out = predictor.outputs(batch)
    seconds = time.perf_counter() - start
    cam_from_world, predicted = decode_pose(out["pose_enc"].double(), tuple(batch.shape[-2:]))
    intrinsics = predicted.numpy() if known is None else np.stack([known[i] for i in indices])
    _check_usable(out, intrinsics, [frames[i].image_name for i in indices])
    prediction = WindowPrediction(
        frames=list(indices),
        depth=out["depth"][..., 0].numpy(),
        confidence=out["depth_conf"].numpy(),
        cam_from_world=cam_from_world.numpy(),
        intrinsics=intrinsics,
    )
    return prediction, inputs, seconds


def _check_usable(out: dict[str, torch.Tensor], intrinsics: np.ndarray, names: list[str]) -> None:
    """A field of view of 0 (the FoV passes a ReLU) gives an infinite focal length: no camera."""
    focal = intrinsics[:, [0, 1], [0, 1]]
    bad_camera = [
        n for n, f in zip(names, focal, strict=True) if not (np.isfinite(f).all() and (f > 0).all())
    ]
    if bad_camera:
        raise PredictionError(
            f"the model predicted no usable camera (field of view 0 or invalid) for {', '.join(bad_camera)}: "
            "its camera head is untrained or broken; given known intrinsics, pass --intrinsics fx,fy,cx,cy"
        )
    bad_depth = [n for n, d in zip(names, out["depth"], strict=True) if not torch.isfinite(d).all()]
    if bad_depth:
        raise PredictionError(f"the model predicted non-finite depth for {', '.join(bad_depth)}")


def reconstruct(
    predictor: Predictor,
    frames: list[InputFrame],
    seq_len: int,
    stride: int,
    mode: str,
    intrinsics: np.ndarray | None = None,
) -> Reconstruction:
    """`intrinsics` (3x3, input pixels), when known, are used instead of the predicted ones."""
    mappings = grid_mappings(frames, mode)
    known = None
    if intrinsics is not None:
        as_tensor = torch.as_tensor(intrinsics, dtype=torch.float64)
        known = {i: m.transform.apply_to_intrinsics(as_tensor).numpy() for i, m in enumerate(mappings)}
    windows = plan_windows(len(frames), seq_len, stride)
    owner = central_windows(windows, len(frames))
    content = {i: m.content_mask() for i, m in enumerate(mappings)}
    result = Reconstruction(frames=[None] * len(frames))  # type: ignore[list-item]
    previous: WindowPrediction | None = None
    cache: dict[int, tuple] = {}
    for k, window in enumerate(tqdm(windows, desc="windows", unit="window", leave=False)):
        prediction, cache, seconds = _predict_window(predictor, frames, list(window), mode, cache, known)
        result.inference_s += seconds
        result.model_frames += len(window)
        sim, residual = IDENTITY, 0.0
        if previous is not None:
            sim, residual = chain_to(previous, prediction, content)
        prediction = prediction.in_world(sim)
        result.windows.append(
            {
                "frames": [frames[i].name for i in window],
                "scale_to_world": float(sim.s),
                "fit_relative_rms": residual,
            }
        )
        for row, i in enumerate(window):
            if owner[i] == k:
                colors = (cache[i][0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
                result.frames[i] = FramePrediction(
                    depth=prediction.depth[row].astype(np.float32),
                    confidence=prediction.confidence[row].astype(np.float32),
                    cam_from_world=prediction.cam_from_world[row],
                    intrinsics=prediction.intrinsics[row],
                    colors=colors,
                    mapping=mappings[i],
                    window=k,
                )
        previous = prediction
    return result
