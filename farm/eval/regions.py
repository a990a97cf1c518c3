"""Face regions and image similarity shared by the video judges (pure functions over arrays).

The face region is an ellipse inscribed in YuNet's box, grown a little: YuNet boxes run from the
brows to the chin, so the ellipse holds the part of the face a swap replaces.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from farm.eval.base import Face

MASK_GROW = 0.10
"""The face ellipse's semi-axes are the box's half-sizes grown by this fraction."""


def face_mask(shape: tuple[int, int], faces: Sequence[Face], grow: float = MASK_GROW) -> np.ndarray:
    """A bool mask of the union of the faces' ellipses."""
    mask = np.zeros(shape, dtype=np.uint8)
    for face in faces:
        x0, y0, x1, y1 = face.box
        centre = (round((x0 + x1) / 2), round((y0 + y1) / 2))
        half_w, half_h = (x1 - x0) / 2 * (1 + grow), (y1 - y0) / 2 * (1 + grow)
        axes = (max(1, round(half_w)), max(1, round(half_h)))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, thickness=-1)
    return mask > 0


def luma(image: np.ndarray) -> np.ndarray:
    """Float32 luma of a BGR uint8 image."""
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.float32)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two luma images (Gaussian window, sigma 1.5; Wang et al. 2004)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a64, b64 = a.astype(np.float64), b.astype(np.float64)

    def blur(x: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.GaussianBlur(x, (11, 11), 1.5), dtype=np.float64)

    mu_a, mu_b = blur(a64), blur(b64)
    var_a = blur(a64 * a64) - mu_a**2
    var_b = blur(b64 * b64) - mu_b**2
    cov = blur(a64 * b64) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of ``values`` where ``mask`` holds; None for an empty mask."""
    return float(values[mask].mean()) if mask.any() else None


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 images in dB (capped at 100 for identical images)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else float(10 * np.log10(255.0**2 / mse))


def crop_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part of ``image`` inside ``box``, clipped to the image (may be empty)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    return image[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]


def face_changed_ssim(source: np.ndarray, output: np.ndarray, face: Face, size: int = 64) -> float:
    """SSIM of the face box of two frames, both resized to ``size``² (1.0 for an empty box)."""
    a, b = crop_box(source, face.box), crop_box(output, face.box)
    if a.size == 0 or b.size == 0:
        return 1.0
    small_a = cv2.resize(luma(a), (size, size), interpolation=cv2.INTER_AREA)
    small_b = cv2.resize(luma(b), (size, size), interpolation=cv2.INTER_AREA)
    return float(ssim_map(small_a, small_b).mean())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator > 0 else 0.0
