"""Pure geometry of 68-point faces: boxes, IoU, alignment, triangulation and piecewise-affine maps.

Landmarks are ``float32`` arrays of shape ``(68, 2)`` in pixel ``(x, y)``, iBUG 300-W order::

    0-16 jaw   17-21 / 22-26 brows   27-35 nose   36-41 / 42-47 eyes
    48-59 outer lips   60-67 inner lips

Boxes are ``(x0, y0, x1, y1)`` float tuples, end-exclusive like slices.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[float, float, float, float]
Landmarks = np.ndarray
"""(68, 2) float32 array of (x, y) pixel positions."""

JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)

FFHQ_5_TEMPLATE = np.array(
    [
        [0.37691676, 0.46864664],
        [0.62285697, 0.46912813],
        [0.50123859, 0.61331904],
        [0.39308822, 0.72541100],
        [0.61150205, 0.72490465],
    ],
    dtype=np.float32,
)
"""Left eye, right eye, nose tip and mouth corners in a unit square (FFHQ 512 alignment)."""


def box_of(points: np.ndarray) -> Box:
    """The tight box around a set of points."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_width(box: Box) -> float:
    return box[2] - box[0]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def expand_box(box: Box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow ``box`` by ``margin`` times its size on each side and clip it to the frame (ints)."""
    w, h = box[2] - box[0], box[3] - box[1]
    x0 = int(np.floor(max(0.0, box[0] - margin * w)))
    y0 = int(np.floor(max(0.0, box[1] - margin * h)))
    x1 = int(np.ceil(min(float(width), box[2] + margin * w)))
    y1 = int(np.ceil(min(float(height), box[3] + margin * h)))
    return x0, y0, x1, y1


def five_points(landmarks: Landmarks) -> np.ndarray:
    """Eye centres, nose tip and mouth corners from 68 points (the FaceFusion 68→5 rule)."""
    return np.stack(
        [
            landmarks[LEFT_EYE].mean(axis=0),
            landmarks[RIGHT_EYE].mean(axis=0),
            landmarks[30],
            landmarks[48],
            landmarks[54],
        ]
    ).astype(np.float32)


def alignment_matrix(landmarks: Landmarks, size: int) -> np.ndarray:
    """The 2x3 similarity that maps a face onto the FFHQ template in a ``size``² crop."""
    matrix, _ = cv2.estimateAffinePartial2D(
        five_points(landmarks), FFHQ_5_TEMPLATE * size, method=cv2.LMEDS
    )
    if matrix is None:
        raise ValueError("degenerate landmarks: cannot align the face")
    return matrix.astype(np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


FOREHEAD_RAISE = 0.08
"""How far above each brow point its forehead point sits, in the unit FFHQ frame (brows are at
about 0.38 there and the chin at 0.92: about 15 % of the brow-to-chin height, half-way to a
typical hairline). The 68 points stop at the brows, so a swap bounded by them leaves the
target's forehead and blends its brows in at half strength."""


def forehead_points(landmarks: Landmarks) -> np.ndarray:
    """Ten points above the brows (17-26), raised along the face's own vertical.

    The raise is made in the face's FFHQ frame (`alignment_matrix`) and mapped back, so a rolled or
    scaled face gets its forehead where it is, and a source and a target face get corresponding
    points: the same rule on both sides is what makes them a correspondence.
    """
    matrix = alignment_matrix(landmarks, 1)
    canonical = transform_points(landmarks[BROWS], matrix)
    raised = canonical - np.array([0.0, FOREHEAD_RAISE], dtype=np.float32)
    return transform_points(raised, cv2.invertAffineTransform(matrix))


def dense_points(landmarks: Landmarks) -> np.ndarray:
    """The 68 landmarks followed by the ten `forehead_points` (indices 68-77)."""
    return np.concatenate([landmarks, forehead_points(landmarks)]).astype(np.float32)


FOREHEAD = np.arange(68, 78)
"""`dense_points` indices of the forehead points, in brow order (image-left to right)."""


def mouth_openness(landmarks: Landmarks) -> float:
    """Inner-lip gap over mouth width: about 0 when closed, 0.3 and up when wide open."""
    gap = float(np.linalg.norm(landmarks[[61, 62, 63]] - landmarks[[67, 66, 65]], axis=1).mean())
    width = float(np.linalg.norm(landmarks[64] - landmarks[60]))
    return gap / width if width > 1e-6 else 0.0


def face_triangles(landmarks: Landmarks) -> np.ndarray:
    """Delaunay triangles (K, 3) over the 68 points (and any points after them, such as the
    forehead of `dense_points`), with the inner lips kept as their own faces.

    The triangulation is computed on a copy whose mouth is pried open, so that the inner-lip
    polygon is always triangulated on its own even when the lips touch (coincident points).
    """
    from scipy.spatial import Delaunay

    points = landmarks.astype(np.float64).copy()
    width = float(np.linalg.norm(points[54] - points[48])) or 1.0
    points[[61, 62, 63]] -= (0.0, 0.08 * width)
    points[[65, 66, 67]] += (0.0, 0.08 * width)
    points[[60]] += (0.02 * width, 0.0)
    points[[64]] -= (0.02 * width, 0.0)
    points += np.random.default_rng(0).normal(scale=1e-3 * width, size=points.shape)
    return np.asarray(Delaunay(points).simplices, dtype=np.int32)


def piecewise_affine_maps(
    target: np.ndarray, source: np.ndarray, triangles: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward maps for `cv2.remap` that warp ``source`` geometry onto ``target`` geometry.

    Arguments:
        target: (N, 2) points in the output raster (the region of interest).
        source: (N, 2) matching points in the source image.
        triangles: (K, 3) point indices.
        shape: (height, width) of the output raster.

    Returns:
        ``map_x``, ``map_y`` (float32) and a ``uint8`` coverage mask (255 inside any triangle).
    """
    height, width = shape
    labels = np.zeros((height, width), dtype=np.int32)
    dst = target[triangles].astype(np.float64)  # (K, 3, 2)
    src = source[triangles].astype(np.float64)
    # Solve M @ [x, y, 1]^T = src for every triangle at once: M = src^T @ inv([dst | 1]^T).
    homogeneous = np.concatenate([dst, np.ones((len(triangles), 3, 1))], axis=2).transpose(0, 2, 1)
    det = np.linalg.det(homogeneous)
    usable = np.abs(det) > 1e-3
    matrices = np.zeros((len(triangles) + 1, 2, 3), dtype=np.float32)
    matrices[0] = ((0, 0, -1), (0, 0, -1))  # outside every triangle: sample off-image
    if usable.any():
        inverse = np.linalg.inv(homogeneous[usable])
        matrices[1:][usable] = (src[usable].transpose(0, 2, 1) @ inverse).astype(np.float32)
    corners = np.round(dst * 16).astype(np.int32)
    for k in np.nonzero(usable)[0]:
        cv2.fillConvexPoly(labels, corners[k], int(k) + 1, cv2.LINE_8, 4)
    ys, xs = np.indices((height, width), dtype=np.float32)
    chosen = matrices[labels]
    map_x = chosen[..., 0, 0] * xs + chosen[..., 0, 1] * ys + chosen[..., 0, 2]
    map_y = chosen[..., 1, 0] * xs + chosen[..., 1, 1] * ys + chosen[..., 1, 2]
    coverage = np.where(labels > 0, 255, 0).astype(np.uint8)
    return map_x, map_y, coverage
