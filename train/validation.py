"""Validation during training: loss and depth AbsRel on a fixed set of val windows, which
checkpoint is best and when to stop early, and depth pictures for TensorBoard."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import LossConfig
from .losses import batch_loss
from .modeling import gt_pose_encoding

METRICS = ("val/abs_rel", "val/loss")  # lower is better for both


def median_scaled(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction times the median of gt/pred over the window's valid pixels (predicted depth
    has no metric scale), and the pixels where both are positive and finite."""
    ok = valid & torch.isfinite(pred) & (pred > 0) & (gt > 0)
    if not ok.any():
        return pred, ok
    return pred * torch.median(gt[ok] / pred[ok]), ok


def abs_rel(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> float | None:
    """Mean |pred - gt| / gt of one window after median scaling; None without valid pixels."""
    scaled, ok = median_scaled(pred.double(), gt.double(), valid)
    if not ok.any():
        return None
    return float(((scaled[ok] - gt[ok]).abs() / gt[ok]).mean())


def depth_pictures(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse depth of prediction (median-scaled) and GT on one grey scale, [S, 1, H, W] in
    [0, 1]; pixels without GT are black in the GT picture."""
    scaled, ok = median_scaled(pred.float(), gt.float(), valid)
    inv_pred, inv_gt = 1.0 / scaled.clamp(min=1e-6), 1.0 / gt.clamp(min=1e-6)
    top = float(inv_gt[ok].quantile(0.98)) if ok.any() else float(inv_pred.max())
    pictures = [(inv / max(top, 1e-6)).clamp(0, 1) for inv in (inv_pred, torch.where(ok, inv_gt, 0.0))]
    return pictures[0][:, None], pictures[1][:, None]


class Validator:
    """Runs the model over the same val windows every time (eval mode, no gradients)."""

    def __init__(
        self, windows: list[dict[str, torch.Tensor]], loss: LossConfig, heads: tuple[str, ...], device
    ) -> None:
        self.windows, self.loss, self.device = windows, loss, device
        self.heads = tuple(sorted({*heads, "depth"}))  # depth for AbsRel even when it carries no loss

    def _forward(self, model: torch.nn.Module, window: dict[str, torch.Tensor]):
        batch = {k: v.to(self.device) for k, v in window.items()}
        return batch, model(batch["images"], heads=self.heads)

    @torch.no_grad()
    def run(self, model: torch.nn.Module) -> dict[str, float]:
        training = model.training
        model.eval()
        losses, rels = [], []
        for window in self.windows:
            batch, out = self._forward(model, window)
            gt_pose = gt_pose_encoding(
                batch["cam_from_world"], batch["intrinsics"], batch["images"].shape[-2:]
            )
            loss, _ = batch_loss(out, batch, gt_pose, self.loss, progress=1.0)
            if loss is not None:
                losses.append(float(loss))
            rel = abs_rel(out["depth"][0, ..., 0], batch["depth"][0], batch["valid_mask"][0])
            if rel is not None:
                rels.append(rel)
        model.train(training)
        return {
            "val/loss": float(np.mean(losses)) if losses else math.nan,
            "val/abs_rel": float(np.mean(rels)) if rels else math.nan,
            "val/windows": len(self.windows),
        }

    @torch.no_grad()
    def pictures(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted and GT depth pictures of the first val window."""
        training = model.training
        model.eval()
        batch, out = self._forward(model, self.windows[0])
        model.train(training)
        return depth_pictures(
            out["depth"][0, ..., 0].cpu(), batch["depth"][0].cpu(), batch["valid_mask"][0].cpu()
        )


@dataclass
class BestTracker:
    """Lowest validation value so far and validations since (for early stopping), and the
    lowest one among checkpointed steps (what `checkpoints/best` names)."""

    metric: str
    patience: int  # validations without a new lowest value before stopping; 0 = never stop early
    best: float | None = None
    since_best: int = 0
    best_checkpoint_value: float | None = None
    best_checkpoint_step: int | None = None

    def update(self, value: float) -> None:
        """Record a validation (NaN never counts as better)."""
        if _lower(value, self.best):
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1

    def checkpointed(self, value: float, step: int) -> bool:
        """A checkpoint was saved with this validation value; True when it is the best one."""
        if _lower(value, self.best_checkpoint_value):
            self.best_checkpoint_value, self.best_checkpoint_step = value, step
            return True
        return False

    @property
    def exhausted(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def state(self) -> dict:
        keys = ("best", "since_best", "best_checkpoint_value", "best_checkpoint_step")
        return {k: getattr(self, k) for k in keys}

    def restore(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def _lower(value: float, than: float | None) -> bool:
    return math.isfinite(value) and (than is None or value < than)
