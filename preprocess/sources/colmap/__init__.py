"""A COLMAP / ETH3D scene -> shards: `build(ColmapSource(ColmapScene(name, model, images),
ColmapConfig(...)), out)` with `preprocess.driver.build`.

- reader.py: the model (text or binary, via pycolmap), undistortion, per-image rasters
- source.py: the scene's units and the frame records of a unit
"""

from .source import ColmapConfig, ColmapScene, ColmapSource

__all__ = ["ColmapConfig", "ColmapScene", "ColmapSource"]
