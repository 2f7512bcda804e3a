"""Between an input image and the model's pixel grid, both ways.

Images are resized for the model by `train.model.preprocess_images` ("crop": width 518, height
a multiple of 14 keeping the aspect, centre-cropped to 518 if taller; "pad": long side 518,
padded with white to 518x518). Its `PixelTransform` maps input pixels to grid pixels with
x' = (x + 0.5) * s - 0.5 + offset (OpenCV pixel centres); here it is inverted to bring depth,
confidence and intrinsics back to each input image's own pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from train.model import PixelTransform, preprocess_images

RESIZE_MODES = ("crop", "pad")


def grid_transform(height: int, width: int, mode: str) -> PixelTransform:
    """The transform `preprocess_images` applies to an image of this size; computed on a meta
    tensor, so only shapes are worked out and no pixel is touched."""
    _, transform = preprocess_images(torch.empty(1, 3, height, width, device="meta"), mode)
    return transform


def to_model_input(image: np.ndarray, mode: str) -> tuple[torch.Tensor, PixelTransform]:
    """uint8 HxWx3 RGB -> float [3, H', W'] in [0, 1] on the model grid, and its transform."""
    frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    resized, transform = preprocess_images(frame, mode)
    return resized[0], transform


@dataclass(frozen=True)
class GridMapping:
    """An input image of size `input_hw` seen through `transform`: where its content lies on
    the grid, and how grid values and intrinsics return to its pixels."""

    transform: PixelTransform
    input_hw: tuple[int, int]

    def _content_span(self, axis: int) -> tuple[int, int]:
        """[first, end) grid rows (axis 0) or columns (axis 1) that show the image."""
        scale = (self.transform.scale_y, self.transform.scale_x)[axis]
        offset = int((self.transform.offset_y, self.transform.offset_x)[axis])
        resized = round(self.input_hw[axis] * scale)
        return max(offset, 0), min(offset + resized, self.transform.out_hw[axis])

    def content_mask(self) -> np.ndarray:
        """bool [H', W']: grid pixels showing the image (False on padding)."""
        (r0, r1), (c0, c1) = self._content_span(0), self._content_span(1)
        mask = np.zeros(self.transform.out_hw, dtype=bool)
        mask[r0:r1, c0:c1] = True
        return mask

    def to_input(self, values: np.ndarray) -> np.ndarray:
        """A grid map [H', W'] resampled (bilinear) at every input pixel's grid position; pixels
        that fall outside the grid content (cropped away) get 0, i.e. no prediction."""
        (r0, r1), (c0, c1) = self._content_span(0), self._content_span(1)
        content = np.ascontiguousarray(values[r0:r1, c0:c1], dtype=np.float32)
        t = self.transform
        h, w = self.input_hw
        xs = (np.arange(w) + 0.5) * t.scale_x - 0.5 + t.offset_x - c0
        ys = (np.arange(h) + 0.5) * t.scale_y - 0.5 + t.offset_y - r0
        map_x = np.broadcast_to(xs.astype(np.float32)[None, :], (h, w))
        map_y = np.broadcast_to(ys.astype(np.float32)[:, None], (h, w))
        out = cv2.remap(content, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside_x = (xs >= -0.5) & (xs <= content.shape[1] - 0.5)
        inside_y = (ys >= -0.5) & (ys <= content.shape[0] - 0.5)
        out[~(inside_y[:, None] & inside_x[None, :])] = 0.0
        return out

    def intrinsics_to_input(self, grid_intrinsics: np.ndarray) -> np.ndarray:
        """3x3 intrinsics in grid pixels -> the same camera in the input image's pixels."""
        t = self.transform
        inverse = PixelTransform(
            1 / t.scale_x, 1 / t.scale_y, -t.offset_x / t.scale_x, -t.offset_y / t.scale_y, self.input_hw
        )
        return inverse.apply_to_intrinsics(torch.as_tensor(grid_intrinsics, dtype=torch.float64)).numpy()
