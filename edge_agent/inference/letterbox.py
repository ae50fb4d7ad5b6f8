"""Letterboxing: a BGR frame fitted into the model's input tensor, aspect ratio kept.

The frame is resized (bilinear, or area averaging below half size), centred on a canvas of
the padding colour, normalised per channel as `(pixel - mean) * (1 / std)` in float32 and
laid out NCHW. `Letterboxer` does this into one input tensor it keeps: the padding is
written once per frame size, and only the resized picture is converted on each frame, one
channel plane at a time, straight into its place in the tensor, through a table of what
each of the 256 pixel values becomes. The table is made with OpenCV's own arithmetic, in
the same order as the plain way (convert, subtract, multiply), so the tensor is bit for bit
the same; `tests/inference/test_letterbox.py` checks that.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.inference.decoders import InputSpec

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: scale, then offset by the padding."""

    scale: float
    pad_x: int
    pad_y: int


@dataclass(frozen=True)
class _Geometry:
    fit: Letterbox
    width: int
    height: int
    interpolation: int


def _geometry(width: int, height: int, spec: InputSpec) -> _Geometry:
    scale = min(spec.width / width, spec.height / height)
    new_w = max(1, min(spec.width, round(width * scale)))
    new_h = max(1, min(spec.height, round(height * scale)))
    pad_x, pad_y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    # Bilinear is 3x cheaper than area averaging and as good down to half size; below that
    # (1080p and up into 416) area averaging avoids aliasing.
    interpolation = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    return _Geometry(Letterbox(scale, pad_x, pad_y), new_w, new_h, interpolation)


class Letterboxer:
    """Fits frames into one reused input tensor (see the module docstring).

    Not thread-safe, and each call overwrites the tensor the last one returned: give each
    thread its own, and finish with a tensor before fitting the next frame.
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        # The planes in model order: BGR as it comes, or R, G, B from a BGR frame.
        self._planes = (2, 1, 0) if spec.rgb else (0, 1, 2)
        self._mean = [float(m) for m in spec.mean]
        self._inverse_std = [1.0 / s for s in spec.std]
        self._fill = self._normalise_fill(spec)
        self._tables = self._normalise_tables()
        self.tensor: FloatArray = np.empty((1, 3, spec.height, spec.width), np.float32)
        self._geometry: _Geometry | None = None
        self._size = (0, 0)
        self._resized: npt.NDArray[np.uint8] | None = None

    def _normalise_fill(self, spec: InputSpec) -> FloatArray:
        """The padding colour through the same operations as a pixel of the picture."""
        pixel = np.array([[spec.pad_value]], np.uint8)
        if spec.rgb:
            pixel = np.asarray(cv2.cvtColor(pixel, cv2.COLOR_BGR2RGB), np.uint8)
        values = pixel.astype(np.float32)
        # OpenCV takes a 4-tuple as a per-channel Scalar; its stubs only know arrays.
        cv2.subtract(values, (*self._mean, 0.0), dst=values)  # type: ignore[call-overload]
        cv2.multiply(values, (*self._inverse_std, 0.0), dst=values)  # type: ignore[call-overload]
        return np.asarray(values[0, 0], np.float32)

    def _normalise_tables(self) -> list[FloatArray]:
        """Per channel, what each of the 256 pixel values becomes: a look-up is one pass
        where subtracting and multiplying are two, and gives the very same numbers."""
        tables = []
        for mean, inverse_std in zip(self._mean, self._inverse_std, strict=True):
            values = np.arange(256, dtype=np.float32).reshape(256, 1)
            cv2.subtract(values, mean, dst=values)  # type: ignore[call-overload]
            cv2.multiply(values, inverse_std, dst=values)  # type: ignore[call-overload]
            tables.append(np.ascontiguousarray(values.reshape(256)))
        return tables

    def __call__(self, frame: np.ndarray) -> tuple[FloatArray, Letterbox]:
        """The tensor for one BGR frame (H×W×3 uint8) and how the frame was fitted."""
        height, width = frame.shape[:2]
        geometry = self._geometry
        if geometry is None or self._size != (height, width):
            geometry = self._resize_for(width, height)
        fit = geometry.fit
        resized = cv2.resize(
            frame,
            (geometry.width, geometry.height),
            dst=self._resized,
            interpolation=geometry.interpolation,
        )
        rows = slice(fit.pad_y, fit.pad_y + geometry.height)
        cols = slice(fit.pad_x, fit.pad_x + geometry.width)
        planes = cv2.split(resized)
        for channel, plane in enumerate(self._planes):
            # Written in place through the view: no temporary float image.
            cv2.LUT(planes[plane], self._tables[channel], dst=self.tensor[0, channel, rows, cols])
        return self.tensor, fit

    def _resize_for(self, width: int, height: int) -> _Geometry:
        geometry = _geometry(width, height, self.spec)
        self._geometry, self._size = geometry, (height, width)
        self._resized = np.empty((geometry.height, geometry.width, 3), np.uint8)
        self.tensor[0] = self._fill[:, None, None]
        return geometry


def letterbox(frame: np.ndarray, spec: InputSpec) -> tuple[FloatArray, Letterbox]:
    """A new input tensor for one BGR frame (for one-off use; `Letterboxer` reuses one)."""
    return Letterboxer(spec)(frame)
