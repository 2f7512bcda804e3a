"""What a stored result was computed from besides the settings: the code that produced its
numbers, the shards it read and the adapter it scored. A result whose inputs changed is
stale and is evaluated again (eval.results.finished compares them)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

import shards
from shards.atomic import is_staging
from shards.index import index_config_hash
from shards.layout import INDEX_DIR, parse_unit_name
from train.run_dir import ADAPTER_FILES

from .windows import EvalWindow

DISTRIBUTION = "kitti360-vggt"
_EVAL = Path(__file__).resolve().parent
_ROOT = _EVAL.parent
# Sources whose change can change a stored number: the metrics and their statistics, window
# rules, inference and the model. Reports, plots and the CLI are left out on purpose.
_NUMBER_SOURCES = (
    "eval/metrics/*.py",
    "eval/align.py",
    "eval/window_metrics.py",
    "eval/windows.py",
    "eval/predict.py",
    "eval/runner.py",
    "eval/results.py",
    "eval/statistics.py",
    "train/model/*.py",
    "shards/windows.py",
    "shards/store.py",
)


def _sha256_files(paths: Iterable[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.relative_to(root).as_posix()}\n".encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def code_version() -> str:
    """Package version and a digest of every source file that produces stored numbers."""
    try:
        package = version(DISTRIBUTION)
    except PackageNotFoundError:
        package = "0+unknown"
    files = sorted(p for pattern in _NUMBER_SOURCES for p in _ROOT.glob(pattern))
    return f"{package}+{_sha256_files(files, _ROOT)}"


def shards_fingerprint(store: shards.ShardStore, windows: list[EvalWindow]) -> str:
    """Changes when any evaluated sequence's units are rebuilt (their config-and-inputs hash) or
    any index row of an evaluated frame changes."""
    wanted = {(w.dataset, w.sequence) for w in windows}
    digest = hashlib.sha256()
    for path in sorted((store.root / INDEX_DIR).glob("*.parquet")):
        if is_staging(path) or parse_unit_name(path.stem)[:2] not in wanted:
            continue
        digest.update(f"{path.name}={index_config_hash(path)}\n".encode())
    index = store.index
    keys = pd.MultiIndex.from_tuples(
        [(w.dataset, w.sequence, f) for w in windows for f in w.frames],
        names=["dataset", "sequence", "frame"],
    )
    rows = index.set_index(["dataset", "sequence", "frame"]).loc[keys.unique()]
    digest.update(pd.util.hash_pandas_object(rows.reset_index(), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def adapter_fingerprint(adapter: Path | None) -> str | None:
    """Digest of an adapter's files (None for the baseline): a retrained adapter under the same
    name is a different checkpoint."""
    if adapter is None:
        return None
    return _sha256_files([Path(adapter) / name for name in ADAPTER_FILES], Path(adapter))
