"""Numba kernels that turn a dense static point cloud into depth: surfels (oriented discs)
estimated once per cloud, then rendered per frame.

Each point becomes a disc: its normal from the plane through its k nearest neighbours, its
radius from their spacing, so neighbouring discs close the surface without reaching far
past its edges. A frame's depth at a pixel is where the pixel-centre ray meets the nearest
disc (a ray/plane intersection, exact on planar surfaces), never the depth of the nearest
point that happens to land in the pixel: on surfaces seen at grazing angles that minimum is
biased toward the camera. Discs close the surfaces, so what lies behind them is hidden.
"""

from __future__ import annotations

import numba as nb
import numpy as np

NO_NORMAL = 0.0  # a zero normal: no reliable plane (edges, clutter); the disc then faces the camera


@nb.njit(cache=True, nogil=True, inline="always")
def _smallest_eigenvector(c00, c01, c02, c11, c12, c22):
    """Unit eigenvector of the smallest eigenvalue of a symmetric 3x3 matrix and the ratio of
    the smallest to the middle eigenvalue (0: a perfect plane); closed form, no LAPACK call."""
    p1 = c01 * c01 + c02 * c02 + c12 * c12
    q = (c00 + c11 + c22) / 3.0
    p2 = (c00 - q) ** 2 + (c11 - q) ** 2 + (c22 - q) ** 2 + 2.0 * p1
    if p2 <= 1e-30:
        return 0.0, 0.0, 0.0, 1.0
    p = np.sqrt(p2 / 6.0)
    b00, b11, b22 = (c00 - q) / p, (c11 - q) / p, (c22 - q) / p
    b01, b02, b12 = c01 / p, c02 / p, c12 / p
    det = b00 * (b11 * b22 - b12 * b12) - b01 * (b01 * b22 - b12 * b02) + b02 * (b01 * b12 - b11 * b02)
    r = min(1.0, max(-1.0, det / 2.0))
    phi = np.arccos(r) / 3.0
    largest = q + 2.0 * p * np.cos(phi)
    smallest = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    middle = 3.0 * q - largest - smallest
    ratio = smallest / middle if middle > 1e-30 else 1.0
    # rows of C - smallest*I span the plane; their cross product is the eigenvector
    r0 = (c00 - smallest, c01, c02)
    r1 = (c01, c11 - smallest, c12)
    r2 = (c02, c12, c22 - smallest)
    best, bx, by, bz = -1.0, 0.0, 0.0, 0.0
    for a, b in ((r0, r1), (r0, r2), (r1, r2)):
        x = a[1] * b[2] - a[2] * b[1]
        y = a[2] * b[0] - a[0] * b[2]
        z = a[0] * b[1] - a[1] * b[0]
        norm = x * x + y * y + z * z
        if norm > best:
            best, bx, by, bz = norm, x, y, z
    if best <= 1e-30:
        return 0.0, 0.0, 0.0, 1.0
    inv = 1.0 / np.sqrt(best)
    return bx * inv, by * inv, bz * inv, ratio


@nb.njit(cache=True, nogil=True)
def estimate_surfels(
    points: np.ndarray,
    cell_keys: np.ndarray,
    cell_starts: np.ndarray,
    dims: np.ndarray,
    k: int,
    spacing_k: int,
    radius_scale: float,
    edge_radius_scale: float,
    max_radius: float,
    max_ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Normal (N, 3) float32 and disc radius (N,) float32 of every point.

    `points` are sorted by their cell of a fine grid: cell c (of the sorted unique
    `cell_keys`, keys (ix * dims[1] + iy) * dims[2] + iz) holds points
    cell_starts[c]:cell_starts[c+1]. The k nearest neighbours come from the 27 cells around
    a point's cell. Radius: radius_scale times the mean distance to the `spacing_k` nearest,
    at most max_radius; a point with fewer than 2 neighbours there is isolated and gets
    radius 0 (never drawn). Normal: the plane through the point and its k nearest; zero when
    the smallest/middle eigenvalue ratio exceeds max_ratio (no single plane: an edge, a
    corner or clutter), and then the radius shrinks by edge_radius_scale, since a disc there
    would reach past the edge over whatever lies behind it."""
    n_points = points.shape[0]
    normals = np.zeros((n_points, 3), dtype=np.float32)
    radii = np.zeros(n_points, dtype=np.float32)
    n_cells = cell_keys.shape[0]
    near_d = np.empty(k, dtype=np.float64)
    near_i = np.empty(k, dtype=np.int64)
    for cell in range(n_cells):
        key = cell_keys[cell]
        iz = key % dims[2]
        iy = (key // dims[2]) % dims[1]
        ix = key // (dims[2] * dims[1])
        # the neighbour cells' ranges, found once per cell: for each (dx, dy) the dz run is contiguous
        lo = np.empty(9, dtype=np.int64)
        hi = np.empty(9, dtype=np.int64)
        runs = 0
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                jx, jy = ix + dx, iy + dy
                if jx < 0 or jy < 0 or jx >= dims[0] or jy >= dims[1]:
                    continue
                base = (jx * dims[1] + jy) * dims[2]
                first = np.searchsorted(cell_keys, base + max(iz - 1, 0))
                last = np.searchsorted(cell_keys, base + min(iz + 1, dims[2] - 1), side="right")
                if last > first:
                    lo[runs] = cell_starts[first]
                    hi[runs] = cell_starts[last]
                    runs += 1
        for n in range(cell_starts[cell], cell_starts[cell + 1]):
            px, py, pz = points[n, 0], points[n, 1], points[n, 2]
            found = 0
            for run in range(runs):
                for m in range(lo[run], hi[run]):
                    if m == n:
                        continue
                    dx, dy, dz = points[m, 0] - px, points[m, 1] - py, points[m, 2] - pz
                    d = dx * dx + dy * dy + dz * dz
                    if found == k and d >= near_d[k - 1]:
                        continue
                    slot = found if found < k else k - 1
                    while slot > 0 and near_d[slot - 1] > d:
                        near_d[slot] = near_d[slot - 1]
                        near_i[slot] = near_i[slot - 1]
                        slot -= 1
                    near_d[slot] = d
                    near_i[slot] = m
                    if found < k:
                        found += 1
            if found < 2:
                continue
            use = min(found, spacing_k)
            spacing = 0.0
            for a in range(use):
                spacing += np.sqrt(near_d[a])
            radii[n] = min(max_radius, radius_scale * spacing / use)
            if found < 3:
                continue
            mx, my, mz = px, py, pz
            for a in range(found):
                m = near_i[a]
                mx += points[m, 0]
                my += points[m, 1]
                mz += points[m, 2]
            mx, my, mz = mx / (found + 1), my / (found + 1), mz / (found + 1)
            c00 = c01 = c02 = c11 = c12 = c22 = 0.0
            for a in range(found + 1):
                m = n if a == found else near_i[a]
                dx, dy, dz = points[m, 0] - mx, points[m, 1] - my, points[m, 2] - mz
                c00 += dx * dx
                c01 += dx * dy
                c02 += dx * dz
                c11 += dy * dy
                c12 += dy * dz
                c22 += dz * dz
            nx, ny, nz, ratio = _smallest_eigenvector(c00, c01, c02, c11, c12, c22)
            if ratio <= max_ratio:
                normals[n, 0], normals[n, 1], normals[n, 2] = nx, ny, nz
            else:
                radii[n] *= edge_radius_scale
    return normals, radii


@nb.njit(cache=True, nogil=True)
def _hidden(depth: np.ndarray, rect: np.ndarray, zmin: float) -> bool:
    """Whether every pixel of the rectangle already holds a surface nearer than zmin (then
    nothing of a cell whose nearest corner is at zmin can show there)."""
    for i in range(rect[0], rect[1] + 1):
        for j in range(rect[2], rect[3] + 1):
            current = depth[i, j]
            if current == 0.0 or current >= zmin:
                return False
    return True


@nb.njit(cache=True, nogil=True)
def splat_surfels(
    points: np.ndarray,
    normals: np.ndarray,
    radii: np.ndarray,
    cell_starts: np.ndarray,
    cell_lo: np.ndarray,
    cell_hi: np.ndarray,
    cam_from_world: np.ndarray,
    K: np.ndarray,
    depth: np.ndarray,
    winner: np.ndarray,
    winner_offset: int,
    min_depth: float,
    max_depth: float,
    min_cos: float,
    max_footprint: float,
) -> int:
    """Render the discs into `depth` (z-buffer, 0 = empty) in place; `winner` gets
    winner_offset + the index of the disc that gave each pixel its depth. Returns discs tested.

    Points are grouped by the cells of a coarse grid (cell c holds points
    cell_starts[c]:cell_starts[c+1], inside the box cell_lo[c]..cell_hi[c] grown by its largest
    disc radius); a cell entirely outside the camera's frustum or depth range is never
    touched, and cells are drawn nearest first so that one whose whole image rectangle is
    already covered by nearer depth (a building's back, the row behind a facade, ground
    under objects) is skipped unread. A disc seen more edge-on than min_cos (cosine between
    ray and normal) is skipped.
    """
    height, width = depth.shape
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    R = cam_from_world[:3, :3]
    t = cam_from_world[:3, 3]
    tested = 0
    corner = np.empty(3)
    n_cells = cell_starts.shape[0] - 1
    near = np.full(n_cells, np.inf)  # nearest corner depth of each cell in view (inf: culled)
    rect = np.full((n_cells, 4), -1, dtype=np.int64)  # pixel bounds (i0, i1, j0, j1); -1: unbounded
    for cell in range(n_cells):
        # frustum planes through the camera centre, with pixel edges at -0.5 and size - 0.5
        out_left = out_right = out_top = out_bottom = out_near = out_far = True
        zmin, umin, umax, vmin, vmax = np.inf, np.inf, -np.inf, np.inf, -np.inf
        for c in range(8):
            for a in range(3):
                corner[a] = cell_hi[cell, a] if (c >> a) & 1 else cell_lo[cell, a]
            x = R[0, 0] * corner[0] + R[0, 1] * corner[1] + R[0, 2] * corner[2] + t[0]
            y = R[1, 0] * corner[0] + R[1, 1] * corner[1] + R[1, 2] * corner[2] + t[1]
            z = R[2, 0] * corner[0] + R[2, 1] * corner[1] + R[2, 2] * corner[2] + t[2]
            out_left &= fx * x + skew * y + (cx + 0.5) * z < 0.0
            out_right &= (width - 0.5 - cx) * z - fx * x - skew * y < 0.0
            out_top &= fy * y + (cy + 0.5) * z < 0.0
            out_bottom &= (height - 0.5 - cy) * z - fy * y < 0.0
            out_near &= z < min_depth
            out_far &= z > max_depth
            zmin = min(zmin, z)
            if z > 0.0:
                u, v = (fx * x + skew * y) / z + cx, fy * y / z + cy
                umin, umax, vmin, vmax = min(umin, u), max(umax, u), min(vmin, v), max(vmax, v)
        if out_left or out_right or out_top or out_bottom or out_near or out_far:
            continue
        near[cell] = zmin
        if zmin > min_depth:  # every corner in front: the projected corners bound the cell
            rect[cell, 0] = max(0, int(np.floor(vmin)) - 1)
            rect[cell, 1] = min(height - 1, int(np.ceil(vmax)) + 1)
            rect[cell, 2] = max(0, int(np.floor(umin)) - 1)
            rect[cell, 3] = min(width - 1, int(np.ceil(umax)) + 1)
    # nearest cells first, so nearer surfaces are drawn before the cells they may hide entirely
    for cell in np.argsort(near):
        if near[cell] == np.inf:
            break
        if rect[cell, 0] >= 0 and _hidden(depth, rect[cell], near[cell]):
            continue
        for n in range(cell_starts[cell], cell_starts[cell + 1]):
            r = np.float64(radii[n])
            if r <= 0.0:
                continue
            px, py, pz = np.float64(points[n, 0]), np.float64(points[n, 1]), np.float64(points[n, 2])
            x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + t[0]
            y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + t[1]
            z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + t[2]
            if z - r <= min_depth or z - r > max_depth:
                continue
            tested += 1
            qx, qy, qz = np.float64(normals[n, 0]), np.float64(normals[n, 1]), np.float64(normals[n, 2])
            if qx == NO_NORMAL and qy == NO_NORMAL and qz == NO_NORMAL:
                norm = np.sqrt(x * x + y * y + z * z)
                nx, ny, nz = x / norm, y / norm, z / norm
            else:
                nx = R[0, 0] * qx + R[0, 1] * qy + R[0, 2] * qz
                ny = R[1, 0] * qx + R[1, 1] * qy + R[1, 2] * qz
                nz = R[2, 0] * qx + R[2, 1] * qy + R[2, 2] * qz
            yn = y / z
            u = fx * x / z + skew * yn + cx
            v = fy * yn + cy
            reach = min(r / (z - r), max_footprint / fx)  # the disc's angular half-extent, bounded
            ru, rv = fx * reach + abs(skew) * reach, fy * reach
            i0, i1 = max(0, int(np.ceil(v - rv))), min(height - 1, int(np.floor(v + rv)))
            j0, j1 = max(0, int(np.ceil(u - ru))), min(width - 1, int(np.floor(u + ru)))
            plane = nx * x + ny * y + nz * z
            r2 = r * r
            for i in range(i0, i1 + 1):
                dy = (i - cy) / fy
                for j in range(j0, j1 + 1):
                    dx = (j - cx - skew * dy) / fx
                    facing = nx * dx + ny * dy + nz
                    if facing * facing < min_cos * min_cos * (dx * dx + dy * dy + 1.0):
                        continue
                    zt = plane / facing
                    if zt <= min_depth or zt > max_depth:
                        continue
                    ex, ey, ez = zt * dx - x, zt * dy - y, zt - z
                    if ex * ex + ey * ey + ez * ez > r2:
                        continue
                    current = depth[i, j]
                    if current == 0.0 or zt < current:
                        depth[i, j] = zt
                        winner[i, j] = winner_offset + n
    return tested
