"""Five-point face alignment onto the ArcFace 112x112 template.

Every embedder was trained on faces warped by a similarity transform (rotation, uniform scale, translation)
onto the same template, so a probe must be warped the same way or its embedding drifts. The transform is the
closed-form least-squares fit (Umeyama 1991): all five points count, deterministically. A RANSAC/LMEDS estimate
would drop "outlier" landmarks at random and make the same face align differently from frame to frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from gatematch.errors import BadImageError
from gatematch.images import JpegFrame

# Left eye, right eye, nose tip, left mouth corner, right mouth corner (image-left first), 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
_TEMPLATE_SIZE = 112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2,3) similarity matrix M minimising sum |M [src;1] - dst|^2 (Umeyama, no reflection)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(
            f"similarity_transform needs two (K,2) point sets, K >= 2; got {src.shape}, {dst.shape}"
        )
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("similarity_transform: source points are all the same point")
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # the best fit would be a mirror image: forbid it
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (sigma * d).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def norm_crop(
    image: np.ndarray | JpegFrame, landmarks: np.ndarray, size: int = 112, out: np.ndarray | None = None
) -> np.ndarray:
    """The face warped onto the ArcFace template, scaled to `size`; pixels outside the image are black.

    `out` (size,size,3) uint8 is written in place and returned, so a pipeline can keep one buffer per slot.
    A JpegFrame reveals what the warp reads: the crop's corners mapped back into the frame, with the bilinear
    neighbours.
    """
    if not isinstance(image, JpegFrame) and (
        not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3
    ):
        raise BadImageError("norm_crop needs a BGR uint8 image of shape (H,W,3)")
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"norm_crop needs (5,2) finite landmarks, got shape {points.shape}")
    if size < 1:
        raise ValueError(f"norm_crop size must be positive, got {size}")
    if out is not None and (
        out.shape != (size, size, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous
    ):
        raise ValueError(f"norm_crop out must be a C-contiguous uint8 array of shape ({size},{size},3)")
    template = ARCFACE_TEMPLATE * (size / _TEMPLATE_SIZE)
    matrix = similarity_transform(points, template)
    if isinstance(image, JpegFrame):
        # the crop's pixel centres, mapped back (the warp rounds positions to 1/32 of a pixel: one more each side)
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
        mapped = corners @ inverse[:, :2].T + inverse[:, 2]
        (x1, y1), (x2, y2) = np.floor(mapped.min(axis=0)) - 1, np.floor(mapped.max(axis=0)) + 3
        image = image.reveal((int(x1), int(y1), int(x2), int(y2)))
    return cv2.warpAffine(
        image,
        matrix,
        (size, size),
        dst=out,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
