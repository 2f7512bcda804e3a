"""The one result type every metric function returns, so the evaluator stores them alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MetricResult:
    """Metric values per group (e.g. ``all``, ``building/0-10m``, ``pose``) and the alignment record.

    Every group carries a ``count`` of the samples it averages; empty groups hold NaN metrics.
    """

    groups: dict[str, dict[str, float]]
    align: Mapping[str, object] = field(default_factory=dict)

    def rows(self) -> list[dict[str, object]]:
        """Long-format rows, one per group, each with the alignment written next to the numbers."""
        return [{"group": name, **self.align, **values} for name, values in self.groups.items()]
