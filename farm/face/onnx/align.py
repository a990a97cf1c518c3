"""5-point face alignment for the neural models: templates, similarity fits, warps.

Every model in the ONNX stack wants its face in a fixed pose: ArcFace at ``arcface_112_v2`` in
112², inswapper at ``arcface_128``, the enhancers at ``ffhq_512``. The templates are in a unit
square (multiply by the crop size) and list the points in insightface's order: image-left eye,
image-right eye, nose tip, image-left mouth corner, image-right mouth corner (faceswap.md §2.1,
FaceFusion's ``WARP_TEMPLATE_SET``).

The fit is the least-squares similarity (Umeyama 1991), the transform insightface's
``face_align.estimate_norm`` gets from ``skimage.transform.SimilarityTransform.estimate``: the
recogniser was trained and evaluated on crops made that way, so embeddings only compare with
insightface's when the crop does. ``cv2.estimateAffinePartial2D`` is *not* used: with LMEDS or
RANSAC it fits a subset of the five points, so one bad point moves the crop differently.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np

from farm.errors import ModelError

ARCFACE_112_V1 = np.array(
    [
        [0.35473214, 0.45658929],
        [0.64526786, 0.45658929],
        [0.50000000, 0.61154464],
        [0.37913393, 0.77687500],
        [0.62086607, 0.77687500],
    ]
)
"""SimSwap's frontal template (× 112 = SimSwap ``src3``)."""

ARCFACE_112_V2 = np.array(
    [
        [0.34191607, 0.46157411],
        [0.65653393, 0.45983393],
        [0.50022500, 0.64050536],
        [0.37097589, 0.82469196],
        [0.63151696, 0.82325089],
    ]
)
"""insightface's ``arcface_dst`` / 112: the ArcFace recogniser's template."""

ARCFACE_128 = np.array(
    [
        [0.36167656, 0.40387734],
        [0.63696719, 0.40235469],
        [0.50019687, 0.56044219],
        [0.38710391, 0.72160547],
        [0.61507734, 0.72034453],
    ]
)
"""``(arcface_dst + [8, 0]) / 128``: inswapper's template."""

FFHQ_512 = np.array(
    [
        [0.37691676, 0.46864664],
        [0.62285697, 0.46912813],
        [0.50123859, 0.61331904],
        [0.39308822, 0.72541100],
        [0.61150205, 0.72490465],
    ]
)
"""FFHQ alignment (× 512 = SimSwap ``ffhq_src``): enhancers, lip sync, 512 crops."""

TemplateName = Literal["arcface_112_v1", "arcface_112_v2", "arcface_128", "ffhq_512"]


def _template(name: str) -> np.ndarray:
    # A function rather than a module-level dict: no module-level mutable state.
    templates = {
        "arcface_112_v1": ARCFACE_112_V1,
        "arcface_112_v2": ARCFACE_112_V2,
        "arcface_128": ARCFACE_128,
        "ffhq_512": FFHQ_512,
    }
    if name not in templates:
        raise ValueError(f"unknown alignment template {name!r}; known: {', '.join(templates)}")
    return templates[name]


def template_points(name: str, size: int) -> np.ndarray:
    """The template ``name`` in pixels of a ``size``² crop, ``(5, 2) float64``.

    ``arcface_112_v2`` follows insightface's ``estimate_norm`` rule: at sizes divisible by 112
    it scales ``arcface_dst``; otherwise at sizes divisible by 128 the 112 template sits in a
    128 frame shifted right by 8 (``(arcface_dst + [8, 0]) * size / 128``), which is exactly
    ``arcface_128 * size``. Every other template simply scales with the crop.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if name == "arcface_112_v2" and size % 112 != 0 and size % 128 == 0:
        ratio = size / 128.0
        return (ARCFACE_112_V2 * 112.0 + np.array([8.0, 0.0])) * ratio
    return _template(name) * float(size)


def similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation) taking ``src`` to
    ``dst``, as a 2x3 ``float64`` matrix (Umeyama's closed form, without reflection)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = float((src_c**2).sum()) / len(src)
    if src_var < 1e-12:
        raise ValueError("degenerate points: all five landmarks coincide")
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1.0
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d)) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def alignment_matrix(points5: np.ndarray, template: str | np.ndarray, size: int) -> np.ndarray:
    """The 2x3 ``float64`` similarity that puts ``points5`` (frame pixels) onto ``template`` in
    a ``size``² crop. ``template`` is a name (see `template_points`) or a ``(5, 2)`` unit-square
    array."""
    if isinstance(template, str):
        target = template_points(template, size)
    else:
        target = np.asarray(template, dtype=np.float64) * float(size)
    points = np.asarray(points5, dtype=np.float64).reshape(-1, 2)
    if points.shape != (5, 2):
        raise ValueError(f"need 5 (x, y) points, got shape {np.shape(points5)}")
    return similarity_lstsq(points, target)


def warp_crop(
    frame: np.ndarray,
    matrix: np.ndarray,
    size: int,
    *,
    border: Literal["constant", "replicate"] = "constant",
) -> np.ndarray:
    """The ``size``² crop ``matrix`` maps out of ``frame`` (bilinear).

    ``constant`` (black) is the default because it is what insightface's ``norm_crop`` does
    for the recogniser and inswapper, so embeddings match theirs for faces at the frame edge.
    ``replicate`` is FaceFusion's choice for crops that get pasted back (no dark seams).
    """
    mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
    return cv2.warpAffine(
        frame,
        np.asarray(matrix, dtype=np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=mode,
        borderValue=0,
    )


def inverse(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (crop pixels back to frame pixels), ``float64``."""
    return np.asarray(cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64)))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points through a 2x3 affine matrix, ``float64``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    return points @ m[:, :2].T + m[:, 2]


INSIGHTFACE_FIX = (
    "pip install --no-deps insightface==2.1 (its declared opencv-python would be a second OpenCV)"
)


def insightface_module(name: str) -> Any:
    """``insightface.<name>``, imported on first use; `ModelError` with the fix if missing.

    Lazy because importing insightface costs seconds (it imports onnx, its app and model zoo)
    and sets ``ORT_DISABLE_TELEMETRY`` in the environment; only workers that run these models
    pay that. Lives here because every wrapper in this package aligns faces and needs it.
    """
    import importlib

    try:
        return importlib.import_module(f"insightface.{name}")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "insightface":
            missing = exc.name
            raise ModelError(
                f"insightface needs {missing}, which is not installed: pip install {missing}"
            ) from None
        raise ModelError(f"the ONNX face models need insightface: {INSIGHTFACE_FIX}") from None
