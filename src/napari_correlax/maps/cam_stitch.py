"""From low-resolution CAM maps to one map in original image pixels (docs/method.md §8).

- :func:`to_input_size` takes maps from the target layer's resolution to the input's:
  for ``scale="raw"`` resized the way pytorch-grad-cam resizes (``cv2.resize``, bilinear,
  pixel centres aligned), for ``scale="window"`` exactly what a call of the library
  returns for one target layer (its min–max scaling ``scale_cam_image`` with the resize,
  then ``scale_cam_image`` again over the layers' mean).
- :class:`Stitcher` averages window maps where windows overlap: the sum of the maps of
  every evaluated window covering a pixel divided by their number, NaN where none does.
  Raw maps can be added at the target layer's resolution (:meth:`Stitcher.add_lowres`):
  ``cv2.resize``'s bilinear interpolation is separable and linear, ``up(m) = A m Bᵀ`` with
  ``A``, ``B`` the resize of unit vectors (:func:`interpolation_matrix`), so the windows of
  one grid row are summed after the horizontal step and expanded vertically once, which
  moves far less memory than adding every full-size window map.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCALES", "Stitcher", "fuse_layers", "interpolation_matrix", "to_input_size",
           "upsample"]

#: ``"raw"``: the method's own units (after its ReLU), comparable across windows;
#: ``"window"``: each window's (or the global image's) map min–max scaled to [0, 1] by
#: the library's ``scale_cam_image``, as users of the library see it.
SCALES = ("raw", "window")


def upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(N, h, w)`` maps → ``(N, rows, cols)`` float32, bilinear (``cv2.resize`` with its
    default ``INTER_LINEAR``, as pytorch-grad-cam's ``scale_cam_image`` resizes)."""
    import cv2

    rows, cols = int(shape[0]), int(shape[1])
    out = np.empty((len(maps), rows, cols), dtype=np.float32)
    maps = np.asarray(maps, dtype=np.float32)
    for k in range(len(maps)):
        cv2.resize(maps[k], (cols, rows), dst=out[k])
    return out


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of ``cv2.resize``'s bilinear interpolation along one axis:
    column ``i`` is the resize of the unit vector ``e_i`` (so ``A @ v`` resizes ``v``)."""
    import cv2

    eye = np.eye(int(n_in), dtype=np.float32)
    return np.stack([cv2.resize(np.ascontiguousarray(eye[:, i : i + 1]), (1, int(n_out)))[:, 0]
                     for i in range(int(n_in))], axis=1)


def to_input_size(maps: np.ndarray, shape: tuple[int, int], scale: str) -> np.ndarray:
    """``(N, h, w)`` maps (after the method's ReLU) → ``(N, rows, cols)`` float32.

    ``"raw"``: :func:`upsample`. ``"window"``: each map as the library returns it,
    ``scale_cam_image(scale_cam_image(m, size))``, where ``scale_cam_image`` maps
    ``m ↦ (m − min m) / (max(m − min m) + 1e-7)`` (resizing after scaling when given a size);
    the second pass is the library's rescaling after averaging over target layers, which
    also matters with one layer when the map's range is not large next to 1e-7.
    """
    if scale == "raw":
        return upsample(maps, shape)
    if scale != "window":
        raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")
    from pytorch_grad_cam.utils.image import scale_cam_image

    if len(maps) == 0:
        return np.zeros((0, int(shape[0]), int(shape[1])), dtype=np.float32)
    size = (int(shape[1]), int(shape[0]))
    return scale_cam_image(scale_cam_image(np.asarray(maps, dtype=np.float32), size))


def fuse_layers(per_layer: list[np.ndarray], shape: tuple[int, int], scale: str
                ) -> np.ndarray:
    """Maps of several target layers (each ``(N, h_l, w_l)``, after the method's ReLU,
    the same ``N`` images) → ``(N, rows, cols)`` float32 at the input's size.

    ``"window"``: what a call of pytorch-grad-cam with these target layers returns: each
    layer's maps min–max scaled and resized (``scale_cam_image(m, size)``), their mean,
    scaled again. ``"raw"``: each layer's map resized (:func:`upsample`) and divided by
    the number of input pixels one of its positions covers (``rows·cols / (h_l·w_l)``),
    then the mean over layers: every layer's map becomes a density per input pixel, so
    stages of different resolution add on one footing and windows stay comparable.
    """
    rows, cols = int(shape[0]), int(shape[1])
    if scale == "window":
        from pytorch_grad_cam.utils.image import scale_cam_image

        scaled = [scale_cam_image(np.asarray(m, dtype=np.float32), (cols, rows))
                  for m in per_layer]
        return scale_cam_image(np.mean(np.stack(scaled), axis=0)).astype(np.float32)
    if scale != "raw":
        raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")
    dens = [upsample(m, (rows, cols)) * (m.shape[-2] * m.shape[-1] / (rows * cols))
            for m in per_layer]
    return np.mean(np.stack(dens), axis=0).astype(np.float32)


class Stitcher:
    """Overlap-averaged maps of square windows in original image pixels.

    Parameters
    ----------
    n_maps:
        Maps per window (one per label, or one for label-free methods).
    image_shape:
        ``(H, W)`` of the original image.
    window:
        Window side, pixels.

    Windows are placed by their top-left corner ``(row, col)`` in original image pixels;
    parts outside the image are dropped. Sums are kept in float32 (at most about
    ``(window / stride)²`` terms per pixel).
    """

    def __init__(self, n_maps: int, image_shape: tuple[int, int], window: int) -> None:
        h, w = int(image_shape[0]), int(image_shape[1])
        self.window = int(window)
        self.total = np.zeros((int(n_maps), h, w), dtype=np.float32)
        self.count = np.zeros((h, w), dtype=np.float32)
        # add_lowres: per window row (top row in image pixels), the sum of the windows'
        # horizontally resized maps over columns [-window, W + window).
        self._strips: dict[int, np.ndarray] = {}
        self._rows: np.ndarray | None = None
        self._cols_t: np.ndarray | None = None

    def _place(self, r: int, c: int) -> tuple[int, int, int, int] | None:
        """The image part ``(r0, r1, c0, c1)`` of the window at ``(r, c)``, counted."""
        s = self.window
        h, w = self.count.shape
        r0, c0, r1, c1 = max(r, 0), max(c, 0), min(r + s, h), min(c + s, w)
        if r0 >= r1 or c0 >= c1:
            return None
        self.count[r0:r1, c0:c1] += 1.0
        return r0, r1, c0, c1

    def add(self, corners: np.ndarray, maps: np.ndarray) -> None:
        """Add windows: ``corners`` ``(B, 2)`` top-left ``(row, col)``, original pixels;
        ``maps`` ``(n_maps, B, window, window)``."""
        for b, (r, c) in enumerate(np.asarray(corners, dtype=np.int64).tolist()):
            part = self._place(r, c)
            if part is not None:
                r0, r1, c0, c1 = part
                self.total[:, r0:r1, c0:c1] += maps[:, b, r0 - r : r1 - r, c0 - c : c1 - c]

    def add_lowres(self, corners: np.ndarray, maps: np.ndarray) -> None:
        """Add windows whose maps ``(n_maps, B, h, w)`` are still at the target layer's
        resolution; the same as :meth:`add` of their :func:`upsample` to the window."""
        s = self.window
        n, _, h, w = maps.shape
        if self._rows is None:
            self._rows = interpolation_matrix(h, s)
            self._cols_t = np.ascontiguousarray(interpolation_matrix(w, s).T)
        width = self.count.shape[1] + 2 * s
        for b, (r, c) in enumerate(np.asarray(corners, dtype=np.int64).tolist()):
            if self._place(r, c) is None:
                continue
            strip = self._strips.get(r)
            if strip is None:
                strip = self._strips[r] = np.zeros((n, h, width), dtype=np.float32)
            strip[:, :, c + s : c + 2 * s] += maps[:, b] @ self._cols_t

    def _expand_strips(self) -> None:
        s = self.window
        h, w = self.count.shape
        for r, strip in self._strips.items():
            r0, r1 = max(r, 0), min(r + s, h)
            rows = self._rows[r0 - r : r1 - r]
            self.total[:, r0:r1] += np.matmul(rows, strip[:, :, s : s + w])
        self._strips.clear()

    def result(self) -> np.ndarray:
        """``(n_maps, H, W)`` float32 mean of the windows covering each pixel, NaN where
        none did. Reuses the sums' memory; call once."""
        self._expand_strips()
        covered = self.count > 0
        np.divide(self.total, self.count, out=self.total, where=covered)
        self.total[:, ~covered] = np.nan
        return self.total
