"""Neural swappers, face parsing, enhancement and paste-back against hand computation.

The graphs (tests/face_onnx/graphs_swap.py) have the published models' signatures and designed
bodies with distinct per-channel constants, so every expected number below is worked out from
the contract in faceswap.md §2.5-2.9 and §3, and a wrong channel order, scale, latent or matrix
gives a different number (several tests check that the wrong variant really differs).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from farm.errors import ModelError
from farm.face.onnx import align
from farm.face.onnx.enhancer import FaceEnhancer
from farm.face.onnx.parser import FACE_CLASSES, BiSeNetParser
from farm.face.onnx.paste import (
    box_mask,
    colour_match,
    combine_masks,
    feather,
    lab_stats,
    paste_back,
    paste_region,
)
from farm.face.onnx.runtime import CPU, SessionFactory
from farm.face.onnx.swappers import (
    FaceSwapModel,
    InSwapper128,
    SimSwap256,
    SimSwap512,
    open_swapper,
)
from tests.conftest import MEDIA
from tests.face_onnx import graphs_swap as graphs

pytest.importorskip("insightface")

CPU_ONLY = SessionFactory("cpu", available=(CPU,))
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
ASTRONAUT = MEDIA / "faces" / "astronaut_eileen_collins_nasa.png"
ASTRONAUT_POINTS5 = np.array(
    [(202.5, 102.5), (245.0, 102.5), (222.5, 125.0), (202.5, 142.5), (240.0, 142.5)]
)
"""Picked by hand on the 512² image: eye centres, nose tip, mouth corners (image-left first)."""


class CountingSessions:
    """A `SessionFactory.create` that opens real CPU sessions and records each run's batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, path: str, **kwargs: Any) -> Any:
        import onnxruntime as ort

        real = ort.InferenceSession(path, **kwargs)
        batches = self.batches

        class Counted:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
                batches.append(len(next(iter(feeds.values()))))
                return real.run(outputs, feeds)

        return Counted()


def rng_crops(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def to_bgr_uint8(rgb_unit: np.ndarray) -> np.ndarray:
    """Hand de-normalisation: RGB [0, 1] HxWx3 → BGR uint8, rounded."""
    return np.rint(np.clip(rgb_unit, 0, 1) * 255).astype(np.uint8)[:, :, ::-1]


def assert_close_uint8(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 rounding at .5 boundaries: never more than 1 level, rarely at all."""
    diff = np.abs(actual.astype(int) - expected.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.99


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# --- inswapper_128 ---------------------------------------------------------------------------


def inswapper(tmp_path: Path, **kwargs: Any) -> tuple[InSwapper128, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    emap = rng.normal(size=(512, 512)).astype(np.float32)
    decoy = rng.normal(size=(512, 512)).astype(np.float32)
    path = graphs.inswapper_128(tmp_path / "inswapper_128.onnx", emap, decoy=decoy, **kwargs)
    return InSwapper128(path, CPU_ONLY), emap, decoy


def test_inswapper_latent_is_the_normed_embedding_through_the_last_initializer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, emap, decoy = inswapper(tmp_path)
    assert "inswapper-shape" not in capsys.readouterr().out  # insightface's print is swallowed
    embedding = np.random.default_rng(2).normal(size=512) * 7.0  # raw: not unit length
    latent = model.identity_latent(embedding)
    expected = unit(unit(embedding) @ emap.astype(np.float64))
    assert latent.shape == (1, 512) and latent.dtype == np.float32
    np.testing.assert_allclose(latent[0], expected, atol=1e-6)
    # The decoy (an earlier initializer) and FaceFusion's un-renormalised latent both differ.
    assert np.abs(latent[0] - unit(unit(embedding) @ decoy)).max() > 0.05
    ff_latent = embedding @ emap / np.linalg.norm(embedding)
    assert abs(np.linalg.norm(ff_latent) - 1.0) > 0.5
    assert isinstance(model, FaceSwapModel)
    assert (model.template, model.crop_size) == ("arcface_128", 128)


def test_inswapper_feeds_rgb_in_unit_range_and_returns_bgr(tmp_path: Path) -> None:
    model, _, _ = inswapper(tmp_path)
    latent = model.identity_latent(np.random.default_rng(3).normal(size=512))
    (crop,) = rng_crops(128, 1)
    (swapped,) = model.swap_crops([crop], latent)
    gains, bias = np.array(graphs.INSWAPPER_GAINS), np.array(graphs.INSWAPPER_BIAS)
    offset = graphs.INSWAPPER_LATENT_GAIN * latent[0, list(graphs.INSWAPPER_LATENT_INDEX)]
    rgb = crop[:, :, ::-1].astype(np.float32) / 255
    assert swapped.shape == (128, 128, 3) and swapped.dtype == np.uint8
    assert_close_uint8(swapped, to_bgr_uint8(rgb * gains + bias + offset))
    # Fed BGR instead, the gains land on the wrong channels: a different picture.
    wrong = to_bgr_uint8(crop.astype(np.float32) / 255 * gains + bias + offset)
    assert np.abs(swapped.astype(int) - wrong).mean() > 10
    # The source latent moves the output measurably.
    other = model.identity_latent(np.random.default_rng(4).normal(size=512))
    (moved,) = model.swap_crops([crop], other)
    assert np.abs(moved.astype(int) - swapped).mean() > 3


def test_identity_inswapper_returns_its_input_bit_for_bit(tmp_path: Path) -> None:
    model, _, _ = inswapper(tmp_path, identity=True)
    crops = rng_crops(128, 2)
    crops[0][:] = (np.arange(128 * 128 * 3) % 256).astype(np.uint8).reshape(128, 128, 3)
    latent = model.identity_latent(np.ones(512))
    for crop, swapped in zip(crops, model.swap_crops(crops, latent), strict=True):
        np.testing.assert_array_equal(swapped, crop)  # rounded, not truncated: no level lost


def test_fixed_batch_runs_per_crop_and_dynamic_batch_runs_once(tmp_path: Path) -> None:
    crops = rng_crops(128, 3)
    results = []
    for batch, expected_runs in ((1, [1, 1, 1]), ("N", [3])):
        counting = CountingSessions()
        factory = SessionFactory("cpu", available=(CPU,), create=counting)
        emap = np.random.default_rng(1).normal(size=(512, 512)).astype(np.float32)
        path = graphs.inswapper_128(tmp_path / f"inswapper_{batch}.onnx", emap, batch=batch)
        model = InSwapper128(path, factory)
        latent = model.identity_latent(np.random.default_rng(5).normal(size=512))
        results.append(model.swap_crops(crops, latent))
        assert counting.batches == expected_runs
    for fixed, batched in zip(*results, strict=True):
        np.testing.assert_array_equal(fixed, batched)
    assert model.swap_crops([], latent) == []


def test_inswapper_refuses_other_graphs_and_missing_insightface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_emap = graphs.inswapper_128(tmp_path / "bad_emap.onnx", np.zeros((512, 256)))
    with pytest.raises(ModelError, match=r"emap\) has shape \[512, 256\]"):
        InSwapper128(small_emap, CPU_ONLY)
    simswap = graphs.simswap(tmp_path / "simswap.onnx", 256)
    with pytest.raises(ModelError):
        InSwapper128(simswap, CPU_ONLY)
    for name in ("insightface", "insightface.model_zoo", "insightface.model_zoo.inswapper"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModelError, match=r"pip install --no-deps insightface==2\.1") as caught:
        InSwapper128(small_emap, CPU_ONLY)
    error = pickle.loads(pickle.dumps(caught.value))
    assert type(error) is ModelError and "\n" not in str(error)


def test_bad_embeddings_are_model_errors(tmp_path: Path) -> None:
    model, _, _ = inswapper(tmp_path)
    for bad in (np.zeros(512), np.full(512, np.nan), np.ones(128)):
        with pytest.raises(ModelError):
            model.identity_latent(bad)


# --- SimSwap ---------------------------------------------------------------------------------


def simswap_expected(crop: np.ndarray, latent: np.ndarray, *, imagenet: bool) -> np.ndarray:
    x = crop[:, :, ::-1].astype(np.float32) / 255
    if imagenet:
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    offset = graphs.SIMSWAP_LATENT_GAIN * latent[0, list(graphs.SIMSWAP_LATENT_INDEX)]
    return to_bgr_uint8(x * np.array(graphs.SIMSWAP_GAINS) + np.array(graphs.SIMSWAP_BIAS) + offset)


@pytest.mark.parametrize(
    ("cls", "size", "imagenet"), [(SimSwap256, 256, True), (SimSwap512, 512, False)]
)
def test_simswap_latent_via_converter_and_normalisation(
    tmp_path: Path, cls: type[SimSwap256], size: int, imagenet: bool
) -> None:
    rng = np.random.default_rng(6)
    matrix, offset = rng.normal(size=(512, 512)), rng.normal(size=512)
    converter = graphs.converter(tmp_path / "crossface_simswap.onnx", matrix, offset)
    path = graphs.simswap(tmp_path / f"simswap_{size}.onnx", size)
    model = open_swapper(f"simswap_{size}", path, CPU_ONLY, converter=converter)
    assert type(model) is cls and (model.template, model.crop_size) == ("arcface_112_v1", size)
    embedding = rng.normal(size=512) * 5.0
    latent = model.identity_latent(embedding)
    np.testing.assert_allclose(latent[0], unit(embedding @ matrix + offset), atol=1e-5)
    crop = rng_crops(size, 1, seed=7)[0]
    (swapped,) = model.swap_crops([crop], latent)
    assert_close_uint8(swapped, simswap_expected(crop, latent, imagenet=imagenet))
    # The other model's normalisation gives a different picture.
    other = simswap_expected(crop, latent, imagenet=not imagenet)
    assert np.abs(swapped.astype(int) - other).mean() > 5


def test_simswap_refuses_a_wrong_converter_and_open_swapper_needs_one(tmp_path: Path) -> None:
    path = graphs.simswap(tmp_path / "simswap_256.onnx", 256)
    with pytest.raises(ModelError, match="crossface_simswap"):
        open_swapper("simswap_256", path, CPU_ONLY)
    with pytest.raises(ModelError, match="crossface_simswap converter"):
        SimSwap256(path, path, CPU_ONLY)  # the swapper itself is not a converter
    with pytest.raises(ModelError, match=r"\[N, 3, 512, 512\]"):
        SimSwap512(path, path, CPU_ONLY)  # a 256 graph behind the 512 name
    with pytest.raises(ModelError, match="unknown swapper"):
        open_swapper("ghost_256", path, CPU_ONLY)


# --- BiSeNet ---------------------------------------------------------------------------------


def test_region_mask_keeps_only_face_classes(tmp_path: Path) -> None:
    grid = np.array(
        [
            [17, 17, 18, 17],  # hair, hat
            [0, 1, 6, 1],  # background, skin, glasses
            [7, 10, 2, 4],  # ear, nose, brow, eye
            [14, 12, 11, 16],  # neck, lip, mouth, cloth
        ]
    )
    parser = BiSeNetParser(graphs.bisenet_by_position(tmp_path / "bisenet.onnx", grid), CPU_ONLY)
    crop = rng_crops(256, 1)[0]  # parsed at 512² and resized back: 64-px cells
    mask = parser.region_mask(crop)
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    kept = np.isin(grid, FACE_CLASSES)
    for (row, col), keep in np.ndenumerate(kept):
        centre = mask[row * 64 + 32, col * 64 + 32]
        assert centre == pytest.approx(1.0 if keep else 0.0, abs=1e-6), (row, col, grid[row, col])
    hard = kept.astype(np.float32).repeat(64, axis=0).repeat(64, axis=1)
    np.testing.assert_allclose(mask, feather(hard, 5.0), atol=1e-5)
    # The feather shrinks the region: a kept cell's border pixel is below 1, a dropped
    # neighbour's border pixel is 0 (skin at (1,1) next to glasses at (1,2)).
    assert 0.0 < mask[96, 127] < 1.0 and mask[96, 128] == 0.0
    with pytest.raises(ValueError, match="refused"):
        BiSeNetParser(tmp_path / "bisenet.onnx", CPU_ONLY, classes=(1, 17))
    with pytest.raises(ValueError, match="refused"):
        BiSeNetParser(tmp_path / "bisenet.onnx", CPU_ONLY, classes=(1, 6))


def test_region_mask_feeds_rgb_with_imagenet_normalisation(tmp_path: Path) -> None:
    threshold = (128 / 255 - 0.485) / 0.229  # the red level 128, normalised
    path = graphs.bisenet_channel_threshold(tmp_path / "bisenet.onnx", 0, threshold, batch="N")
    counting = CountingSessions()
    parser = BiSeNetParser(path, SessionFactory("cpu", available=(CPU,), create=counting))
    crop = np.zeros((512, 512, 3), dtype=np.uint8)
    crop[:, :256] = (40, 90, 200)  # BGR: red 200 on the left
    crop[:, 256:] = (200, 90, 60)  # red 60 on the right (blue 200)
    masks = parser.region_masks([crop, crop[:, ::-1].copy()])
    assert counting.batches == [2]
    hard = np.zeros((512, 512), dtype=np.float32)
    hard[:, :256] = 1.0
    np.testing.assert_allclose(masks[0], feather(hard), atol=1e-5)
    np.testing.assert_allclose(masks[1], feather(hard[:, ::-1].copy()), atol=1e-5)
    # Without the mean/std, red 60 (0.235) would clear the threshold (0.074): all kept.
    assert threshold < 60 / 255 and masks[0][:, 300:].max() == 0.0


# --- enhancers -------------------------------------------------------------------------------


def test_gfpgan_contract_and_blend_strength(tmp_path: Path) -> None:
    path = graphs.gfpgan(tmp_path / "gfpgan_1.4.onnx")
    crops = rng_crops(512, 2, seed=8)
    x = crops[0][:, :, ::-1].astype(np.float32) / 255 * 2 - 1
    restored = (np.clip(x * np.array(graphs.GFPGAN_GAINS), -1, 1) + 1) * 127.5
    restored_bgr = restored[:, :, ::-1]
    for strength in (1.0, 0.25):
        enhancer = FaceEnhancer("gfpgan_1.4", path, CPU_ONLY, strength=strength)
        assert (enhancer.template, enhancer.crop_size) == ("ffhq_512", 512)
        out = enhancer.enhance_crops(crops)
        assert len(out) == 2 and out[0].dtype == np.uint8
        expected = np.rint(crops[0] * (1 - strength) + restored_bgr * strength).astype(np.uint8)
        assert_close_uint8(out[0], expected)
    full = FaceEnhancer("gfpgan_1.4", path, CPU_ONLY, strength=1.0).enhance_crops(crops)[0]
    quarter = out[0]
    # A quarter of the way from the crop to the restored face.
    np.testing.assert_allclose(
        quarter.astype(float), crops[0] * 0.75 + full.astype(float) * 0.25, atol=1.01
    )
    none = FaceEnhancer("gfpgan_1.4", path, CPU_ONLY, strength=0.0).enhance_crops(crops)
    np.testing.assert_array_equal(none[1], crops[1])


def test_codeformer_gets_its_fidelity_weight_as_a_double(tmp_path: Path) -> None:
    path = graphs.codeformer(tmp_path / "codeformer.onnx")
    (crop,) = rng_crops(512, 1, seed=9)
    x = crop[:, :, ::-1].astype(np.float32) / 255 * 2 - 1
    for fidelity in (0.23, 0.61):  # not 0.2: 0.2·k + 25.5 would sit on rounding ties
        enhancer = FaceEnhancer("codeformer", path, CPU_ONLY, strength=1.0, fidelity=fidelity)
        (out,) = enhancer.enhance_crops([crop])
        y = x * fidelity + 2 * fidelity - 1
        expected = np.rint((np.clip(y, -1, 1) + 1) * 127.5)[:, :, ::-1].astype(np.uint8)
        assert_close_uint8(out, expected)
    with pytest.raises(ModelError, match="expected inputs input"):
        FaceEnhancer("gfpgan_1.4", path, CPU_ONLY)  # CodeFormer's extra input is not GFPGAN's
    with pytest.raises(ModelError, match="expected inputs input, weight"):
        FaceEnhancer("codeformer", graphs.gfpgan(tmp_path / "gfpgan.onnx"), CPU_ONLY)


# --- masks and colour ------------------------------------------------------------------------


def test_box_mask_is_facefusions() -> None:
    hard = box_mask(10, blur=0.0, padding=(20.0, 0.0, 0.0, 30.0))
    expected = np.zeros((10, 10), dtype=np.float32)
    expected[2:9, 3:9] = 1.0  # top 2 rows, left 3 columns; at least 1 px right and bottom
    np.testing.assert_array_equal(hard, expected)
    soft = box_mask(128, blur=0.3)  # blur_amount 19, zero border 9, σ 4.75
    assert soft[64, 64] == pytest.approx(1.0, abs=1e-6) and soft[0, 0] < 0.01
    assert soft[64, 8] < 0.5 < soft[64, 9] and soft[64, 30] > 0.999
    np.testing.assert_allclose(soft, soft.T, atol=1e-6)
    np.testing.assert_allclose(soft, soft[::-1, ::-1], atol=1e-6)


def test_combine_masks_is_the_elementwise_minimum() -> None:
    a = np.array([[0.2, 1.0], [0.5, 0.0]], dtype=np.float32)
    b = np.array([[0.9, 0.3], [0.5, 1.0]], dtype=np.float32)
    c = np.array([[1.5, 1.5], [0.1, 1.5]], dtype=np.float32)
    expected = np.array([[0.2, 0.3], [0.1, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(combine_masks(a, b, c), expected)
    with pytest.raises(ValueError):
        combine_masks(a, np.ones((3, 3), np.float32))


def test_feather_shrinks_a_step_by_half_the_blur() -> None:
    hard = np.zeros((64, 200), dtype=np.float32)
    hard[:, 100:] = 1.0
    soft = feather(hard, 5.0)
    row = soft[32]
    assert row[:100].max() == 0.0  # nothing outside the region
    assert 0.0 < row[100] < 0.1  # the old edge is now the mask's foot
    assert row[120] == pytest.approx(1.0, abs=1e-4)
    # Hand value: blur(step)(x) = Φ((x − 99.5)/5); feather = 2·Φ − 1 there.
    from math import erf, sqrt

    phi = 0.5 * (1 + erf((105 - 99.5) / 5 / sqrt(2)))
    assert row[105] == pytest.approx(2 * phi - 1, abs=0.01)


def test_colour_match_moves_lab_statistics_inside_the_mask() -> None:
    rng = np.random.default_rng(10)
    noise = rng.integers(60, 200, (64, 64, 3), dtype=np.uint8)
    target = np.asarray(cv2.GaussianBlur(noise, (0, 0), 2))
    lab = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.int16)
    lab[..., 0] = np.clip(lab[..., 0] - 25, 0, 255)  # darker
    lab[..., 1] = np.clip(lab[..., 1] + 10, 0, 255)  # redder
    swapped = cv2.cvtColor(lab.astype(np.uint8), cv2.COLOR_LAB2BGR)
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[8:56, 8:56] = 1.0
    inside = mask > 0.5
    target_mean = lab_stats(target, inside)[0]
    before = lab_stats(swapped, inside)[0]
    full = lab_stats(colour_match(swapped, target, mask, 1.0), inside)[0]
    half = lab_stats(colour_match(swapped, target, mask, 0.5), inside)[0]
    assert np.abs(before - target_mean)[:2].min() > 8
    np.testing.assert_allclose(full, target_mean, atol=1.5)
    np.testing.assert_allclose(half, (before + target_mean) / 2, atol=1.5)
    assert colour_match(swapped, target, np.zeros_like(mask)) is swapped
    assert colour_match(swapped, target, mask, 0.0) is swapped


# --- paste-back ------------------------------------------------------------------------------


def rotated(
    matrix: np.ndarray, size: int, degrees: float, shift: tuple[float, float]
) -> np.ndarray:
    """``matrix`` followed by a rotation about the crop centre and a sub-pixel shift."""
    rotation = np.vstack([cv2.getRotationMatrix2D((size / 2, size / 2), degrees, 1.0), [0, 0, 1]])
    out = (rotation @ np.vstack([matrix, [0, 0, 1]]))[:2]
    out[:, 2] += shift
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255**2 / mse) if mse > 0 else float("inf")


def crop_coordinates(frame_shape: tuple[int, ...], matrix: np.ndarray) -> np.ndarray:
    """For each frame pixel, where it lands in the crop: ``(H, W, 2)`` float64, by hand."""
    ys, xs = np.mgrid[: frame_shape[0], : frame_shape[1]].astype(np.float64)
    return np.stack([xs, ys], axis=-1) @ matrix[:, :2].T + matrix[:, 2]


def bilinear(image: np.ndarray, coords: np.ndarray, *, replicate: bool) -> np.ndarray:
    """Textbook bilinear sampling (float64): replicated edges, or zero outside the image."""
    h, w = image.shape[:2]
    source = image.astype(np.float64)
    if not replicate:
        source = np.pad(source, [(1, 1), (1, 1)] + [(0, 0)] * (source.ndim - 2))
        coords = coords + 1
        h, w = h + 2, w + 2
    x, y = coords[..., 0], coords[..., 1]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    if source.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return source[np.clip(yy, 0, h - 1).astype(int), np.clip(xx, 0, w - 1).astype(int)]

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def oval_mask(size: int) -> np.ndarray:
    """A feathered oval inside a box mask: large exactly-zero corners inside the crop."""
    oval = np.zeros((size, size), dtype=np.float32)
    cv2.ellipse(oval, (size // 2, size // 2), (size * 3 // 10, size * 4 // 10), 0, 0, 360, 1.0, -1)
    return combine_masks(box_mask(size, 0.3), feather(oval, size / 64))


@pytest.mark.parametrize("twist", [False, True], ids=["aligned", "rotated-subpixel"])
def test_paste_back_is_the_exact_inverse_warp_and_leaves_the_rest_alone(
    tmp_path: Path, twist: bool
) -> None:
    frame = cv2.imread(str(ASTRONAUT))
    assert frame is not None
    size = 512
    matrix = align.alignment_matrix(ASTRONAUT_POINTS5, "arcface_112_v1", size)
    if twist:
        matrix = rotated(matrix, size, 13.0, (0.37, 0.61))
    assert np.abs(matrix[:, 2] - np.round(matrix[:, 2])).min() > 0.01  # sub-pixel
    crop = align.warp_crop(frame, matrix, size, border="replicate")
    swapped = 255 - crop  # a visible "swap": every face pixel changes
    mask = oval_mask(size)
    out = frame.copy()
    paste_back(out, swapped, mask, matrix)

    coords = crop_coordinates(frame.shape, matrix)
    alpha = bilinear(mask, coords, replicate=False)[..., None]
    expected = frame * (1 - alpha) + bilinear(swapped, coords, replicate=True) * alpha
    x0, y0, x1, y1 = paste_region(frame.shape, crop.shape, matrix)
    roi = (slice(y0, y1), slice(x0, x1))
    # OpenCV samples on a 1/32-px grid with fixed-point weights; the exact bilinear differs by
    # at most a level or two (about 65 dB here); half a pixel off would cost ~25 dB.
    assert psnr(out[roi], np.rint(expected[roi])) > 55
    assert np.abs(out[roi].astype(int) - np.rint(expected[roi])).max() <= 2
    # Pixels no nonzero mask pixel can reach (bilinear reads 2x2 neighbours) are untouched.
    reach = cv2.dilate((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8))
    inside = (coords[..., 0] > -2) & (coords[..., 0] < size + 1)
    inside &= (coords[..., 1] > -2) & (coords[..., 1] < size + 1)
    ix = np.clip(np.rint(coords[..., 0]), 0, size - 1).astype(int)
    iy = np.clip(np.rint(coords[..., 1]), 0, size - 1).astype(int)
    unreachable = ~inside | (reach[iy, ix] == 0)
    in_roi = np.zeros(frame.shape[:2], dtype=bool)
    in_roi[roi] = True
    assert (unreachable & in_roi).sum() > 1000  # the oval's corners inside the ROI
    np.testing.assert_array_equal(out[unreachable], frame[unreachable])
    assert np.abs(out[~unreachable].astype(int) - frame[~unreachable]).mean() > 30


def test_identity_swap_pasted_back_keeps_the_face(tmp_path: Path) -> None:
    """An identity SimSwap 512 round trip: PSNR ≥ 45 dB inside the face, bit-identical outside.

    The portrait is used at 0.75 scale, so the 512 crop magnifies the face about 5× (a 128-px
    face in a 512 crop). A bilinear round trip frame → crop → frame errs by about h/4 times the
    local second difference, h being the crop pixel spacing in frame pixels: at the native 3.7×
    it costs 43-44 dB here, at inswapper's 0.9× about 34 dB, whatever the paste-back does (the
    paste-back's own geometry is checked against an exact reference in the test above).
    """
    scale = 0.75
    source = cv2.imread(str(ASTRONAUT))
    assert source is not None
    frame = cv2.resize(source, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    points = ASTRONAUT_POINTS5 * scale
    rng = np.random.default_rng(11)
    converter = graphs.converter(tmp_path / "c.onnx", rng.normal(size=(512, 512)), np.zeros(512))
    model = SimSwap512(
        graphs.simswap(tmp_path / "id.onnx", 512, identity=True), converter, CPU_ONLY
    )
    latent = model.identity_latent(rng.normal(size=512))
    for twist in (False, True):
        matrix = align.alignment_matrix(points, model.template, model.crop_size)
        if twist:
            matrix = rotated(matrix, model.crop_size, -21.0, (0.23, -0.71))
        crop = align.warp_crop(frame, matrix, model.crop_size, border="replicate")
        (swapped,) = model.swap_crops([crop], latent)
        np.testing.assert_array_equal(swapped, crop)
        mask = oval_mask(model.crop_size)
        out = frame.copy()
        paste_back(out, swapped, mask, matrix)
        alpha = bilinear(mask, crop_coordinates(frame.shape, matrix), replicate=False)
        face = alpha > 0.999
        assert face.sum() > 2000
        assert psnr(out[face], frame[face]) >= 45
        far = alpha == 0  # the exact-zero test is above; here: nothing else moved at all
        far &= cv2.dilate((alpha > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        np.testing.assert_array_equal(out[far], frame[far])


def test_paste_back_off_frame_and_partly_off_frame() -> None:
    frame = np.full((100, 120, 3), 50, dtype=np.uint8)
    crop = np.full((64, 64, 3), 203, dtype=np.uint8)
    mask = np.ones((64, 64), dtype=np.float32)
    off = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 0.0]])  # crop (0,0) is frame (−500, 0)
    assert paste_region(frame.shape, crop.shape, off) == (0, 0, 0, 64)
    out = frame.copy()
    paste_back(out, crop, mask, off)
    np.testing.assert_array_equal(out, frame)
    part = np.array([[1.0, 0.0, 32.25], [0.0, 1.0, 10.0]])  # crop (0,0) is frame (−32.25, −10)
    assert paste_region(frame.shape, crop.shape, part) == (0, 0, 32, 54)
    out = frame.copy()
    paste_back(out, crop, mask, part)
    assert (out[:54, :31] == 203).all()
    # Frame column 31 is crop column 63.25: mask 0.75, 50·0.25 + 203·0.75 = 164.75 → 165
    # (rounded, not truncated).
    assert (out[:54, 31] == 165).all()
    np.testing.assert_array_equal(out[54:], frame[54:])
    np.testing.assert_array_equal(out[:, 32:], frame[:, 32:])
