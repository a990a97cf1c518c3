"""Masks, colour match and paste-back for aligned face crops: pure functions, ROI-only.

A neural swapper or enhancer works on an aligned square crop (`farm.face.onnx.align`); what comes
out has to go back into the frame. This follows FaceFusion's ``face_helper.paste_back``
(faceswap.md §3) rather than insightface's ``INSwapper.get(paste_back=True)``: insightface warps
the crop, a white square and a difference mask to the *full frame* and blends the full frame,
which is where its 5 fps come from; here only the bounding rectangle of the warped crop is read,
warped into and written::

    crop corners ─inverse affine─► floor/ceil, clipped to the frame ─► ROI
    crop  ─warp (bilinear, BORDER_REPLICATE)─► ROI-sized
    mask  ─warp (bilinear, zero outside)─────► ROI-sized, clipped to [0, 1]
    ROI = ROI·(1−m) + crop·m  (float32, rounded back to uint8)

Where the warped mask is exactly 0 the blend is ``ROI·1 + crop·0`` in float32, which is the ROI
value itself, so those pixels come back bit-identical: a swap touches only the face.

Masks are ``float32`` in [0, 1] at crop size, combined with an element-wise minimum (FaceFusion's
``numpy.minimum.reduce``), so each mask can only take pixels away.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Padding = tuple[float, float, float, float]
"""Box-mask padding in percent of the crop size: top, right, bottom, left (FaceFusion order)."""


def box_mask(size: int, blur: float = 0.3, padding: Padding = (0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
    """FaceFusion's box mask (``create_box_mask``, §2.8) for a ``size``² crop, ``float32``.

    A border of ``max(blur_amount // 2, 1, padding% · size)`` pixels is zeroed on each side, then
    the mask is blurred with σ = ``blur_amount / 4`` where ``blur_amount = int(size · blur / 2)``.
    The zero border keeps the crop's own edge (where BORDER_REPLICATE smears frame pixels) out of
    the blend, and the blur feathers the seam. ``blur`` is FaceFusion's ``face_mask_blur``
    (default 0.3), ``padding`` its ``face_mask_padding``.
    """
    if size <= 0:
        raise ValueError(f"mask size must be positive, got {size}")
    if blur < 0:
        raise ValueError(f"mask blur must be >= 0, got {blur}")
    if any(p < 0 or p > 100 for p in padding) or len(padding) != 4:
        raise ValueError(f"padding is four percentages in [0, 100], got {padding}")
    blur_amount = int(size * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    top, right, bottom, left = (max(blur_area, int(size * p / 100)) for p in padding)
    mask = np.ones((size, size), dtype=np.float32)
    mask[:top, :] = 0
    mask[size - bottom :, :] = 0
    mask[:, :left] = 0
    mask[:, size - right :] = 0
    if blur_amount > 0:
        return np.asarray(cv2.GaussianBlur(mask, (0, 0), blur_amount * 0.25), dtype=np.float32)
    return mask


def feather(hard: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """FaceFusion's post-blur for the occlusion and region masks: ``(blur(m).clip(.5, 1) − .5)·2``.

    Blurring a 0/1 mask and keeping only the upper half of the ramp shrinks the mask by about
    half the blur width and feathers its edge, so the transition falls *inside* the region (a
    swapped forehead never bleeds into the hair the parser excluded). σ is in crop pixels.
    """
    blurred = cv2.GaussianBlur(np.clip(hard, 0.0, 1.0).astype(np.float32), (0, 0), sigma)
    return np.asarray((np.clip(blurred, 0.5, 1.0) - 0.5) * 2.0, dtype=np.float32)


def combine_masks(*masks: np.ndarray) -> np.ndarray:
    """The element-wise minimum of crop masks, clipped to [0, 1], ``float32``."""
    if not masks:
        raise ValueError("combine_masks needs at least one mask")
    shapes = {m.shape for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"masks differ in shape: {sorted(shapes)}")
    combined = np.minimum.reduce([np.asarray(m, dtype=np.float32) for m in masks])
    return np.clip(combined, 0.0, 1.0).astype(np.float32)


def paste_region(
    frame_shape: Sequence[int], crop_shape: Sequence[int], matrix: np.ndarray
) -> tuple[int, int, int, int]:
    """The frame rectangle ``(x0, y0, x1, y1)`` (end-exclusive) the crop lands in.

    The crop's four corners through the inverse of ``matrix`` (frame → crop), floored and ceiled,
    clipped to the frame. Empty (``x1 <= x0`` or ``y1 <= y0``) when the face is off-frame.
    """
    height, width = int(frame_shape[0]), int(frame_shape[1])
    crop_h, crop_w = int(crop_shape[0]), int(crop_shape[1])
    inverse = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))
    corners = np.array([[0, 0], [crop_w, 0], [crop_w, crop_h], [0, crop_h]], dtype=np.float64)
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    x0, x1 = int(np.clip(x0, 0, width)), int(np.clip(x1, 0, width))
    y0, y1 = int(np.clip(y0, 0, height)), int(np.clip(y1, 0, height))
    return x0, y0, x1, y1


def paste_back(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> None:
    """Blend ``crop`` (aligned by ``matrix``, frame → crop) into ``frame`` in place, ROI only.

    ``frame`` is BGR ``uint8`` HxWx3, ``crop`` BGR ``uint8`` SxSx3, ``mask`` ``float32`` SxS in
    [0, 1]. Both are resampled straight from crop space into the ROI with ``WARP_INVERSE_MAP``
    and ``matrix`` shifted to the ROI origin: the forward matrix is used as-is instead of being
    inverted twice (once by us, once inside OpenCV), so the round trip crop → frame is as exact as
    bilinear sampling allows. Pixels whose warped mask is 0 are left bit-identical.
    """
    if crop.shape[:2] != mask.shape[:2]:
        raise ValueError(f"crop {crop.shape[:2]} and mask {mask.shape[:2]} differ in size")
    x0, y0, x1, y1 = paste_region(frame.shape, crop.shape, matrix)
    if x1 <= x0 or y1 <= y0:
        return
    forward = np.asarray(matrix, dtype=np.float64).copy()
    # ROI pixel (u, v) is frame pixel (u + x0, v + y0): fold that shift into the forward map.
    forward[:, 2] += forward[:, :2] @ np.array([x0, y0], dtype=np.float64)
    size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    alpha = cv2.warpAffine(
        np.asarray(mask, dtype=np.float32),
        forward,
        size,
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    alpha = np.clip(alpha, 0.0, 1.0)[:, :, None]
    warped = cv2.warpAffine(crop, forward, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    roi = frame[y0:y1, x0:x1]
    blended = roi.astype(np.float32) * (1.0 - alpha) + warped.astype(np.float32) * alpha
    roi[:] = np.clip(np.rint(blended), 0, 255).astype(frame.dtype)


def lab_stats(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAB (uint8 scale) per-channel mean and standard deviation of ``image`` inside ``mask``.

    The same statistics `farm.face.swap` measures for the classic swap (``cv2.meanStdDev`` on the
    8-bit LAB image, std floored at 1 level so a flat patch cannot divide by zero); ``mask`` is
    any array whose nonzero pixels count.
    """
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    mean, std = cv2.meanStdDev(lab, mask=binary)
    return mean.reshape(3), np.maximum(std.reshape(3), 1.0)


def colour_match(
    swapped: np.ndarray, target: np.ndarray, mask: np.ndarray, strength: float = 1.0
) -> np.ndarray:
    """``swapped`` (a crop) with its LAB mean/std moved toward ``target``'s inside ``mask``.

    The neural swappers reproduce the identity's skin tone, not the shot's lighting; a Reinhard
    transfer (Deep-Live-Cam's mouth-mask fix, our classic swap's colour match) pulls the swapped
    face onto the target crop's grade. Statistics are taken where ``mask > 0.5`` (the confident
    face, not the feathered edge) on both crops, the means and stds are interpolated by
    ``strength`` in [0, 1] as in `farm.face.swap`, and the transfer is a per-channel 8-bit LUT on
    the whole crop (the paste mask decides where it shows). Returns a new BGR ``uint8`` crop;
    ``swapped`` itself when ``strength`` is 0 or the mask is empty.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"colour match strength must be in [0, 1], got {strength}")
    if swapped.shape != target.shape or swapped.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"crop shapes differ: swapped {swapped.shape}, target {target.shape}, mask {mask.shape}"
        )
    region = np.asarray(mask) > 0.5
    if strength == 0.0 or not region.any():
        return swapped
    source_mean, source_std = lab_stats(swapped, region)
    target_mean, target_std = lab_stats(target, region)
    mean = source_mean + strength * (target_mean - source_mean)
    std = source_std + strength * (target_std - source_std)
    levels = np.arange(256, dtype=np.float64)[:, None]
    lut = np.clip((levels - source_mean) * (std / source_std) + mean, 0, 255)
    lab = cv2.cvtColor(swapped, cv2.COLOR_BGR2LAB)
    lab = cv2.LUT(lab, np.rint(lut).astype(np.uint8).reshape(256, 1, 3))
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR))
