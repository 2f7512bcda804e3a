"""Fault cases of dataset-provided paths: COLMAP image names that would leave the image,
mask or depth folders ('../', absolute) are refused naming the model and the image, before
any file is read; shard paths stored in the index are covered in test_shard_faults.py.

Cases are marked `fault(outcome, harm)` as described in tests/faults/README.md.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.errors import InputError
from preprocess.sources.colmap import ColmapConfig, ColmapScene, ColmapSource


def tiny_model(folder: Path, names: list[str]) -> Path:
    """A COLMAP text model with one 28x14 pinhole camera and posed images of these names."""
    folder.mkdir(parents=True)
    (folder / "cameras.txt").write_text("1 PINHOLE 28 14 20 20 14 7\n")
    images = "".join(f"{i} 1 0 0 0 0 0 {i} 1 {name}\n\n" for i, name in enumerate(names, start=1))
    (folder / "images.txt").write_text(images)
    (folder / "points3D.txt").write_text("")
    return folder


@pytest.mark.fault("named_error", "silent_wrong_output")
@pytest.mark.parametrize("name", ["../secret.png", "sub/../../secret.png", "/data/secret.png"])
def test_image_name_leaving_its_folder_is_refused(tmp_path, name):
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.zeros((14, 28, 3), np.uint8))
    images = tmp_path / "scene" / "images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "a.png"), np.zeros((14, 28, 3), np.uint8))
    model = tiny_model(tmp_path / "scene" / "model", ["a.png", name])
    source = ColmapSource(ColmapScene("scene", model, images, masks=images), ColmapConfig(width=28))
    with pytest.raises(InputError, match=rf"model: image name '{name}' must be a relative path inside"):
        source.plan()
    out = tmp_path / "out"
    args = ["colmap", "--model", str(model), "--images", str(images), "--name", "scene", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "must be a relative path inside" in " ".join(result.output.split())
    assert not out.exists()


def test_nested_relative_names_are_accepted(tmp_path):
    images = tmp_path / "images"
    (images / "cam0").mkdir(parents=True)
    cv2.imwrite(str(images / "cam0" / "a.png"), np.zeros((14, 28, 3), np.uint8))
    model = tiny_model(tmp_path / "model", ["cam0/a.png"])
    (plan,) = ColmapSource(ColmapScene("scene", model, images), ColmapConfig(width=28)).plan()
    assert [len(unit.frames) for unit in plan.units] == [1]
