"""Neural detection, landmarks and recognition against hand computation, on synthetic graphs.

Every graph (tests/face_onnx/graphs.py) has the real model's input/output signature and
designed outputs, so each expected number below is worked out by hand from the contract in
faceswap.md §2.1-2.4, not read back from the code under test.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from farm.errors import ModelError
from farm.face.detectors import Detection, FaceDetector, downscaled, scale_detections
from farm.face.onnx import align
from farm.face.onnx.arcface import ArcFaceRecogniser, normalise
from farm.face.onnx.landmarks import (
    Fan68Landmarker,
    Insight106Landmarker,
    brighten_if_dark,
    fan_crop_matrix,
)
from farm.face.onnx.runtime import CPU, SessionFactory
from farm.face.onnx.scrfd import ScrfdDetector
from tests.face_onnx import graphs

pytest.importorskip("insightface")

CPU_ONLY = SessionFactory("cpu", available=(CPU,))


class CountingSessions:
    """A `SessionFactory.create` that opens real CPU sessions and counts their runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.batches: list[int] = []

    def __call__(self, path: str, **kwargs: Any) -> Any:
        import onnxruntime as ort

        real = ort.InferenceSession(path, **kwargs)
        counter = self

        class Counted:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
                counter.runs += 1
                counter.batches.append(next(iter(feeds.values())).shape[0])
                return real.run(outputs, feeds)

        return Counted()


# --- alignment -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")  # insightface
def test_templates_match_insightface_and_the_reference_numbers() -> None:
    from insightface.utils.face_align import arcface_dst, estimate_norm

    assert np.allclose(align.ARCFACE_112_V2 * 112, arcface_dst, atol=1e-4)
    # arcface_128 = (arcface_dst + [8, 0]) / 128, and insightface's rule at 128-multiples
    assert np.allclose(align.ARCFACE_128 * 128, arcface_dst + np.array([8.0, 0.0]), atol=1e-4)
    assert np.allclose(align.template_points("arcface_112_v2", 128), align.ARCFACE_128 * 128)
    assert np.allclose(
        align.template_points("arcface_112_v2", 256),
        (arcface_dst + np.array([8.0, 0.0])) * 2,
        atol=1e-4,
    )
    assert np.allclose(align.template_points("arcface_112_v2", 224), arcface_dst * 2, atol=1e-4)
    # SimSwap's frontal src3 and FFHQ points (faceswap.md provenance checks)
    assert np.allclose(align.ARCFACE_112_V1[0] * 112, [39.730, 51.138], atol=1e-3)
    assert np.allclose(align.FFHQ_512[0] * 512, [192.98138, 239.94708], atol=1e-3)
    # the template the estimate_norm fit targets at 256 is ours: identity on its own points
    target = align.template_points("arcface_112_v2", 256)
    assert np.allclose(
        estimate_norm(target.astype(np.float32), 256), [[1, 0, 0], [0, 1, 0]], atol=1e-4
    )
    with pytest.raises(ValueError, match="unknown alignment template"):
        align.template_points("arcface_96", 96)


def test_alignment_maps_an_exact_similarity_onto_the_template() -> None:
    target = align.template_points("ffhq_512", 512)
    angle, scale, shift = np.deg2rad(23.0), 0.37, np.array([311.0, 97.5])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (target @ rotation.T) * scale + shift  # a face in the frame
    matrix = align.alignment_matrix(points, "ffhq_512", 512)
    assert matrix.shape == (2, 3) and matrix.dtype == np.float64
    assert np.abs(align.apply(matrix, points) - target).max() < 1e-3
    back = align.apply(align.inverse(matrix), target)
    assert np.abs(back - points).max() < 1e-3
    assert np.isclose(np.hypot(*matrix[0, :2]), 1 / scale)


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")  # insightface
def test_alignment_is_insightfaces_least_squares_fit_on_noisy_points() -> None:
    from insightface.utils.face_align import estimate_norm

    rng = np.random.default_rng(7)
    points = (align.ARCFACE_112_V2 * 260 + [40.0, 15.0] + rng.normal(0, 4, (5, 2))).astype(
        np.float32
    )
    ours = align.alignment_matrix(points, "arcface_112_v2", 112)
    assert np.allclose(ours, estimate_norm(points, 112), atol=1e-6)
    ours_128 = align.alignment_matrix(points, "arcface_128", 128)
    assert np.allclose(ours_128, estimate_norm(points, 128), atol=1e-4)


def test_warp_crop_border_modes() -> None:
    frame = np.full((50, 50, 3), 200, np.uint8)
    shift = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0]])  # crop x = frame x + 10
    black = align.warp_crop(frame, shift, 20)
    edge = align.warp_crop(frame, shift, 20, border="replicate")
    assert (black[:, :10] == 0).all() and (black[:, 11:] == 200).all()
    assert (edge == 200).all()


# --- the detector protocol -----------------------------------------------------------------


def test_downscale_and_map_back() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    small, factor = downscaled(frame, 320)
    assert small.shape == (240, 320, 3) and factor == 2.0
    same, one = downscaled(frame, 0)
    assert same is frame and one == 1.0
    assert downscaled(frame, 1000)[1] == 1.0  # never upscaled
    found = Detection((1.0, 2.0, 3.0, 4.0), 0.9, np.ones((5, 2), np.float32))
    [back] = scale_detections([found], factor)
    assert back.box == (2.0, 4.0, 6.0, 8.0) and back.score == 0.9
    assert back.points5 is not None and (back.points5 == 2).all()
    assert back.points5.dtype == np.float32


# --- SCRFD ---------------------------------------------------------------------------------

KPS = (0.5, -0.5, 1.0, 0.0, 1.5, 0.5, 2.0, 1.0, 2.5, 1.5)
FACE = graphs.HotAnchor(8, (5, 6), 0.9, (1.0, 2.0, 3.0, 4.0), KPS, anchor=1)
"""Centre (40, 48) at stride 8; box (40-8, 48-16, 40+24, 48+32) = (32, 32, 64, 80) in the
detector input, keypoints centre + 8 * offsets."""
FACE_BOX_INPUT = (32.0, 32.0, 64.0, 80.0)
FACE_KPS_INPUT = np.array([[44, 44], [48, 48], [52, 52], [56, 56], [60, 60]], np.float32)


def scrfd(tmp_path: Path, design: graphs.ScrfdDesign, size: int = 160, **kwargs: Any) -> Any:
    path = graphs.scrfd_graph(
        tmp_path / "det_10g.onnx", design, dynamic=kwargs.pop("dynamic", True)
    )
    return ScrfdDetector(path, CPU_ONLY, input_size=size, **kwargs)


def test_scrfd_decodes_the_designed_anchor_into_frame_pixels(tmp_path: Path) -> None:
    detector = scrfd(tmp_path, graphs.ScrfdDesign(160, 160, [FACE]))
    protocol: object = detector
    assert isinstance(protocol, FaceDetector)
    assert detector.session.get_providers() == [CPU]
    # 320x240 frame into 160²: resized to 160x120 (top-left), det_scale = 0.5
    [face] = detector.detect(np.full((240, 320, 3), 90, np.uint8))
    assert face.box == pytest.approx(tuple(v * 2 for v in FACE_BOX_INPUT), abs=1e-4)
    assert face.score == pytest.approx(0.9, abs=1e-6)
    assert face.points5 is not None and face.points5.shape == (5, 2)
    assert np.allclose(face.points5, FACE_KPS_INPUT * 2, atol=1e-4)


def test_scrfd_runs_only_the_session_our_factory_opened(tmp_path: Path) -> None:
    # insightface 2.1 would open a second, pinned-shape InferenceSession per input size by
    # itself (static_shape_sessions=True); every run must go through ours instead.
    counting = CountingSessions()
    path = graphs.scrfd_graph(tmp_path / "det_10g.onnx", graphs.ScrfdDesign(160, 160, [FACE]))
    detector = ScrfdDetector(
        path, SessionFactory("cpu", available=(CPU,), create=counting), input_size=160
    )
    frame = np.full((160, 160, 3), 90, np.uint8)
    assert len(detector.detect(frame)) == 1 and len(detector.detect(frame, max_side=80)) == 1
    assert counting.batches == [1, 1]


def test_scrfd_max_side_maps_back_to_the_full_frame(tmp_path: Path) -> None:
    detector = scrfd(tmp_path, graphs.ScrfdDesign(160, 160, [FACE]))
    # 640x480 -> max_side 320 -> 320x240 -> 160x120: factor 4 overall
    [face] = detector.detect(np.full((480, 640, 3), 90, np.uint8), max_side=320)
    assert face.box == pytest.approx(tuple(v * 4 for v in FACE_BOX_INPUT), abs=1e-4)
    assert face.points5 is not None
    assert np.allclose(face.points5, FACE_KPS_INPUT * 4, atol=1e-4)


def test_scrfd_threshold_nms_and_largest_first(tmp_path: Path) -> None:
    design = graphs.ScrfdDesign(
        160,
        160,
        [
            FACE,  # (32, 32, 64, 80), 0.9
            # one cell right: (40, 32, 72, 80), IoU with FACE 0.61 (insightface's +1 areas)
            # > 0.4 and a lower score: dropped
            graphs.HotAnchor(8, (6, 6), 0.8, (1.0, 2.0, 3.0, 4.0), anchor=0),
            # stride 32, cell (4, 1): centre (128, 32), box (112, 16, 160, 64), bigger, kept
            graphs.HotAnchor(32, (4, 1), 0.6, (0.5, 0.5, 1.0, 1.0)),
            # below the 0.5 threshold
            graphs.HotAnchor(16, (2, 8), 0.49, (1.0, 1.0, 1.0, 1.0)),
        ],
    )
    detector = scrfd(tmp_path, design)
    found = detector.detect(np.full((160, 160, 3), 90, np.uint8))
    assert [round(d.score, 3) for d in found] == [0.6, 0.9]  # largest box first, not best score
    assert found[0].box == pytest.approx((112.0, 16.0, 160.0, 64.0), abs=1e-4)
    assert found[1].box == pytest.approx(FACE_BOX_INPUT, abs=1e-4)
    stricter = scrfd(tmp_path, design, score_threshold=0.7)
    assert [round(d.score, 3) for d in stricter.detect(np.full((160, 160, 3), 90, np.uint8))] == [
        0.9
    ]
    loose = scrfd(tmp_path, design, nms_threshold=0.9)  # overlap 0.61 now allowed
    assert len(loose.detect(np.full((160, 160, 3), 90, np.uint8))) == 3


def test_scrfd_feeds_rgb_normalised_by_128(tmp_path: Path) -> None:
    probe = graphs.HotAnchor(8, (5, 6), 0.45, (1.0, 2.0, 3.0, 4.0), red_weight=0.1)
    detector = scrfd(tmp_path, graphs.ScrfdDesign(160, 160, [probe]))
    red = np.zeros((160, 160, 3), np.uint8)
    red[..., 2] = 255  # BGR red: the network's channel 0 only if insightface swaps to RGB
    [face] = detector.detect(red)
    assert face.score == pytest.approx(0.45 + 0.1 * (255 - 127.5) / 128, abs=1e-5)
    blue = np.zeros((160, 160, 3), np.uint8)
    blue[..., 0] = 255  # channel 0 = (0 - 127.5) / 128: score 0.35, under the threshold
    assert detector.detect(blue) == []


def test_scrfd_at_640_has_16800_anchors(tmp_path: Path) -> None:
    far = graphs.HotAnchor(32, (19, 19), 0.77, (1.0, 1.0, 1.0, 1.0))  # centre (608, 608)
    detector = scrfd(tmp_path, graphs.ScrfdDesign(640, 640, [far]), size=640)
    blob = np.zeros((1, 3, 640, 640), np.float32)
    heads = detector.session.run(None, {"input.1": blob})
    assert sum(h.shape[0] for h in heads[:3]) == 16800
    assert [h.shape[1] for h in heads] == [1, 1, 1, 4, 4, 4, 10, 10, 10]
    [face] = detector.detect(np.full((1280, 1280, 3), 90, np.uint8))  # det_scale 0.5
    assert face.box == pytest.approx((1152.0, 1152.0, 1280.0, 1280.0), abs=1e-3)


def test_scrfd_fixed_size_graph_and_det_2_5g_names(tmp_path: Path) -> None:
    path = graphs.scrfd_graph(
        tmp_path / "det_2.5g.onnx",
        graphs.ScrfdDesign(160, 160, [FACE]),
        output_names=graphs.DET_2_5G_OUTPUTS,
        dynamic=False,
    )
    detector = ScrfdDetector(path, CPU_ONLY, input_size=320)  # the graph's 160 wins
    assert detector.input_size == (160, 160)
    [face] = detector.detect(np.full((160, 160, 3), 90, np.uint8))
    assert face.box == pytest.approx(FACE_BOX_INPUT, abs=1e-4)


def test_scrfd_refuses_other_graphs(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="1 outputs; an SCRFD detector"):
        ScrfdDetector(graphs.arcface_graph(tmp_path / "arc.onnx"), CPU_ONLY)
    with pytest.raises(ModelError, match="does not exist"):
        ScrfdDetector(tmp_path / "nothing.onnx", CPU_ONLY)


# --- ArcFace -------------------------------------------------------------------------------


def expected_embedding(bgr: tuple[int, int, int]) -> np.ndarray:
    """By hand: a uniform crop pools to its RGB values, (x - 127.5) / 127.5, then @ W + b."""
    weights, bias = graphs.arcface_projection()
    rgb = (np.array(bgr[::-1], dtype=np.float64) - 127.5) / 127.5
    return (rgb @ weights + bias).astype(np.float32)


def test_arcface_normalisation_and_channel_order(tmp_path: Path) -> None:
    recogniser = ArcFaceRecogniser(graphs.arcface_graph(tmp_path / "w600k_r50.onnx"), CPU_ONLY)
    assert (recogniser.size, recogniser.batch_dynamic, recogniser.dimensions) == (112, True, 512)
    assert (recogniser.input_mean, recogniser.input_std) == (127.5, 127.5)
    crop = np.empty((112, 112, 3), np.uint8)
    crop[:] = (10, 100, 200)  # B, G, R
    [embedding] = recogniser.embed_batch([crop])
    assert embedding.dtype == np.float32 and embedding.shape == (512,)
    # columns 0-2 are the network's channels 0-2: R, G, B ((x - 127.5) / 128 would be off by 2e-3;
    # the 1e-4 slack is float32 pooling over 12 544 pixels)
    assert embedding[:3] == pytest.approx([72.5 / 127.5, -27.5 / 127.5, -117.5 / 127.5], abs=1e-4)
    assert np.allclose(embedding, expected_embedding((10, 100, 200)), atol=1e-4)
    unit = normalise(embedding)
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(unit * np.linalg.norm(embedding), embedding, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")  # insightface
def test_arcface_crop_is_insightfaces_norm_crop(tmp_path: Path) -> None:
    from insightface.utils.face_align import norm_crop

    recogniser = ArcFaceRecogniser(graphs.arcface_graph(tmp_path / "w600k_r50.onnx"), CPU_ONLY)
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    points = (align.ARCFACE_112_V2 * 150 + [120.0, 60.0] + rng.normal(0, 2, (5, 2))).astype(
        np.float32
    )
    ours = recogniser.crop(frame, points)
    theirs = norm_crop(frame, points, 112)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    direct = recogniser.embed(frame, points)
    assert np.allclose(direct, recogniser.embed_batch([ours])[0])
    assert np.allclose(recogniser.embed_normalised(frame, points), normalise(direct))


def test_arcface_batches_in_one_call_when_the_batch_is_dynamic(tmp_path: Path) -> None:
    colours = [(10, 100, 200), (200, 10, 100), (0, 255, 30)]
    crops = [np.full((112, 112, 3), c, np.uint8) for c in colours]
    counting = CountingSessions()
    dynamic = ArcFaceRecogniser(
        graphs.arcface_graph(tmp_path / "dyn.onnx"),
        SessionFactory("cpu", available=(CPU,), create=counting),
    )
    many = dynamic.embed_batch(crops)
    assert counting.batches == [3]
    assert np.allclose(many, np.stack([expected_embedding(c) for c in colours]), atol=1e-4)
    fixed_counting = CountingSessions()
    fixed = ArcFaceRecogniser(
        graphs.arcface_graph(tmp_path / "one.onnx", batch=1),
        SessionFactory("cpu", available=(CPU,), create=fixed_counting),
    )
    assert not fixed.batch_dynamic
    assert np.allclose(fixed.embed_batch(crops), many, atol=1e-6)
    assert fixed_counting.batches == [1, 1, 1]
    assert dynamic.embed_batch([]).shape == (0, 512)
    with pytest.raises(ValueError, match="112x112x3"):
        dynamic.embed_batch([np.zeros((128, 128, 3), np.uint8)])


# --- landmarks -----------------------------------------------------------------------------


def test_2dfan4_maps_heatmap_coordinates_back_to_the_frame(tmp_path: Path) -> None:
    landmarks = np.zeros((68, 3), np.float32)
    landmarks[1, :2] = (32.0, 32.0)  # heatmap centre
    landmarks[2, :2] = (16.0, 48.0)
    model = Fan68Landmarker(graphs.fan_graph(tmp_path / "2dfan4.onnx", landmarks), CPU_ONLY)
    box = (100.0, 50.0, 300.0, 250.0)
    # by hand: scale 195 / 200 = 0.975, tx = (256 - 400 * 0.975) / 2 = -67, ty = -18.25
    assert np.allclose(fan_crop_matrix(box), [[0.975, 0, -67.0], [0, 0.975, -18.25]])
    frame = np.full((400, 400, 3), (128, 200, 200), np.uint8)
    result = model.detect(frame, box)
    assert result.points.shape == (68, 2) and result.points.dtype == np.float32
    # heatmap xy * 4 -> crop, then (crop - t) / 0.975 -> frame
    assert np.allclose(result.points[0], (67 / 0.975, 18.25 / 0.975), atol=1e-3)
    assert np.allclose(result.points[1], (200.0, 150.0), atol=1e-3)  # the box centre
    assert np.allclose(result.points[2], ((64 + 67) / 0.975, (192 + 18.25) / 0.975), atol=1e-3)
    # score: peak = 0.9 * blue / 255 (BGR fed as is, / 255), [0, 0.9] -> [0, 1]
    assert result.score == pytest.approx(128 / 255, abs=1e-5)
    white = model.detect(np.full((400, 400, 3), 255, np.uint8), box)
    assert white.score == pytest.approx(1.0, abs=1e-6)


def test_2dfan4_brightens_only_dark_crops() -> None:
    rng = np.random.default_rng(5)
    bright = rng.integers(100, 200, (64, 64, 3), dtype=np.uint8)
    assert brighten_if_dark(bright) is bright
    dark = rng.integers(0, 40, (64, 64, 3), dtype=np.uint8)
    lifted = brighten_if_dark(dark)
    assert lifted.shape == dark.shape and lifted.mean() > dark.mean() + 5


def test_2dfan4_refuses_other_graphs(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not 2DFAN4"):
        Fan68Landmarker(graphs.arcface_graph(tmp_path / "arc.onnx"), CPU_ONLY)


def test_2d106_maps_crop_units_back_to_the_frame(tmp_path: Path) -> None:
    predictions = np.zeros((106, 2), np.float32)
    predictions[1] = (0.5, -0.5)
    predictions[2] = (-1.0, 1.0)
    model = Insight106Landmarker(
        graphs.landmark106_graph(tmp_path / "2d106det.onnx", predictions), CPU_ONLY
    )
    assert (model.input_mean, model.input_std) == (0.0, 1.0)  # the bn_data graph: raw pixels
    result = model.detect(np.full((300, 300, 3), 90, np.uint8), (100.0, 100.0, 200.0, 200.0))
    # by hand: centre (150, 150), scale 192 / (1.5 * 100) = 1.28, crop = (pred + 1) * 96
    assert result.points.shape == (106, 2) and result.score is None
    assert np.allclose(result.points[0], (150.0, 150.0), atol=1e-3)
    assert np.allclose(result.points[1], (150 + 48 / 1.28, 150 - 48 / 1.28), atol=1e-3)
    assert np.allclose(result.points[2], (150 - 96 / 1.28, 150 + 96 / 1.28), atol=1e-3)


# --- packaging -----------------------------------------------------------------------------


def test_missing_insightface_is_a_one_line_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = graphs.scrfd_graph(tmp_path / "det.onnx", graphs.ScrfdDesign(160, 160, [FACE]))
    monkeypatch.setitem(sys.modules, "insightface.model_zoo.scrfd", None)
    with pytest.raises(ModelError) as caught:
        ScrfdDetector(path, CPU_ONLY, input_size=160)
    message = caught.value.one_line()
    assert "pip install --no-deps insightface==2.1" in message and "\n" not in str(caught.value)
    assert pickle.loads(pickle.dumps(caught.value)).one_line() == message
