"""The classic swap's correspondence and shape transfer, on the pack's own landmarks (no video)."""

from __future__ import annotations

import cv2
import numpy as np

from farm.face.geometry import BROWS, FOREHEAD, dense_points, forehead_points, transform_points
from farm.face.identity import IdentityPack
from farm.face.swap import LIP_PARTS, SHAPE_PARTS, ClassicSwapper, canonical_shape, face_polygon


def test_forehead_points_sit_above_the_brows_and_move_with_the_face(pack: IdentityPack) -> None:
    landmarks = pack.faces[0].landmarks
    forehead = forehead_points(landmarks)
    assert forehead.shape == (10, 2)
    brow_to_chin = landmarks[8, 1] - landmarks[BROWS, 1].mean()
    rise = landmarks[BROWS, 1] - forehead[:, 1]
    assert (rise > 0.1 * brow_to_chin).all() and (rise < 0.25 * brow_to_chin).all()
    # The same rule on a rotated, scaled, shifted copy gives the correspondingly moved points:
    # that is what makes source and target forehead points a correspondence.
    matrix = cv2.getRotationMatrix2D((100.0, 80.0), 25.0, 0.6)
    matrix[:, 2] += (40.0, -10.0)
    moved = forehead_points(transform_points(landmarks, matrix))
    np.testing.assert_allclose(moved, transform_points(forehead, matrix), atol=0.05)
    dense = dense_points(landmarks)
    assert dense.shape == (78, 2) and np.array_equal(dense[FOREHEAD], forehead)
    top = face_polygon(dense)[17:]
    assert top[:, 1].mean() < face_polygon(landmarks)[17:, 1].mean(), "the swap reaches higher"


def test_lips_take_the_sources_rest_shape_only_with_the_tracks_mean(pack: IdentityPack) -> None:
    source = pack.faces[0]
    swapper = ClassicSwapper(pack.faces)
    prepared = swapper.choose_source(source.landmarks)
    # A target: the source's landmarks with a wider mouth, scaled and shifted into a frame.
    target = source.landmarks.copy()
    centre = target[LIP_PARTS].mean(axis=0)
    target[LIP_PARTS] = centre + (target[LIP_PARTS] - centre) * np.float32([1.3, 1.0])
    target = target * 0.4 + np.float32([50.0, 30.0])
    mean = canonical_shape(target)
    without = swapper.morph(target, prepared, None)
    np.testing.assert_allclose(without[LIP_PARTS], target[LIP_PARTS], atol=0.05)
    with_mean = canonical_shape(swapper.morph(target, prepared, mean))
    parts = np.concatenate([SHAPE_PARTS, LIP_PARTS])
    # At its own mean the target takes the source's rest shape (up to the refit of the frame).
    assert np.abs(with_mean[parts] - prepared.shape[parts]).max() < 0.01
    # A frame that deviates from the mean (the mouth opens) keeps that deviation.
    opened = target.copy()
    opened[[65, 66, 67, 56, 57, 58]] += np.float32([0.0, 6.0])
    moved = swapper.morph(opened, prepared, mean)
    gap = moved[[66, 57], 1] - swapper.morph(target, prepared, mean)[[66, 57], 1]
    assert (gap > 4.0).all()
