"""KITTI-360's fused static point clouds: `data_3d_semantics/train/<seq>/static/<start>_<end>.ply`.

Each file is one window of frames start..end: a binary little-endian PLY whose vertices are
float x, y, z (world frame of poses.txt), uchar red, green, blue, int semantic, int instance,
uchar visible, float confidence. The reader is strict: a malformed header, a missing required
property or a file shorter than its header declares is an InputError naming the file;
non-finite points are dropped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

from ...errors import InputError

# the layout KITTI-360 writes (and the synthetic scene copies)
STATIC_PLY_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("x", "float"), ("y", "float"), ("z", "float"),
    ("red", "uchar"), ("green", "uchar"), ("blue", "uchar"),
    ("semantic", "int"), ("instance", "int"), ("visible", "uchar"), ("confidence", "float"),
)  # fmt: skip
REQUIRED_PROPERTIES = ("x", "y", "z", "semantic")
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip
WINDOW_NAME = re.compile(r"^(\d+)_(\d+)\.ply$")
MAX_HEADER_BYTES = 1 << 16


@dataclass(frozen=True)
class Window:
    """One static-cloud file and the frames it covers (both ends included)."""

    path: Path
    start: int
    end: int

    def covers(self, frame: int) -> bool:
        return self.start <= frame <= self.end


@dataclass
class StaticCloud:
    """The points of one window that are usable: finite coordinates and their labels."""

    points: np.ndarray  # (N, 3) float32, world frame (read-only where mapped from the file)
    semantic: np.ndarray  # (N,) uint8 KITTI-360 label ids, clipped to 0..255 as the 2D labels are
    nonfinite_dropped: int


def static_dir(root: Path, sequence: str) -> Path:
    return Path(root) / "data_3d_semantics" / "train" / sequence / "static"


def parse_window_name(path: Path) -> Window:
    """`<start>_<end>.ply` -> Window; any other name is an InputError naming the file."""
    match = WINDOW_NAME.match(path.name)
    if match is None:
        raise InputError(path, "static window name must be <start>_<end>.ply (frame numbers)")
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise InputError(path, f"static window ends (frame {end}) before it starts (frame {start})")
    return Window(path, start, end)


def list_windows(folder: Path) -> list[Window]:
    """Every window of a static/ folder, in frame order."""
    windows = [parse_window_name(p) for p in Path(folder).iterdir() if p.is_file()]
    return sorted(windows, key=lambda w: (w.start, w.end))


def _header(path: Path) -> tuple[np.dtype, int, int]:
    """(vertex dtype, vertex count, header bytes) of a binary little-endian PLY."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0:
        raise InputError(path, "malformed PLY header: must start with 'ply' and close with 'end_header'")
    lines = head[:end].decode("ascii", errors="replace").splitlines()[1:]
    fields: list[tuple[str, str]] = []
    count, element, formatted = None, None, False
    for line in lines:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if words[1:] != ["binary_little_endian", "1.0"]:
                raise InputError(
                    path,
                    f"malformed PLY header: format {' '.join(words[1:])!r} is not binary_little_endian 1.0",
                )
            formatted = True
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            element = words[1]
            if element == "vertex":
                count = int(words[2])
            elif int(words[2]) > 0:
                raise InputError(path, f"malformed PLY header: unexpected element {element!r} with data")
        elif words[0] == "property" and len(words) == 3 and words[1] in PLY_TYPES:
            if element == "vertex":
                fields.append((words[2], PLY_TYPES[words[1]]))
        else:
            raise InputError(path, f"malformed PLY header line {line!r}")
    if not formatted or count is None:
        raise InputError(path, "malformed PLY header: no format line or no vertex element")
    names = [name for name, _ in fields]
    missing = [p for p in REQUIRED_PROPERTIES if p not in names]
    if missing:
        raise InputError(
            path,
            f"PLY lacks required vertex propert{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}",
        )
    if len(set(names)) != len(names):
        raise InputError(path, "malformed PLY header: a vertex property is declared twice")
    return np.dtype(fields), count, end + len(b"end_header\n")


def check_static_ply(path: Path) -> tuple[np.dtype, int, int]:
    """Validate header and size without reading the points: (vertex dtype, count, data offset)."""
    dtype, count, offset = _header(path)
    size = path.stat().st_size
    if size < offset + count * dtype.itemsize:
        raise InputError(
            path,
            f"short file: header declares {count} vertices ({count * dtype.itemsize} bytes), "
            f"file holds {size - offset} bytes after the header",
        )
    return dtype, count, offset


def read_static_ply(path: Path) -> StaticCloud:
    """The window's finite points and labels (non-finite points dropped and counted). Where
    every point is finite and x, y, z are consecutive floats (as KITTI-360 writes them), the
    points are the file's mapped rows, read-only, not a copy: fresh memory costs a page fault
    per 4 KiB, and a copy of a window's points was a tenth of its preparation."""
    path = Path(path)
    dtype, count, offset = check_static_ply(path)
    if count == 0:
        return StaticCloud(np.zeros((0, 3), np.float32), np.zeros(0, np.uint8), 0)
    vertices = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))
    rows = mapped_points(vertices)
    if rows is not None and count_nonfinite(rows) == 0:
        return StaticCloud(rows, clipped_labels(vertices["semantic"]), 0)
    x, y, z, semantic = (vertices[name] for name in ("x", "y", "z", "semantic"))
    points, semantic, kept = unpack_finite_rows(x, y, z, semantic)
    del vertices, x, y, z
    if kept < count:
        points, semantic = points[:kept].copy(), semantic[:kept].copy()
    return StaticCloud(points, semantic, count - kept)


def mapped_points(vertices: np.ndarray) -> np.ndarray | None:
    """The (N, 3) float32 view of the rows' x, y, z, or None unless they are consecutive
    little-endian floats."""
    fields, start = vertices.dtype.fields, vertices.dtype.fields["x"][1]
    if any(fields[name][:2] != (np.dtype("<f4"), start + 4 * a) for a, name in enumerate("xyz")):
        return None
    return np.lib.stride_tricks.as_strided(
        vertices["x"], shape=(len(vertices), 3), strides=(vertices.dtype.itemsize, 4), writeable=False
    )


@nb.njit(cache=True, nogil=True)
def count_nonfinite(points: np.ndarray) -> int:
    """Rows of `points` with a non-finite coordinate."""
    bad = 0
    for n in range(points.shape[0]):
        bad += not (np.isfinite(points[n, 0]) and np.isfinite(points[n, 1]) and np.isfinite(points[n, 2]))
    return bad


@nb.njit(cache=True, nogil=True, inline="always")
def _clip_label(label: int) -> np.uint8:
    """A label id as the 2D labels store it: uint8, clipped to 0..255."""
    return np.uint8(min(max(label, 0), 255))


@nb.njit(cache=True, nogil=True)
def clipped_labels(semantic: np.ndarray) -> np.ndarray:
    """Every row's label, clipped to uint8."""
    labels = np.empty(semantic.shape[0], dtype=np.uint8)
    for n in range(semantic.shape[0]):
        labels[n] = _clip_label(semantic[n])
    return labels


@nb.njit(cache=True, nogil=True)
def unpack_finite_rows(x: np.ndarray, y: np.ndarray, z: np.ndarray, semantic: np.ndarray) -> tuple:
    """(points (N, 3) float32, labels (N,) uint8 (ids clipped to 0..255), how many) of the
    rows whose float32 coordinates are all finite, packed first, in file order."""
    points = np.empty((x.shape[0], 3), dtype=np.float32)
    labels = np.empty(x.shape[0], dtype=np.uint8)
    kept = 0
    for n in range(x.shape[0]):
        px, py, pz = np.float32(x[n]), np.float32(y[n]), np.float32(z[n])
        if np.isfinite(px) and np.isfinite(py) and np.isfinite(pz):
            points[kept, 0], points[kept, 1], points[kept, 2] = px, py, pz
            labels[kept] = _clip_label(semantic[n])
            kept += 1
    return points, labels, kept


def write_static_ply(path: Path, vertices: np.ndarray) -> None:
    """Write a structured vertex array (fields of STATIC_PLY_PROPERTIES) as a KITTI-360 window."""
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}"]
    header += [f"property {kind} {name}" for name, kind in STATIC_PLY_PROPERTIES]
    header.append("end_header")
    dtype = static_vertex_dtype()
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(np.asarray(vertices, dtype=dtype).tobytes())


def static_vertex_dtype() -> np.dtype:
    return np.dtype([(name, PLY_TYPES[kind]) for name, kind in STATIC_PLY_PROPERTIES])
