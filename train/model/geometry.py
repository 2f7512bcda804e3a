"""Camera conventions of VGGT's pose encoding, and depth unprojection.

Cameras are OpenCV (x right, y down, z forward); extrinsics are cam_from_world; pixel (row i, col j)
sits at image coordinates (x=j, y=i). The encoding absT_quaR_FoV is
[t (3), quaternion XYZW (4), fov_h, fov_w] with the principal point assumed at the image centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def quat_to_rotmat(quat: Tensor) -> Tensor:
    """Scalar-last (XYZW) quaternion (..., 4), normalised first, -> rotation matrix (..., 3, 3)."""
    x, y, z, w = F.normalize(quat, dim=-1).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    )  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quat.shape[:-1], 3, 3)


def rotmat_to_quat(rot: Tensor) -> Tensor:
    """Rotation matrix (..., 3, 3) -> XYZW quaternion (..., 4) with w >= 0.

    Each of the four algebraically equivalent formulas is evaluated; the one with the largest
    denominator is kept, which is numerically stable for every rotation.
    """
    m = rot.reshape(-1, 3, 3)
    m00, m01, m02 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    m10, m11, m12 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    m20, m21, m22 = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    # 4*q_k^2 for k = w, x, y, z
    sq = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1
    )
    roots = sq.clamp_min(1e-12).sqrt()  # 2*|q_k|
    candidates = torch.stack(  # candidate i is the quaternion (w, x, y, z) scaled by 2*q_i
        (
            torch.stack((sq[:, 0], m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, sq[:, 1], m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, sq[:, 2], m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, sq[:, 3]), dim=-1),
        ),
        dim=1,
    ) / (2 * roots[..., None])
    best = sq.argmax(dim=-1)
    wxyz = candidates[torch.arange(len(m), device=m.device), best]
    wxyz = F.normalize(wxyz, dim=-1)
    wxyz = torch.where(wxyz[:, :1] < 0, -wxyz, wxyz)
    return wxyz[:, [1, 2, 3, 0]].reshape(*rot.shape[:-2], 4)


def encode_pose(cam_from_world: Tensor, intrinsics: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """(..., 3|4, 4) extrinsics + (..., 3, 3) intrinsics of an image of size image_hw -> (..., 9)."""
    h, w = image_hw
    rot, trans = cam_from_world[..., :3, :3], cam_from_world[..., :3, 3]
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0])
    return torch.cat((trans, rotmat_to_quat(rot), fov_h[..., None], fov_w[..., None]), dim=-1).float()


def decode_pose(pose_enc: Tensor, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(..., 9) -> (cam_from_world (..., 4, 4), intrinsics (..., 3, 3)) for an image of size image_hw."""
    h, w = image_hw
    batch = pose_enc.shape[:-1]
    extrinsics = torch.zeros(*batch, 4, 4, dtype=pose_enc.dtype, device=pose_enc.device)
    extrinsics[..., :3, :3] = quat_to_rotmat(pose_enc[..., 3:7])
    extrinsics[..., :3, 3] = pose_enc[..., :3]
    extrinsics[..., 3, 3] = 1
    intrinsics = torch.zeros(*batch, 3, 3, dtype=pose_enc.dtype, device=pose_enc.device)
    intrinsics[..., 0, 0] = (w / 2) / torch.tan(pose_enc[..., 8] / 2)
    intrinsics[..., 1, 1] = (h / 2) / torch.tan(pose_enc[..., 7] / 2)
    intrinsics[..., 0, 2] = w / 2
    intrinsics[..., 1, 2] = h / 2
    intrinsics[..., 2, 2] = 1
    return extrinsics, intrinsics


def unproject_depth(depth: Tensor, cam_from_world: Tensor, intrinsics: Tensor) -> Tensor:
    """Depth (..., H, W) or (..., H, W, 1) -> world points (..., H, W, 3).

    Extrinsics may be (..., 3, 4) or (..., 4, 4); pixel (i, j) is unprojected through (x=j, y=i).
    """
    if depth.shape[-1] == 1 and depth.dim() > 2:
        depth = depth[..., 0]
    h, w = depth.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=depth.dtype, device=depth.device),
        torch.arange(w, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    k = intrinsics[..., None, None, :, :]
    x_cam = (xs - k[..., 0, 2]) / k[..., 0, 0] * depth
    y_cam = (ys - k[..., 1, 2]) / k[..., 1, 1] * depth
    cam_points = torch.stack((x_cam, y_cam, depth), dim=-1)
    rot, trans = cam_from_world[..., None, None, :3, :3], cam_from_world[..., None, None, :3, 3]
    # world = R^T (cam - t)
    return ((cam_points - trans)[..., None, :] @ rot)[..., 0, :]
