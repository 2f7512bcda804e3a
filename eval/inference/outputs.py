"""What `vggt-infer` writes for one scene, at each input image's own resolution:
depth/<name>.npy + .png, confidence/<name>.npy, cameras/ (COLMAP text), points.ply, meta.json
(written by the caller, last)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
from tqdm import tqdm

from .colmap_text import ColmapImage, ColmapPoints, write_colmap_text
from .inputs import InputFrame
from .reconstruct import FramePrediction, Reconstruction
from .windows import unproject

PNG_MAX = 65535
SCALE_CONVENTION = (
    "VGGT predicts geometry up to a similarity, so depth, camera positions and points are in the "
    "model's units, not metres: the first window's prediction fixes the scale (VGGT is trained with "
    "the mean distance of a window's points from its first camera normalised to 1) and later windows "
    "are scaled to it. Multiply by a known metric scale (e.g. from one measured distance) to get metres."
)


def png_depth_scale(max_depth: float) -> float:
    """PNG units per depth unit: the largest 1-2-5 step that keeps `max_depth` below 65535."""
    if not max_depth > 0:
        return 1.0
    limit = PNG_MAX / max_depth
    exponent = math.floor(math.log10(limit))
    return max(step * 10.0**exponent for step in (1, 2, 5) if step * 10.0**exponent <= limit)


def write_depth_and_confidence(
    folder: Path, frames: list[InputFrame], predictions: list[FramePrediction], scale: float
) -> None:
    for name in ("depth", "confidence"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for frame, pred in tqdm(
        list(zip(frames, predictions, strict=True)), desc="writing", unit="frame", leave=False
    ):
        depth = pred.mapping.to_input(pred.depth)
        np.save(folder / "depth" / f"{frame.name}.npy", depth)
        png = np.clip(np.round(depth * scale), 0, PNG_MAX).astype(np.uint16)
        if not cv2.imwrite(str(folder / "depth" / f"{frame.name}.png"), png):
            raise OSError(f"could not write {folder / 'depth' / frame.name}.png")
        np.save(folder / "confidence" / f"{frame.name}.npy", pred.mapping.to_input(pred.confidence))


def confident_pixels(predictions: list[FramePrediction], quantile: float) -> tuple[list[np.ndarray], float]:
    """Per frame, the grid pixels kept for the point cloud: image content with depth and a
    confidence at or above the `quantile` of all frames' content confidences (the value too)."""
    content = [p.mapping.content_mask() & (p.depth > 0) for p in predictions]
    values = np.concatenate([p.confidence[m] for p, m in zip(predictions, content, strict=True)])
    threshold = float(np.quantile(values, quantile)) if len(values) else math.inf
    return [m & (p.confidence >= threshold) for p, m in zip(predictions, content, strict=True)], threshold


def fused_points(predictions: list[FramePrediction], keep: list[np.ndarray]) -> ColmapPoints:
    """The kept pixels of every frame unprojected with its camera, with colour and source pixel
    (in the input image's OpenCV pixel coordinates)."""
    xyz, rgb, image, xy = [], [], [], []
    for k, (pred, mask) in enumerate(zip(predictions, keep, strict=True)):
        xyz.append(unproject(pred.depth, pred.cam_from_world, pred.intrinsics)[mask])
        rgb.append(pred.colors[mask])
        rows, cols = np.nonzero(mask)
        t = pred.mapping.transform
        xy.append(
            np.stack(
                ((cols + 0.5 - t.offset_x) / t.scale_x - 0.5, (rows + 0.5 - t.offset_y) / t.scale_y - 0.5),
                axis=1,
            )
        )
        image.append(np.full(len(rows), k))
    return ColmapPoints(np.concatenate(xyz), np.concatenate(rgb), np.concatenate(image), np.concatenate(xy))


def write_ply(path: Path, points: ColmapPoints) -> None:
    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(points.xyz.astype(np.float64))
    cloud.colors = o3d.utility.Vector3dVector(points.rgb.astype(np.float64) / 255.0)
    if not o3d.io.write_point_cloud(str(path), cloud, write_ascii=False):
        raise OSError(f"open3d could not write {path}")


def subsample(points: ColmapPoints, limit: int, seed: int = 0) -> ColmapPoints:
    if len(points.xyz) <= limit:
        return points
    keep = np.sort(np.random.default_rng(seed).choice(len(points.xyz), limit, replace=False))
    return ColmapPoints(points.xyz[keep], points.rgb[keep], points.image[keep], points.xy[keep])


def write_scene(
    folder: Path, frames: list[InputFrame], recon: Reconstruction, conf_quantile: float, colmap_points: int
) -> dict:
    """Every output but meta.json; returns what meta.json records about them."""
    predictions = recon.frames
    max_depth = max(float(p.depth[p.mapping.content_mask()].max(initial=0.0)) for p in predictions)
    scale = png_depth_scale(max_depth)
    write_depth_and_confidence(folder, frames, predictions, scale)
    keep, threshold = confident_pixels(predictions, conf_quantile)
    points = fused_points(predictions, keep)
    write_ply(folder / "points.ply", points)
    images = [
        ColmapImage(f.image_name, f.size_hw, p.mapping.intrinsics_to_input(p.intrinsics), p.cam_from_world)
        for f, p in zip(frames, predictions, strict=True)
    ]
    sampled = subsample(points, colmap_points)
    write_colmap_text(folder / "cameras", images, sampled)
    return {
        "depth_png": {"scale": scale, "meaning": "depth = png / scale; 0 = no prediction (cropped away)"},
        "points": {
            "ply": "points.ply",
            "confidence_quantile": conf_quantile,
            "confidence_threshold": threshold,
            "count": int(len(points.xyz)),
            "colmap_points3D": int(len(sampled.xyz)),
            "resolution": "one point per kept pixel of the model grid",
        },
        "frames": [
            {
                "name": f.name,
                "image": f.image_name,
                "height": f.size_hw[0],
                "width": f.size_hw[1],
                "window": p.window,
                "intrinsics": image.intrinsics.tolist(),
                "cam_from_world": p.cam_from_world.tolist(),
            }
            for f, p, image in zip(frames, predictions, images, strict=True)
        ],
    }
