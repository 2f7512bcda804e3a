"""The synthetic KITTI-360 scene honours the dataset's file formats and its calibration chain.

Files are parsed here with plain NumPy rather than the project's reader, so a mistake shared by
the generator and the reader cannot hide itself.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocess.synthetic import generate_synthetic_kitti360, load_gt_depth

H, W = 376, 1408
LABELS = {7, 8, 11, 12, 17, 21, 22, 23, 26}
SEQ0, SEQ2 = "2013_05_28_drive_0000_sync", "2013_05_28_drive_0002_sync"


def _key_values(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        try:
            out[key] = np.array(rest.split(), dtype=np.float64)
        except ValueError:
            continue  # e.g. calib_time
    return out


def _homogeneous(values: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: len(values) // 4] = values.reshape(-1, 4)
    return out


def _frame_poses(path: Path) -> dict[int, np.ndarray]:
    rows = np.loadtxt(path, ndmin=2)
    return {int(r[0]): _homogeneous(r[1:]) for r in rows}


def _calibration(root: Path) -> dict[str, np.ndarray]:
    persp = _key_values(root / "calibration" / "perspective.txt")
    return {
        "R_rect": _homogeneous(np.append(persp["R_rect_00"].reshape(3, 3), np.zeros((3, 1)), 1).ravel()),
        "P_rect": persp["P_rect_00"].reshape(3, 4),
        "cam_to_pose": _homogeneous(_key_values(root / "calibration" / "calib_cam_to_pose.txt")["image_00"]),
        "cam_to_velo": _homogeneous(np.loadtxt(root / "calibration" / "calib_cam_to_velo.txt")),
    }


def _sweep(root: Path, seq: str, frame: int) -> np.ndarray:
    return np.fromfile(
        root / "data_3d_raw" / seq / "velodyne_points" / "data" / f"{frame:010d}.bin", np.float32
    )


def _n_frames(root: Path, seq: str) -> int:
    return len(list((root / "data_2d_raw" / seq / "image_00" / "data_rect").glob("*.png")))


def _sweep_in_rect(root: Path, seq: str, frame: int) -> np.ndarray:
    """Sweep points in rectified camera 0: velo -> cam0 (inverse of cam_to_velo) -> R_rect."""
    calib = _calibration(root)
    pts = _sweep(root, seq, frame).reshape(-1, 4)[:, :3].astype(np.float64)
    rect_from_velo = calib["R_rect"] @ np.linalg.inv(calib["cam_to_velo"])
    return pts @ rect_from_velo[:3, :3].T + rect_from_velo[:3, 3]


def _planar_cells(gt: np.ndarray) -> np.ndarray:
    """True at pixel (i, j) when the 4x4 pixel centres around the cell [j, j+1] x [i, i+1] all lie on
    one plane: inverse depth is affine in pixel coordinates on a plane, so its second differences
    along both axes vanish there (a depth edge anywhere in the stencil breaks them)."""
    valid = gt > 0
    inv = np.where(valid, 1.0 / np.where(valid, gt, 1.0), 0.0)
    tol = 1e-5 * inv
    flat = np.zeros(gt.shape, bool)
    flat[:, 1:-1] = np.abs(inv[:, :-2] - 2 * inv[:, 1:-1] + inv[:, 2:]) <= tol[:, 1:-1]
    flat[1:-1] &= np.abs(inv[:-2] - 2 * inv[1:-1] + inv[2:]) <= tol[1:-1]
    flat &= valid
    flat[[0, -1]] = False
    flat[:, [0, -1]] = False
    cell = np.zeros(gt.shape, bool)
    cell[:-1, :-1] = flat[:-1, :-1] & flat[1:, :-1] & flat[:-1, 1:] & flat[1:, 1:]
    return cell


def _depth_at_points(P: np.ndarray, gt: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Projected z, GT depth at each point's exact sub-pixel position (bilinear in inverse depth,
    exact on a plane), whether that interpolation can be trusted, and the nearest pixel."""
    pts = pts[pts[:, 2] > 0.5]
    uvw = pts @ P[:, :3].T + P[:, 3]
    u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    inside = (u >= 0) & (u < W - 1) & (v >= 0) & (v < H - 1)
    pts, u, v = pts[inside], u[inside], v[inside]
    j, i = np.floor(u).astype(int), np.floor(v).astype(int)
    a, b = u - j, v - i
    planar = _planar_cells(gt)[i, j]
    inv = [1.0 / np.where(planar, gt[r, c], 1.0) for r, c in ((i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1))]
    interp = (1 - a) * (1 - b) * inv[0] + a * (1 - b) * inv[1] + (1 - a) * b * inv[2] + a * b * inv[3]
    depth = np.where(planar, 1.0 / interp, 0.0)
    return pts[:, 2], depth, planar, np.round(v).astype(int), np.round(u).astype(int)


def test_calibration_files(synthetic):
    calib_dir = synthetic.root / "calibration"
    persp = _key_values(calib_dir / "perspective.txt")
    for cam in ("00", "01"):
        for key, size in (("S", 2), ("K", 9), ("D", 5), ("R", 9), ("T", 3), ("S_rect", 2), ("R_rect", 9)):
            assert persp[f"{key}_{cam}"].size == size, f"{key}_{cam}"
        assert persp[f"P_rect_{cam}"].size == 12
    np.testing.assert_array_equal(persp["S_rect_00"], [W, H])
    R_rect = persp["R_rect_00"].reshape(3, 3)
    np.testing.assert_allclose(R_rect @ R_rect.T, np.eye(3), atol=1e-9)
    assert 1e-3 < np.abs(R_rect - np.eye(3)).max() < 0.05, "R_rect must be a small rotation, not identity"
    P = persp["P_rect_00"].reshape(3, 4)
    assert P[0, 0] == P[1, 1] and P[0, 0] == pytest.approx(552.554261)
    np.testing.assert_array_equal(P[:, 3], 0.0)
    assert persp["P_rect_01"][3] < 0  # stereo baseline: camera 1 is to the right
    to_pose = _key_values(calib_dir / "calib_cam_to_pose.txt")
    assert sorted(to_pose) == [f"image_0{i}" for i in range(4)]
    assert all(v.size == 12 for v in to_pose.values())
    assert np.loadtxt(calib_dir / "calib_cam_to_velo.txt").size == 12


def test_rig_frames_are_distinct_and_rigid(synthetic):
    calib = _calibration(synthetic.root)
    for name in ("cam_to_pose", "cam_to_velo"):
        R = calib[name][:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert np.abs(R - np.eye(3)).max() > 0.5, f"{name}: the camera frame must not equal it"
    # camera 0 looks forward (pose/velo x) and sits ahead of both the IMU and the Velodyne
    for name in ("cam_to_pose", "cam_to_velo"):
        forward = calib[name][:3, :3] @ [0.0, 0.0, 1.0]
        assert forward[0] > 0.99
        assert calib[name][0, 3] > 0.5
    assert calib["cam_to_velo"][2, 3] < 0, "the Velodyne is mounted above the camera"


def test_frames_have_the_kitti360_formats(synthetic):
    root = synthetic.root
    assert synthetic.sequences == (SEQ0, SEQ2)
    for seq in synthetic.sequences:
        n = _n_frames(root, seq)
        assert n >= 20
        sem_dir = root / "data_2d_semantics" / "train" / seq / "image_00" / "semantic"
        labelled = sorted(int(p.stem) for p in sem_dir.glob("*.png"))
        assert 0 < len(set(range(n)) - set(labelled)) <= 3, "a few frames lack semantics"
        for frame in range(n):
            stem = f"{frame:010d}"
            img = cv2.imread(str(root / "data_2d_raw" / seq / "image_00" / "data_rect" / f"{stem}.png"))
            assert img.shape == (H, W, 3) and img.dtype == np.uint8
            assert img.std() > 20, "images must be textured"
            raw = _sweep(root, seq, frame)
            assert raw.size % 4 == 0 and raw.size // 4 > 20000
            pts = raw.reshape(-1, 4)
            assert np.isfinite(pts).all() and np.linalg.norm(pts[:, :3], axis=1).max() <= 121.0
            depth = load_gt_depth(synthetic.gt_root, seq, frame)
            assert depth.shape == (H, W) and depth.dtype == np.float32
            assert (depth == 0).any() and (depth > 0).mean() > 0.3 and (depth >= 0).all()
            if frame in labelled:
                sem = cv2.imread(str(sem_dir / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
                assert sem.shape == (H, W) and sem.dtype == np.uint8
                assert set(np.unique(sem)) <= LABELS
                np.testing.assert_array_equal(sem == 23, depth == 0, "sky exactly where no surface is hit")
        present = {int(sem.stem) for sem in sem_dir.glob("*.png")}
        assert present == set(labelled)


def test_split_lists(synthetic):
    sem_root = synthetic.root / "data_2d_semantics" / "train"
    for split, seq in (("train", SEQ0), ("val", SEQ2)):
        lines = (sem_root / f"2013_05_28_drive_{split}_frames.txt").read_text().splitlines()
        labelled = sorted(p.stem for p in (sem_root / seq / "image_00" / "semantic").glob("*.png"))
        expected = [
            f"data_2d_raw/{seq}/image_00/data_rect/{s}.png "
            f"data_2d_semantics/train/{seq}/image_00/semantic/{s}.png"
            for s in labelled
        ]
        assert lines == expected
        for line in lines:
            assert all((synthetic.root / part).is_file() for part in line.split())


def test_poses_have_gaps_and_the_kitti360_chain(synthetic):
    root = synthetic.root
    calib = _calibration(root)
    for seq in synthetic.sequences:
        n = _n_frames(root, seq)
        poses = _frame_poses(root / "data_poses" / seq / "poses.txt")
        cam0 = _frame_poses(root / "data_poses" / seq / "cam0_to_world.txt")
        truth = _frame_poses(synthetic.gt_root / seq / "cam0_to_world.txt")
        assert 0 not in poses, "the first frame has no pose"
        missing = sorted(set(range(n)) - set(poses))
        assert any(b - a == 1 for a, b in zip(missing, missing[1:], strict=False)), "consecutive pose gap"
        assert set(cam0) == set(poses) and set(truth) == set(range(n))
        for frame, pose in poses.items():
            np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-9)
            chain = pose @ calib["cam_to_pose"] @ np.linalg.inv(calib["R_rect"])
            np.testing.assert_allclose(cam0[frame], chain, atol=1e-9, rtol=0)
            np.testing.assert_allclose(truth[frame], cam0[frame], atol=1e-9, rtol=0)
        steps = np.linalg.norm(np.diff([truth[f][:3, 3] for f in range(n)], axis=0), axis=1)
        assert steps.min() > 0.6 and steps.max() < 1.4, "vehicle moves about 1 m per frame"


def _check_sweep_against_depth(root: Path, gt_root: Path, seq: str, frames: range, tol: float) -> None:
    """LiDAR points through velo -> cam0 -> R_rect -> P_rect land at GT depth on visible surfaces."""
    P = _calibration(root)["P_rect"]
    agree = planar_total = in_front = 0
    for frame in frames:
        z, depth, planar, _, _ = _depth_at_points(
            P, load_gt_depth(gt_root, seq, frame), _sweep_in_rect(root, seq, frame)
        )
        err = z[planar] - depth[planar]
        agree += int((np.abs(err) < tol).sum())
        # a point the camera cannot see is behind the visible surface, never in front of it
        in_front += int((err < -tol).sum())
        planar_total += int(planar.sum())
    assert planar_total > 5000 * len(frames), "too few LiDAR points on camera-visible surfaces"
    assert agree / planar_total > 0.9, f"only {agree / planar_total:.1%} of points at GT depth"
    assert in_front / planar_total < 0.002, f"{in_front / planar_total:.2%} of points in front of the surface"


def test_lidar_projects_onto_gt_depth(synthetic):
    for seq in synthetic.sequences:
        n = _n_frames(synthetic.root, seq)
        _check_sweep_against_depth(synthetic.root, synthetic.gt_root, seq, range(0, n, 7), tol=0.03)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two tiny generations with the same seed (determinism) and one without range noise."""
    base = tmp_path_factory.mktemp("small")
    return [
        generate_synthetic_kitti360(base / name, frames=2, seed=7, sequences=1, noise_sigma=noise)
        for name, noise in (("a", 0.005), ("b", 0.005), ("exact", 0.0))
    ]


def test_noise_free_lidar_is_exact_on_gt_surfaces(small):
    exact = small[2]
    _check_sweep_against_depth(exact.root, exact.gt_root, SEQ0, range(2), tol=2e-3)


def test_same_seed_gives_identical_bytes(small):
    a, b, _ = small
    files_a = sorted(p.relative_to(a.root.parent) for p in a.root.parent.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.root.parent) for p in b.root.parent.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 10
    for rel in files_a:
        assert (a.root.parent / rel).read_bytes() == (b.root.parent / rel).read_bytes(), str(rel)


def test_sequences_have_different_layouts(synthetic):
    images = [
        cv2.imread(str(synthetic.root / "data_2d_raw" / seq / "image_00" / "data_rect" / "0000000005.png"))
        for seq in synthetic.sequences
    ]
    assert np.abs(images[0].astype(int) - images[1].astype(int)).mean() > 5


def _world_points(gt_root: Path, seq: str, frame: int, mask: np.ndarray, pose: np.ndarray, K: np.ndarray):
    depth = load_gt_depth(gt_root, seq, frame)
    i, j = np.nonzero(mask & (depth > 0))
    z = depth[i, j].astype(np.float64)
    cam = np.column_stack([(j - K[0, 2]) * z / K[0, 0], (i - K[1, 2]) * z / K[1, 1], z])
    return cam @ pose[:3, :3].T + pose[:3, 3]


def test_moving_car_moves_and_the_sweep_follows_it(synthetic):
    root, gt_root = synthetic.root, synthetic.gt_root
    P = _calibration(root)["P_rect"]
    K = P[:, :3]
    truth = _frame_poses(gt_root / SEQ0 / "cam0_to_world.txt")
    n = _n_frames(root, SEQ0)
    masks = {
        f: cv2.imread(str(gt_root / SEQ0 / "dynamic" / f"{f:010d}.png"), cv2.IMREAD_UNCHANGED) > 0
        for f in range(n)
    }
    seen = [f for f in range(n) if masks[f].sum() > 500]
    assert len(seen) >= 3, "the moving car is visible in several frames"
    sem_dir = root / "data_2d_semantics" / "train" / SEQ0 / "image_00" / "semantic"
    moves, on_car = [], []
    for f in seen:
        sem_path = sem_dir / f"{f:010d}.png"
        if sem_path.exists():
            assert (cv2.imread(str(sem_path), cv2.IMREAD_UNCHANGED)[masks[f]] == 26).all()
        pts = _world_points(gt_root, SEQ0, f, masks[f], truth[f], K)
        moves.append(pts.mean(axis=0))
        z, depth, planar, i, j = _depth_at_points(
            P, load_gt_depth(gt_root, SEQ0, f), _sweep_in_rect(root, SEQ0, f)
        )
        hits = planar & masks[f][i, j]
        on_car.append(np.abs(z[hits] - depth[hits]))
    displacement = np.linalg.norm(np.diff(moves, axis=0), axis=1) / np.diff(seen)
    assert np.median(displacement) > 0.3, "the dynamic object's world position changes between frames"
    errors = np.concatenate(on_car)
    assert errors.size > 100 and np.median(errors) < 0.03, "sweep t sees the car where it is at frame t"
