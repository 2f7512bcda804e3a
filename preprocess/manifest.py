"""OUT/manifest.json: prep config, package version, per-sequence input fingerprints and
skipped frames with reasons. Rewritten atomically after every build."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from shards.atomic import write_text_atomic
from shards.index import INDEX_COLUMNS
from shards.layout import SHARD_FORMAT, manifest_path

DISTRIBUTION = "kitti360-vggt"


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


def files_fingerprint(paths: Iterable[Path]) -> str:
    """Cheap fingerprint of input files (name, size, mtime); missing files count too."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = path.stat()
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def config_hash(config: dict, fingerprint: str) -> str:
    """A unit's completion marker: what it was built with, from which inputs, by which version
    and into which index columns (a unit indexed without a column is rebuilt)."""
    payload = json.dumps(
        {
            "config": config,
            "inputs": fingerprint,
            "version": package_version(),
            "shard_format": SHARD_FORMAT,
            "index": INDEX_COLUMNS,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sequence_fingerprint(unit_hashes: Iterable[str]) -> str:
    """One value that changes whenever any unit of a sequence would be rebuilt."""
    return hashlib.sha256("|".join(unit_hashes).encode()).hexdigest()[:16]


def read_manifest(out: Path) -> dict:
    path = manifest_path(out)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to rebuild") from None


def update_manifest(out: Path, section: str, config: dict, sequences: dict[str, dict]) -> Path:
    """Merge this build's sequences into the manifest (other datasets' entries are kept)."""
    manifest = read_manifest(out)
    manifest["version"] = package_version()
    manifest["shard_format"] = SHARD_FORMAT
    manifest.setdefault("configs", {})[section] = config
    manifest.setdefault("sequences", {}).update(sequences)
    return write_text_atomic(manifest_path(out), json.dumps(manifest, indent=2, sort_keys=True))
