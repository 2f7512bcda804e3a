"""Atomic writer of one unit: a Zarr v3 group (one frame per chunk, several frames per
shard file) plus its Parquet index rows.

Each full shard is compressed and written on a background thread while the caller
prepares the next frames; at most one shard write is in flight.

Every chunk ends in a crc32c checksum (zarr's crc32c codec), so damage raises on read.
Data goes to a temporary group first; only a complete group, whose shard files are all
present and whose last frame reads back equal to what was written, is renamed into place,
and the index file (the completion marker) is written after that. A killed run therefore
leaves either a finished unit or debris that `discard_debris` removes, never a partial
unit that looks finished.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.array_spec import ArraySpec as ChunkSpec
from zarr.core.buffer import Buffer

from .atomic import discard_staging, publish_dir, staging_path
from .index import write_index_file
from .integrity import ShardError, read_rows, shard_files
from .layout import ARRAY_SPECS, index_path, shard_relpath

DEFAULT_FRAMES_PER_SHARD = 16


# Per-frame arrays smaller than this (intrinsics, poses) are stored raw: compressing a few
# dozen bytes saves nothing and costs a codec call per frame.
MIN_COMPRESSED_BYTES = 1024


class _InlineBloscCodec(BloscCodec):
    """Blosc that compresses on the event-loop thread that asks for it.

    zarr hands every chunk's compression to a thread pool (`asyncio.to_thread`). The writer
    already runs on its own thread and a shard holds one small chunk per frame and array, so
    those hand-offs cost more CPU than the compression itself (2.2 of 5.3 ms per frame).
    The metadata written is plain "blosc": any zarr reader decodes it."""

    async def _encode_single(self, chunk_bytes: Buffer, chunk_spec: ChunkSpec) -> Buffer | None:
        return self._encode_sync(chunk_bytes, chunk_spec)


def _compressors(frame_bytes: int) -> tuple[BloscCodec | Crc32cCodec, ...]:
    """Chunk codecs after serialisation: lz4 (not for tiny arrays), then the checksum."""
    if frame_bytes < MIN_COMPRESSED_BYTES:
        return (Crc32cCodec(),)
    return (_InlineBloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec())


class UnitWriter:
    """Collects frames of one unit (same image size) and writes them shard by shard."""

    def __init__(
        self,
        out: Path,
        dataset: str,
        sequence: str,
        unit: str,
        height: int,
        width: int,
        capacity: int,
        frames_per_shard: int = DEFAULT_FRAMES_PER_SHARD,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"unit {dataset}/{sequence}/{unit}: capacity must be >= 1")
        self.out = Path(out)
        self.dataset, self.sequence, self.unit = dataset, sequence, unit
        self.height, self.width = height, width
        self.frames_per_shard = max(1, min(frames_per_shard, capacity))
        self.relpath = shard_relpath(dataset, sequence, unit)
        self.final_dir = self.out / self.relpath
        self.tmp_dir = staging_path(self.final_dir)
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.parent.mkdir(parents=True, exist_ok=True)
        # zarr encodes chunks in batches of codec_pipeline.batch_size (default 1); a whole shard
        # per batch costs about a third less CPU per frame. The shard's inner pipeline reads the
        # setting on every write, from any thread, so it is set process-wide and only ever raised.
        if zarr.config.get("codec_pipeline.batch_size") < self.frames_per_shard:
            zarr.config.set({"codec_pipeline.batch_size": self.frames_per_shard})
        group = zarr.open_group(self.tmp_dir, mode="w", zarr_format=3)
        self._arrays = {
            spec.name: group.create_array(
                spec.name,
                shape=(capacity, *spec.frame_shape(height, width)),
                chunks=(1, *spec.frame_shape(height, width)),
                shards=(self.frames_per_shard, *spec.frame_shape(height, width)),
                dtype=spec.dtype,
                compressors=_compressors(spec.frame_bytes(height, width)),
                fill_value=0,
                config={"write_empty_chunks": True},  # frames are rarely empty; skip the check
            )
            for spec in ARRAY_SPECS
        }
        # two sets of shard-sized blocks: one fills while the other is being written, and both
        # are reused, so frames are copied once into warm memory instead of stacked anew per shard
        self._blocks = [self._empty_blocks(), self._empty_blocks()]
        self._filling, self._fill = 0, 0
        self._rows: list[dict[str, object]] = []
        self._written = 0
        self._last_frame: dict[str, np.ndarray] = {}  # of the last shard handed to the writer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._in_flight: Future | None = None

    def add(self, arrays: Mapping[str, np.ndarray], row: Mapping[str, object]) -> None:
        """Queue one frame; `row` holds its index columns except shard/row/height/width."""
        for spec in ARRAY_SPECS:
            shape = spec.frame_shape(self.height, self.width)
            value = arrays[spec.name]
            if value.shape != shape:
                raise ValueError(
                    f"{self.relpath}: frame {row.get('frame')} array {spec.name!r} has shape "
                    f"{value.shape}, expected {shape}"
                )
        index = len(self._rows)
        self._rows.append(
            {**row, "shard": self.relpath, "row": index, "height": self.height, "width": self.width}
        )
        block = self._blocks[self._filling]
        for spec in ARRAY_SPECS:
            block[spec.name][self._fill] = arrays[spec.name]
        self._fill += 1
        if self._fill == self.frames_per_shard:
            self._flush()

    def _empty_blocks(self) -> dict[str, np.ndarray]:
        shape = (self.frames_per_shard,)
        return {
            spec.name: np.empty(shape + spec.frame_shape(self.height, self.width), dtype=spec.dtype)
            for spec in ARRAY_SPECS
        }

    def _flush(self) -> None:
        """Hand the filled block to the writer thread (after the previous shard is done)."""
        if not self._fill:
            return
        start, stop = self._written, self._written + self._fill
        blocks = {name: block[: self._fill] for name, block in self._blocks[self._filling].items()}
        self._last_frame = {name: block[-1] for name, block in blocks.items()}
        self.wait()  # the other block set is written out, so it can be filled next
        self._in_flight = self._pool.submit(self._write, blocks, start, stop)
        self._written, self._fill, self._filling = stop, 0, 1 - self._filling

    def _write(self, blocks: Mapping[str, np.ndarray], start: int, stop: int) -> None:
        for name, block in blocks.items():
            self._arrays[name][start:stop] = block

    def wait(self) -> None:
        """Finish the shard write in flight; re-raises its error."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    @property
    def frames(self) -> int:
        return len(self._rows)

    def commit(
        self,
        config_hash: str,
        skipped: Mapping[int, str] | None = None,
        dropped: Mapping[str, Mapping[int, int]] | None = None,
    ) -> list[dict[str, object]]:
        """Finish the unit: trim arrays, move the group into place, then write the index
        (with the frames skipped and why, and the input elements dropped). A unit whose frames
        were all skipped keeps no data but still gets its index file, so a re-run knows it is
        done."""
        index_file = index_path(self.out, self.dataset, self.sequence, self.unit)
        if not self._rows:
            self.abort()
            write_index_file(index_file, [], config_hash, skipped, dropped)
            return []
        try:
            self._flush()
            self.wait()
            self._pool.shutdown()
            for array in self._arrays.values():
                if array.shape[0] != self._written:
                    array.resize((self._written, *array.shape[1:]))
            self._check_written()
        except BaseException:  # nothing was moved into place yet: discard the temporary group
            self.abort()
            raise
        publish_dir(self.tmp_dir, self.final_dir)
        write_index_file(index_file, self._rows, config_hash, skipped, dropped)
        return self._rows

    def _check_written(self) -> None:
        """The unit counts as written only if every shard file is there with data and its last
        frame reads back (checksums verified) equal to what was handed to the writer."""
        last = self._written - 1
        for name, array in self._arrays.items():
            for path in shard_files(self.tmp_dir, array):
                if not path.is_file() or path.stat().st_size == 0:
                    raise ShardError(path, f"shard of {self.relpath} not written")
            stored = read_rows(self.tmp_dir, array, last)
            if stored.tobytes() != np.ascontiguousarray(self._last_frame[name]).tobytes():
                raise ShardError(self.tmp_dir / name, f"row {last} reads back unlike what was written")

    def abort(self) -> None:
        try:
            self.wait()
        except Exception:  # the unit is being discarded; its write error no longer matters
            pass
        self._pool.shutdown()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def discard_debris(out: Path) -> int:
    """Remove temporary groups/files left by killed runs; returns how many were removed."""
    return discard_staging(out)


def remove_unit(out: Path, dataset: str, sequence: str, unit: str) -> None:
    """Delete a unit's index (first, so it stops counting as finished) and its data."""
    index_path(Path(out), dataset, sequence, unit).unlink(missing_ok=True)
    shutil.rmtree(Path(out) / shard_relpath(dataset, sequence, unit), ignore_errors=True)
