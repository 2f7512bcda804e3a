"""Overview picture of a `vggt-infer` output: a few frames with their depth and confidence maps,
and a bird's-eye view of the fused point cloud with the predicted camera path.

Usage: python scripts/infer_figure.py OUT [--frames 3] [--out OUT/overview.png] [--images DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402
from PIL import Image  # noqa: E402

MAX_POINTS = 60_000


def image_folder(out: Path, meta: dict, override: Path | None) -> Path:
    if override is not None:
        return override
    if "images" in meta["input"]:
        return Path(meta["input"]["images"])
    return out / "images"  # shard input: vggt-infer wrote the frames beside the model


def camera_centres(meta: dict) -> np.ndarray:
    poses = np.array([f["cam_from_world"] for f in meta["frames"]])
    return -np.einsum("nji,nj->ni", poses[:, :3, :3], poses[:, :3, 3])


def birds_eye(ax: plt.Axes, out: Path, meta: dict) -> None:
    """Points seen from above in the first camera's world (x right, z forward)."""
    cloud = o3d.io.read_point_cloud(str(out / "points.ply"))
    points, colors = np.asarray(cloud.points), np.asarray(cloud.colors)
    if len(points) > MAX_POINTS:
        keep = np.random.default_rng(0).choice(len(points), MAX_POINTS, replace=False)
        points, colors = points[keep], colors[keep]
    ax.scatter(points[:, 0], points[:, 2], c=colors, s=0.3, linewidths=0)
    centres = camera_centres(meta)
    ax.plot(centres[:, 0], centres[:, 2], "r.-", lw=1, ms=4, label="cameras")
    ax.set_xlabel("x (model units)")
    ax.set_ylabel("z (model units)")
    ax.set_title(f"points.ply from above ({meta['points']['count']:,} points)")
    ax.legend(loc="upper right", fontsize=7)
    lo, hi = np.percentile(points[:, [0, 2]], [2, 98], axis=0)
    lo, hi = np.minimum(lo, centres[:, [0, 2]].min(0)), np.maximum(hi, centres[:, [0, 2]].max(0))
    pad = 0.05 * (hi - lo)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_aspect("equal", adjustable="box")


def draw(out: Path, n_frames: int, target: Path, images: Path | None) -> Path:
    meta = json.loads((out / "meta.json").read_text())
    folder = image_folder(out, meta, images)
    frames = meta["frames"]
    picked = [
        frames[i] for i in np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).round().astype(int)
    ]
    depths = [np.load(out / "depth" / f"{f['name']}.npy") for f in picked]
    valid = np.concatenate([d[d > 0] for d in depths])
    vmin, vmax = np.percentile(valid, [2, 98]) if len(valid) else (0.0, 1.0)
    fig = plt.figure(figsize=(15, 2.2 * len(picked) + 4.5), constrained_layout=True)
    grid = fig.add_gridspec(len(picked) + 2, 3)
    for row, (frame, depth) in enumerate(zip(picked, depths, strict=True)):
        confidence = np.load(out / "confidence" / f"{frame['name']}.npy")
        c_lo, c_hi = np.percentile(confidence, [2, 98])
        panels = (
            (np.asarray(Image.open(folder / frame["image"]).convert("RGB")), {}, frame["image"]),
            (np.ma.masked_equal(depth, 0), {"cmap": "turbo_r", "vmin": vmin, "vmax": vmax}, "depth"),
            (confidence, {"cmap": "magma", "vmin": c_lo, "vmax": c_hi}, "confidence"),
        )
        for col, (data, style, title) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            shown = ax.imshow(data, **style)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
            if col:
                fig.colorbar(shown, ax=ax, fraction=0.02)
    birds_eye(fig.add_subplot(grid[len(picked) :, :]), out, meta)
    model = meta["model"]
    adapter = Path(model["adapter"]).name if model["adapter"] else "none"
    windows = len(meta["windows"]["list"])
    fig.suptitle(
        f"vggt-infer: {model['size']} model, adapter {adapter}, {len(frames)} frames in {windows} windows"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=80)
    plt.close(fig)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="a vggt-infer output folder (one scene)")
    parser.add_argument("--frames", type=int, default=3, help="frames shown with their maps")
    parser.add_argument("--out", dest="target", type=Path, default=None, help="PNG to write")
    parser.add_argument("--images", type=Path, default=None, help="input images (default: from meta.json)")
    args = parser.parse_args()
    target = args.target or args.out / "overview.png"
    print(f"overview: {draw(args.out, args.frames, target, args.images)}")


if __name__ == "__main__":
    main()
