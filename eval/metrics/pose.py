"""Camera pose metrics of one window from cam_from_world 4x4 matrices.

ATE and RPE need the prediction in GT's frame and scale (Sim(3) Umeyama on camera centres);
pairwise RRA/RTA/AUC compare relative poses by angles and need no alignment.
"""

from __future__ import annotations

import numpy as np

from eval.align import umeyama
from eval.metrics.result import MetricResult
from shards.windows import camera_centres

POSE_ALIGN = "sim3_umeyama_centres"
PAIR_THRESHOLDS_DEG: tuple[int, ...] = (5, 15, 30)


def _angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between vectors [...,3]; atan2 form stays exact near 0 and 180 deg."""
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1)))


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) of rotations [...,3,3], via atan2(|axis*sin|, cos) for precision."""
    skew = R - np.swapaxes(R, -1, -2)
    axis_sin = np.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], -1)
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arctan2(np.linalg.norm(axis_sin, axis=-1) / 2.0, cos))


def pairwise_errors(
    pred_cfw: np.ndarray, gt_cfw: np.ndarray, min_baseline: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors (degrees) of the relative pose of every pair i<j.

    The relative pose is cam_i_from_cam_j. The direction error is sign-free, min(a, 180 - a),
    as in PoseDiffusion/VGGT evaluation. Pairs whose GT baseline is below ``min_baseline`` have
    no direction and get NaN translation error.
    """
    i, j = np.triu_indices(len(gt_cfw), k=1)

    def relative(cfw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R, t = cfw[:, :3, :3].astype(np.float64), cfw[:, :3, 3].astype(np.float64)
        R_ij = R[i] @ np.swapaxes(R[j], -1, -2)
        return R_ij, t[i] - np.einsum("nab,nb->na", R_ij, t[j])

    R_gt, t_gt = relative(gt_cfw)
    R_pr, t_pr = relative(pred_cfw)
    rot_err = rotation_angle_deg(np.swapaxes(R_gt, -1, -2) @ R_pr)
    ang = _angle_between(t_gt, t_pr)
    trans_err = np.minimum(ang, 180.0 - ang)
    trans_err[np.linalg.norm(t_gt, axis=-1) < min_baseline] = np.nan
    return rot_err, trans_err


def pose_auc(max_err_deg: np.ndarray, max_threshold: int = 30) -> float:
    """Mean accuracy over integer thresholds 1..max_threshold deg (fraction of pairs with error < k).

    Same quantity as the cumulative 1-degree histogram AUC of PoseDiffusion/VGGT, in [0, 1].
    """
    thresholds = np.arange(1, max_threshold + 1)
    return float((max_err_deg[:, None] < thresholds).mean()) if max_err_deg.size else float("nan")


def pose_metrics(
    pred_cfw: np.ndarray,
    gt_cfw: np.ndarray,
    thresholds_deg: tuple[int, ...] = PAIR_THRESHOLDS_DEG,
    auc_max_deg: int = 30,
    min_baseline: float = 1e-6,
) -> MetricResult:
    """ATE, RPE, RRA/RTA and AUC of one window; inputs are cam_from_world [S,4,4], S >= 2.

    ATE: RMSE (m) of camera centres after Sim(3) Umeyama of predicted onto GT centres.
    RPE: RMSE of translation (m) and rotation (deg) errors of consecutive-frame motions, with the
    prediction in the aligned frame and scale. RRA/RTA@k, AUC@max in percent over all pairs;
    pairs without a GT baseline are left out of RTA and AUC (``n_pairs`` counts the rest).
    """
    pred_cfw = np.asarray(pred_cfw, dtype=np.float64)
    gt_cfw = np.asarray(gt_cfw, dtype=np.float64)
    c_pred, c_gt = camera_centres(pred_cfw), camera_centres(gt_cfw)
    sim = umeyama(c_pred, c_gt, with_scale=True)
    c_al = sim.apply(c_pred)
    ate = float(np.sqrt(((c_al - c_gt) ** 2).sum(-1).mean()))

    # world_from_cam rotations; consecutive motion cam_k_from_cam_{k+1} = inv(P_k) P_{k+1}.
    Rw_pred = sim.R @ np.swapaxes(pred_cfw[:, :3, :3], -1, -2)
    Rw_gt = np.swapaxes(gt_cfw[:, :3, :3], -1, -2)

    def motion(Rw: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Rk_T = np.swapaxes(Rw[:-1], -1, -2)
        return Rk_T @ Rw[1:], np.einsum("nab,nb->na", Rk_T, c[1:] - c[:-1])

    (Rm_pred, tm_pred), (Rm_gt, tm_gt) = motion(Rw_pred, c_al), motion(Rw_gt, c_gt)
    rpe_t = np.linalg.norm(tm_pred - tm_gt, axis=-1)
    rpe_r = rotation_angle_deg(np.swapaxes(Rm_gt, -1, -2) @ Rm_pred)

    rot_err, trans_err = pairwise_errors(pred_cfw, gt_cfw, min_baseline)
    has_dir = np.isfinite(trans_err)
    values: dict[str, float] = {
        "ate_rmse": ate,
        "rpe_trans_rmse": float(np.sqrt((rpe_t**2).mean())),
        "rpe_rot_rmse": float(np.sqrt((rpe_r**2).mean())),
    }
    for k in thresholds_deg:
        values[f"rra_{k}"] = float((rot_err < k).mean() * 100.0)
        values[f"rta_{k}"] = float((trans_err[has_dir] < k).mean() * 100.0) if has_dir.any() else float("nan")
    max_err = np.maximum(rot_err, trans_err)[has_dir]
    values[f"auc_{auc_max_deg}"] = pose_auc(max_err, auc_max_deg) * 100.0
    values["count"] = len(gt_cfw)
    values["n_pairs"] = int(has_dir.sum())
    return MetricResult({"pose": values}, sim.record(POSE_ALIGN))
