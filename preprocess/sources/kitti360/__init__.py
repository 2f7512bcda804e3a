"""KITTI-360 raw data -> shards: `build(Kitti360Source(root, Kitti360Config(...)), out)` with
`preprocess.driver.build`.

- reader.py: calibration, poses, sweeps, images, semantics, split lists (DESIGN.md chain)
- sweeps.py: a frame's depth from its sweep and its +-N registered neighbours
- source.py: units of each sequence and the frame records of a unit
"""

from .source import Kitti360Config, Kitti360Source
from .sweeps import DepthSettings

__all__ = ["DepthSettings", "Kitti360Config", "Kitti360Source"]
