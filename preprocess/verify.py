"""`kitti360-prep verify OUT`: read every chunk of every unit (checksums verified) and check
each index file against its unit and the manifest. Problems are collected, not raised, so one
run names everything that is wrong."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from shards.atomic import is_staging
from shards.index import index_config_hash, read_index_file
from shards.integrity import ShardError, unit_dir, verify_unit
from shards.layout import INDEX_DIR, SHARD_FORMAT, SHARDS_DIR, manifest_path, parse_unit_name, shard_relpath

from .manifest import read_manifest, sequence_fingerprint

UnitsFound = dict[str, dict[str, tuple[str | None, int]]]  # "dataset/sequence" -> unit -> (hash, rows)


def verify_output(out: Path) -> tuple[list[str], int, int]:
    """(problems, units checked, frames checked) of the output root `out`."""
    out = Path(out)
    problems: list[str] = []
    try:
        manifest = read_manifest(out)
    except ValueError as exc:
        problems.append(str(exc))
        manifest = {}
    if not manifest:
        problems.append(f"{manifest_path(out)}: missing or empty")
    elif manifest.get("shard_format") != SHARD_FORMAT:
        problems.append(
            f"{manifest_path(out)}: shard format {manifest.get('shard_format')}, this version reads "
            f"{SHARD_FORMAT} (rebuild)"
        )
    found, frames = _verify_units(out, problems)
    _check_manifest(out, manifest.get("sequences", {}), found, problems)
    return problems, sum(len(units) for units in found.values()), frames


def _verify_units(out: Path, problems: list[str]) -> tuple[UnitsFound, int]:
    found: UnitsFound = defaultdict(dict)
    frames = 0
    indexed = set()
    for path in sorted((out / INDEX_DIR).glob("*.parquet")):
        if is_staging(path):
            continue
        try:
            dataset, sequence, unit = parse_unit_name(path.stem)
            rows = read_index_file(path)
        except (ValueError, OSError) as exc:
            problems.append(f"{path}: unreadable index file ({exc})")
            continue
        found[f"{dataset}/{sequence}"][unit] = (index_config_hash(path), len(rows))
        relpath = shard_relpath(dataset, sequence, unit)
        indexed.add(relpath)
        frames += len(rows)
        if rows.empty:
            continue
        foreign = (rows["shard"] != relpath) | (rows["dataset"] != dataset) | (rows["sequence"] != sequence)
        if foreign.any():
            problems.append(f"{path}: {int(foreign.sum())} rows name another unit than {relpath}")
            continue
        try:
            problems += verify_unit(unit_dir(out, relpath), rows)
        except ShardError as exc:
            problems.append(str(exc))
    for folder in sorted((out / SHARDS_DIR).glob("*/*/*.zarr")):
        relpath = folder.relative_to(out).as_posix()
        if not is_staging(folder) and relpath not in indexed:
            problems.append(f"{folder}: unit data without an index file (unfinished: rerun the build)")
    return found, frames


def _check_manifest(out: Path, sequences: dict[str, dict], found: UnitsFound, problems: list[str]) -> None:
    where = manifest_path(out)
    for key, entry in sorted(sequences.items()):
        if "error" in entry:
            continue
        units = found.pop(key, {})
        listed = entry.get("units", [])
        missing = [u for u in listed if u not in units]
        if missing:
            problems.append(f"{where}: {key} lists units without an index file: {', '.join(missing)}")
            continue
        extra = sorted(set(units) - set(listed))
        if extra:
            problems.append(f"{where}: {key} does not list indexed units {', '.join(extra)}")
        hashes = [units[u][0] or "" for u in listed]
        if sequence_fingerprint(hashes) != entry.get("fingerprint"):
            problems.append(f"{where}: {key} fingerprint does not match its units' config hashes")
        rows = sum(units[u][1] for u in listed)
        if rows != entry.get("frames_written"):
            problems.append(f"{where}: {key} says {entry.get('frames_written')} frames, its index has {rows}")
    for key in sorted(found):
        problems.append(f"{where}: no entry for indexed sequence {key}")
