"""Tracking logic with a scripted fake detector: gaps, re-pickup, scene resets, One-Euro."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from farm.face.detectors import Detection
from farm.face.dlib_stack import DlibFaceStack
from farm.face.geometry import Box, box_of, face_triangles, iou, piecewise_affine_maps
from farm.face.tracking import FaceTracker, OneEuroFilter

BASE = np.array(
    [
        [30 + 40 * np.cos(a), 60 + 40 * np.sin(a)]
        for a in np.linspace(0, 2 * np.pi, 68, endpoint=False)
    ],
    dtype=np.float32,
)


class ScriptedStack:
    """Detector and landmarker in one: the face is the bright box drawn by `frames_for`.

    It reads only the pixels it is given, so a re-find window sees the face only when the
    window covers it, as a real detector would.
    """

    name = "scripted"

    def __init__(self) -> None:
        self.full_detections = 0
        self.frame_shape: tuple[int, ...] | None = None

    def detect(self, frame: np.ndarray, *, max_side: int = 0) -> list[Detection]:
        if frame.shape == self.frame_shape:
            self.full_detections += 1
        ys, xs = np.nonzero(frame[:, :, 1] > 128)
        if not len(xs):
            return []
        box = (float(xs.min()), float(ys.min()), float(xs.max()) + 1.0, float(ys.max()) + 1.0)
        return [Detection(box=box, score=1.0)]

    def landmarks(self, gray: np.ndarray, box: Box) -> np.ndarray:
        return BASE + np.float32(box[0] - FACE_X0)

    def descriptor(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return np.zeros(128, np.float32)


FACE_X0 = 0.0
"""The landmarks' x offset is the box's left edge minus this."""
FACE_W, FACE_TOP, FACE_BOTTOM = 80, 20, 100
FRAME_SHAPE = (120, 200, 3)


def frames_for(script: list[int | None]) -> list[np.ndarray]:
    """One frame per entry: a face box at that x offset, or None for no face."""
    frames = []
    for x in script:
        frame = np.zeros(FRAME_SHAPE, np.uint8)
        if x is not None:
            frame[FACE_TOP:FACE_BOTTOM, x : x + FACE_W] = 255
        frames.append(frame)
    return frames


def tracker(**kwargs: Any) -> FaceTracker:
    stack = ScriptedStack()
    stack.frame_shape = FRAME_SHAPE
    return FaceTracker(stack, stack, **kwargs)


def test_short_gaps_are_interpolated_and_long_gaps_are_not() -> None:
    script: list[int | None] = [
        10,
        12,
        None,
        None,
        None,
        20,
        22,
        None,
        None,
        None,
        None,
        30,
        30,
        30,
    ]
    result = tracker(detect_every=1, max_gap=3, min_cutoff=1e6, beta=0.0).track_batch(
        frames_for(script), list(range(len(script)))
    )
    present = [len(faces) == 1 for faces in result]
    assert present[:2] == [True, True]
    assert present[2:5] == [True, True, True], "a 3-frame gap is filled"
    assert not any(present[7:11]), "a 4-frame gap is left empty"
    assert present[11:] == [True, True, True], "the face is picked up again"
    xs = [faces[0].landmarks[:, 0].mean() - BASE[:, 0].mean() for faces in result[:7]]
    np.testing.assert_allclose(xs, [10, 12, 14, 16, 18, 20, 22], atol=0.01)
    assert not result[3][0].observed and result[5][0].observed


def test_face_that_appears_between_detections_is_back_filled() -> None:
    script: list[int | None] = [None, None, None, 5, 5, 5, 5, 5]
    stack = ScriptedStack()
    stack.frame_shape = FRAME_SHAPE
    t = FaceTracker(stack, stack, detect_every=5)
    result = t.track_batch(frames_for(script), list(range(len(script))))
    assert [len(f) for f in result] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert stack.full_detections == 2, "full-frame detection runs every 5th frame only"


def test_tracks_continue_across_batches_and_reset_forgets_them() -> None:
    t = tracker(detect_every=3)
    first = t.track_batch(frames_for([7, 7, 7]), [0, 1, 2])
    second = t.track_batch(frames_for([7, 7, 7]), [3, 4, 5])
    assert first[0][0].track.track_id == second[2][0].track.track_id
    t.reset()
    third = t.track_batch(frames_for([7]), [6])
    assert third[0][0].track.track_id == 0 and not t.lost


def test_one_euro_removes_jitter_when_still_and_follows_motion() -> None:
    rng = np.random.default_rng(1)
    still = OneEuroFilter(min_cutoff=0.5, beta=1.5)
    noisy = [np.array([0.0]) + rng.normal(scale=0.01, size=1) for _ in range(200)]
    out = np.array([still(x, 1 / 25) for x in noisy])
    assert out[50:].std() < 0.4 * np.std(noisy[50:])
    moving = OneEuroFilter(min_cutoff=0.5, beta=1.5)
    ramp = [moving(np.array([0.04 * k]), 1 / 25) for k in range(100)]
    assert abs(float(ramp[-1][0]) - 0.04 * 99) < 0.15


def test_piecewise_affine_maps_reproduce_a_translation() -> None:
    source = BASE.copy()
    target = source + np.float32([5.0, 3.0])
    tri = face_triangles(source)
    map_x, map_y, coverage = piecewise_affine_maps(target, source, tri, (140, 120))
    inside = coverage > 0
    assert inside.sum() > 2000
    ys, xs = np.nonzero(inside)
    np.testing.assert_allclose(map_x[inside], xs - 5.0, atol=1e-3)
    np.testing.assert_allclose(map_y[inside], ys - 3.0, atol=1e-3)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3),
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
    ],
)
def test_iou(a: Box, b: Box, expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)
    assert box_of(np.array([a[:2], a[2:]], np.float32)) == a


def test_re_detection_near_the_frame_edge_reads_only_its_window(stack: DlibFaceStack) -> None:
    """The window around a face at the bottom of the frame is a view whose rows, read as one
    block, run past the frame's end: dlib must get a copy (it once found nothing, or at random)."""
    from tests.face.conftest import decode

    frame = decode("video/grid_hardcuts_4_speakers_12s.mp4", 130, 131)[0]
    (found,) = stack.detect(np.ascontiguousarray(frame[:, :, 1]))
    # A tracked box 90-100 px wide is searched in its window without rescaling (the path at
    # fault), and the frame is cut off just below the chin, so the window is clipped there.
    cx, cy = (found[0] + found[2]) / 2, (found[1] + found[3]) / 2
    box = (cx - 47.5, cy - 47.5, cx + 47.5, cy + 47.5)
    gray = np.ascontiguousarray(frame[: round(found[3]) + 8, :, 1])
    again = [stack.detect_near(gray, box) for _ in range(5)]
    assert again[0] is not None and iou(again[0], found) > 0.5, again
    assert all(f == again[0] for f in again)
