"""Run VGGT (baseline or with one peft adapter) on a window of stored frames.

The base model is built exactly as the trainer builds it (`train.model.build_base_model`),
so an adapter always meets the base weights it was trained on. Without pretrained weights
the base is a random init fixed by `seed`: adapters trained on such a base are only
meaningful when evaluated with the trainer's `run.seed`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from peft import PeftModel
from safetensors import SafetensorError
from safetensors.torch import load_file

from train.model import as_model_input, build_base_model, decode_pose, load_adapter
from train.run_dir import ADAPTER_CONFIG, ADAPTER_WEIGHTS

from .adapter_fit import check_adapter_fits
from .window_metrics import Prediction


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_adapter(path: Path) -> dict[str, tuple[int, ...]]:
    """Fail early, naming the file, on a missing or unreadable adapter (peft's own errors do not);
    returns the shape of each saved tensor."""
    config, weights = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    for file in (config, weights):
        if not file.is_file():
            raise ValueError(f"adapter file {file} is missing")
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"adapter file {config} is not valid JSON: {exc}") from None
    try:
        return {key: tuple(tensor.shape) for key, tensor in load_file(str(weights)).items()}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"adapter file {weights} is broken: {exc}") from None


class Predictor:
    """One base model on one device; adapters are swapped in and out without touching it."""

    def __init__(self, model_size: str, weights: str | None, device: str, bf16: bool, seed: int = 0) -> None:
        self.device = resolve_device(device)
        use_bf16 = bf16 and self.device.type == "cuda"
        base = build_base_model(size=model_size, weights=weights, seed=seed, bf16=use_bf16)
        self.model: torch.nn.Module = base.to(self.device).eval()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def use_adapter(self, path: Path | None) -> None:
        """Switch to `path`'s adapter (None = baseline); the previous adapter is removed first."""
        if isinstance(self.model, PeftModel):
            self.model = self.model.unload()
        if path is None:
            return
        check_adapter_fits(self.model, check_adapter(Path(path)), str(path))
        try:
            self.model = load_adapter(self.model, path, trainable=False).to(self.device).eval()
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ValueError(f"adapter {path} does not fit the base model: {exc}") from None

    @torch.inference_mode()
    def outputs(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Float frames [S,3,H,W] in [0,1] (H, W multiples of 14) -> the model's outputs of the
        one window, float32 on the CPU: pose_enc [S,9], depth [S,H,W,1], depth_conf [S,H,W],
        world_points [S,H,W,3], world_points_conf [S,H,W]."""
        out = self.model(frames.to(self.device))
        names = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
        return {k: out[k][0].float().cpu() for k in names if k in out}

    def predict(self, images) -> Prediction:
        """uint8 frames [S,H,W,3] (H, W multiples of 14) -> depth, cameras (intrinsics at this
        resolution) and world points."""
        frames = as_model_input(torch.as_tensor(images))
        out = self.outputs(frames)
        cam_from_world, intrinsics = decode_pose(out["pose_enc"], tuple(frames.shape[-2:]))
        return Prediction(
            depth=out["depth"][..., 0].numpy(),
            cam_from_world=cam_from_world.numpy(),
            intrinsics=intrinsics.numpy(),
            world_points=out["world_points"].numpy(),
        )

    def peak_memory_gb(self) -> float:
        if self.device.type != "cuda":
            return math.nan
        return torch.cuda.max_memory_allocated(self.device) / 1024**3
