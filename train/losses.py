"""Losses of the VGGT fine-tuning recipe, with per-pixel semantic weights.

Camera: L1 on the 9-d pose encoding (translation, quaternion, FoV weighted 1, 1, 0.5),
over the 4 refinement stages weighted 0.6^(3-i). Depth / points: confidence-weighted
|pred - gt| - alpha * log(conf) plus an L1 gradient term over 4 scales.
"""

from __future__ import annotations

import torch

from .config import LossConfig

STAGE_GAMMA = 0.6
CONF_ALPHA = 0.2
GRADIENT_SCALES = 4


def camera_loss(pose_enc_list: list[torch.Tensor], gt_pose_enc: torch.Tensor) -> torch.Tensor:
    """Weighted L1 over refinement stages; translation error clamped at 100 like the reference."""
    n = len(pose_enc_list)
    weights = [STAGE_GAMMA ** (n - 1 - i) for i in range(n)]
    total = gt_pose_enc.new_zeros(())
    for w, pred in zip(weights, pose_enc_list, strict=True):
        diff = (pred.float() - gt_pose_enc).abs()
        loss_t = diff[..., :3].clamp(max=100).mean()
        loss_q = diff[..., 3:7].mean()
        loss_f = diff[..., 7:].mean()
        total = total + w * (loss_t + loss_q + 0.5 * loss_f)
    return total / sum(weights)


def pixel_weights(
    semantic: torch.Tensor, building: torch.Tensor, cfg: LossConfig, progress: float
) -> torch.Tensor:
    """Per-pixel weights: semantic class weights times a facade boost on building pixels that
    decays linearly from `facade_boost` to `facade_boost_floor` over `facade_boost_decay`."""
    weights = torch.ones_like(semantic, dtype=torch.float32)
    for label, w in cfg.semantic_weights.items():
        weights = torch.where(semantic == label, torch.full_like(weights, w), weights)
    t = min(1.0, progress / cfg.facade_boost_decay) if cfg.facade_boost_decay > 0 else 1.0
    boost = cfg.facade_boost + (cfg.facade_boost_floor - cfg.facade_boost) * t
    return torch.where(building, weights * boost, weights)


def supervision_mask(
    valid: torch.Tensor, gt_depth: torch.Tensor, building: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid pixels after the depth-quantile filter (and building-only option), and which
    frames keep at least `min_valid_pixels` of them. Shapes [B,S,H,W] and [B,S]."""
    mask = valid.clone()
    if cfg.filter_buildings_only:
        mask &= building
    if cfg.depth_quantile < 1.0:
        for b in range(mask.shape[0]):
            values = gt_depth[b][mask[b]]
            if values.numel():
                limit = torch.quantile(values.float(), cfg.depth_quantile)
                mask[b] &= gt_depth[b] <= limit
    frame_ok = mask.flatten(2).sum(-1) >= cfg.min_valid_pixels
    return mask & frame_ok[..., None, None], frame_ok


def _gradient_term(err: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 of the spatial gradients of the error at 4 scales, where both pixels are supervised."""
    total, terms = err.new_zeros(()), 0
    for scale in range(GRADIENT_SCALES):
        step = 2**scale
        err_s, mask_s, w_s = (t[..., ::step, ::step] for t in (err, mask, weight))
        if err_s.shape[-1] < 2 or err_s.shape[-2] < 2:
            break
        for dim in (-1, -2):
            n = err_s.shape[dim]
            diff = (err_s.narrow(dim, 1, n - 1) - err_s.narrow(dim, 0, n - 1)).abs()
            both = mask_s.narrow(dim, 1, n - 1) & mask_s.narrow(dim, 0, n - 1)
            w = w_s.narrow(dim, 0, n - 1)
            if both.any():
                total = total + (diff * w)[both].mean()
                terms += 1
    return total / max(terms, 1)


def regression_loss(
    pred: torch.Tensor,
    conf: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    gradient_weight: float,
) -> torch.Tensor:
    """conf * w * |pred - gt| - alpha * log(conf) on supervised pixels, plus gradient term.
    `pred`/`gt` are [B,S,H,W] (depth) or [B,S,H,W,3] (points, L2 norm of the difference)."""
    diff = pred.float() - gt
    err = diff.norm(dim=-1) if diff.dim() == mask.dim() + 1 else diff.abs()
    conf = conf.float()
    main = (conf * weight * err - CONF_ALPHA * torch.log(conf))[mask].mean()
    if gradient_weight <= 0:
        return main
    signed = diff if diff.dim() == mask.dim() else diff.norm(dim=-1)
    return main + gradient_weight * _gradient_term(signed, mask, weight)


def sample_loss(
    outputs: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    gt_pose_enc: torch.Tensor,
    cfg: LossConfig,
    progress: float,
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """Loss of one window; tensors keep a batch dim of 1."""
    mask, frame_ok = supervision_mask(batch["valid_mask"], batch["depth"], batch["building_mask"], cfg)
    if int(frame_ok.sum()) < cfg.min_valid_frames or not mask.any():
        return None, {}
    weight = pixel_weights(batch["semantic"], batch["building_mask"], cfg, progress)
    terms: dict[str, torch.Tensor] = {}
    if cfg.camera_weight > 0:
        terms["camera"] = cfg.camera_weight * camera_loss(outputs["pose_enc_list"], gt_pose_enc)
    if cfg.depth_weight > 0:
        terms["depth"] = cfg.depth_weight * regression_loss(
            outputs["depth"][..., 0], outputs["depth_conf"], batch["depth"], mask, weight, cfg.gradient_weight
        )
    if cfg.point_weight > 0:
        terms["point"] = cfg.point_weight * regression_loss(
            outputs["world_points"], outputs["world_points_conf"], batch["world_points"], mask, weight,
            cfg.gradient_weight,
        )  # fmt: skip
    return sum(terms.values()), terms


def batch_loss(
    outputs: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    gt_pose_enc: torch.Tensor,
    cfg: LossConfig,
    progress: float,
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """Mean of per-window losses (so DDP's gradient average equals one big batch).

    Returns None when no window carries valid supervision or the loss is not finite: the
    caller then skips the step (and counts it) instead of stepping on garbage."""
    losses, logged = [], {}
    for b in range(batch["depth"].shape[0]):
        pick = slice(b, b + 1)
        out_b = {
            k: ([p[pick] for p in v] if isinstance(v, list) else v[pick])
            for k, v in outputs.items()
            if k in ("pose_enc_list", "depth", "depth_conf", "world_points", "world_points_conf")
        }
        batch_b = {k: v[pick] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        loss, terms = sample_loss(out_b, batch_b, gt_pose_enc[pick], cfg, progress)
        if loss is None:
            continue
        losses.append(loss)
        for k, v in terms.items():
            logged[k] = logged.get(k, 0.0) + float(v.detach())
    if not losses:
        return None, {}
    loss = torch.stack(losses).mean()
    if not torch.isfinite(loss):
        return None, {"nonfinite": 1.0}
    return loss, {k: v / len(losses) for k, v in logged.items()}
