"""Where shards come from: one source per kind of dataset.

A source plans the units of its sequences (with the config hash that marks each finished)
and yields, for each unit, one `FrameRecord` or `Skip` per planned frame, in order;
`preprocess.driver.build` does everything else (resume, progress, writing, workers, the
manifest) the same way for every source.

- `preprocess.sources.kitti360`: KITTI-360 raw data, LiDAR depth, semantic building masks
- `preprocess.sources.colmap`: one COLMAP / ETH3D scene, sparse-point or dense GT depth
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from shards import ImageSize

from ..record import Dropped, FrameRecord, Skip

FrameInputs = TypeVar("FrameInputs")


@dataclass
class UnitPlan(Generic[FrameInputs]):
    """A fixed run of one sequence's frames, built and committed as a whole: the granularity
    of resuming and of parallel work."""

    sequence: str
    name: str  # unique within the sequence; part of the unit's file names
    size: ImageSize  # stored size of all its frames
    frames: dict[int, FrameInputs]  # frame -> what the source needs to build it, in build order
    config_hash: str  # settings + input fingerprint; the index file carries it once finished


@dataclass
class SequencePlan:
    """A sequence's units and the frames skipped before building; `error` instead when the
    sequence cannot be built at all."""

    name: str
    units: list[UnitPlan] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # frame -> reason
    details: dict[str, object] = field(default_factory=dict)  # more of its manifest entry
    error: str | None = None


class Source(Protocol):
    """What the driver needs from a dataset. A source crosses into worker processes, so it
    must pickle."""

    dataset: str  # the index's dataset column
    progress_label: str

    def check(self) -> None:
        """Fail fast on bad settings or unusable inputs, before workers start."""

    def plan(self) -> list[SequencePlan]:
        """Every selected sequence with its units."""

    def frames_per_shard(self, size: ImageSize) -> int:
        """Frames per shard file for frames of `size`."""

    def records(self, unit: UnitPlan) -> Iterator[FrameRecord | Skip | Dropped]:
        """One record or skip per planned frame of `unit`, in order, and counts of unusable
        input elements left out (Dropped). Input problems of a frame are skips; anything else
        raises."""

    def manifest_config(self) -> tuple[str, dict]:
        """(section, config): what the manifest records under configs[section]."""
