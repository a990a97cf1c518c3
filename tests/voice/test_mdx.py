"""The `mdx` separator on synthetic MDX-Net graphs (``input``/``output`` [batch, 4, dim_f, dim_t]).

The graphs multiply the spectrogram by a per-bin mask: all ones (the identity: the separated
stem is the band-limited mix) or a low-pass (voice = the low tone, background = the high one).
Small STFT parameters (n_fft 1024, hop 256, dim_f 256, dim_t 32) keep each run in milliseconds.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from farm.devices import WorkerResources
from farm.errors import ChecksumMismatch, ModelError, SpecError
from farm.face.onnx.runtime import CPU, SessionFactory
from farm.fsutil import sha256_file
from farm.voice.mdx import KNOWN_SHA256, VOC_FT, MdxSeparator, Spectrogram
from farm.voice.separate import create_separator
from farm.voice.settings import MdxSettings, VoiceSettings
from tests.voice import rvc_graphs as graphs

DIM_F, DIM_T, N_FFT, HOP = 256, 32, 1024, 256
CUTOFF_BIN = 64
"""The low-pass graph keeps bins below 64 · 44100 / 1024 ≈ 2.76 kHz."""


@dataclass(frozen=True)
class Models:
    root: Path
    sha: dict[str, str]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("mdx-models")
    graphs.mdx_graph(root / "identity.onnx", dim_f=DIM_F, dim_t=DIM_T)
    graphs.mdx_graph(root / "batch1.onnx", dim_f=DIM_F, dim_t=DIM_T, batch=1)
    lowpass = (np.arange(DIM_F) < CUTOFF_BIN).astype(np.float32)
    graphs.mdx_graph(root / "lowpass.onnx", dim_f=DIM_F, dim_t=DIM_T, mask=lowpass)
    return Models(root, {p.name: sha256_file(p) for p in root.glob("*.onnx")})


def mdx_settings(models: Models, model: str = "identity.onnx", **update: object) -> MdxSettings:
    values: dict[str, object] = {
        "models_dir": models.root,
        "model": model,
        "sha256": models.sha.get(model),
        "n_fft": N_FFT,
        "hop_length": HOP,
        "dim_f": DIM_F,
        "dim_t": DIM_T,
        "compensate": 1.0,
    }
    values.update(update)
    return MdxSettings.model_validate(values)


def make(
    settings: MdxSettings, recorder: graphs.RecordingSessions | None = None
) -> tuple[MdxSeparator, graphs.RecordingSessions]:
    recorder = recorder or graphs.RecordingSessions()
    sessions = SessionFactory("cpu", available=(CPU,), create=recorder)
    return MdxSeparator(settings, WorkerResources(), sessions=sessions), recorder


def tones(rate: int, length: int, channels: int, freqs: tuple[float, ...]) -> np.ndarray:
    t = np.arange(length) / rate
    columns = [
        sum(0.2 * np.sin(2 * np.pi * f * (1 + 0.02 * c) * t + c) for f in freqs)
        for c in range(channels)
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def interior(audio: np.ndarray, rate: int) -> np.ndarray:
    """Without the first and last 50 ms (where the tones switch on and off)."""
    edge = rate // 20
    return audio[edge:-edge]


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1), (16000, 6), (22050, 3)])
def test_shapes_are_the_inputs_and_voice_plus_background_is_the_mix(
    models: Models, rate: int, channels: int
) -> None:
    separator, rec = make(mdx_settings(models))
    length = int(0.6 * rate) + 1
    mix = tones(rate, length, channels, (440.0, 1800.0))
    mix += np.random.default_rng(0).normal(0, 0.01, mix.shape).astype(np.float32)
    parts = separator.separate(mix, rate)
    assert parts.background is not None
    assert parts.voice.shape == parts.background.shape == mix.shape
    assert parts.voice.dtype == np.float32
    np.testing.assert_allclose(parts.voice + parts.background, mix, atol=1e-6)
    # the identity graph gives back the mix but for the noise outside its bins (3 .. dim_f)
    residual = float(np.sqrt(np.mean(interior(parts.voice - mix, rate) ** 2)))
    assert residual < 0.01, residual
    # every model call saw a [batch, 4, dim_f, dim_t] spectrogram
    assert {run["input"].shape[1:] for run in rec.runs["identity.onnx"]} == {(4, DIM_F, DIM_T)}


def test_identity_graph_reconstructs_a_stereo_track_at_44k(models: Models) -> None:
    separator, _ = make(mdx_settings(models))
    mix = tones(44100, 44101, 2, (330.0, 2500.0))
    parts = separator.separate(mix, 44100)
    assert np.abs(interior(parts.voice - mix, 44100)).max() < 1e-3
    # the two channels stay apart (left is not right)
    assert np.abs(interior(parts.voice[:, 0] - mix[:, 1], 44100)).max() > 0.1


def test_a_mask_model_splits_voice_from_background(models: Models) -> None:
    separator, _ = make(mdx_settings(models, "lowpass.onnx"))
    rate = 44100
    low, high = tones(rate, 30001, 2, (300.0,)), tones(rate, 30001, 2, (8000.0,))
    parts = separator.separate(low + high, rate)
    assert parts.background is not None
    assert np.abs(interior(parts.voice - low, rate)).max() < 0.01
    assert np.abs(interior(parts.background - high, rate)).max() < 0.01


def test_stem_compensate_and_denoise(models: Models) -> None:
    rate = 44100
    mix = tones(rate, 20001, 2, (500.0,))
    instrumental, _ = make(mdx_settings(models, stem="instrumental"))
    parts = instrumental.separate(mix, rate)
    assert parts.background is not None
    assert np.abs(interior(parts.voice, rate)).max() < 1e-3  # voice = mix − the model's stem
    np.testing.assert_allclose(parts.voice + parts.background, mix, atol=1e-6)

    louder, _ = make(mdx_settings(models, compensate=1.5))
    voice = louder.separate(mix, rate).voice
    assert np.abs(interior(voice - 1.5 * mix, rate)).max() < 2e-3

    plain = make(mdx_settings(models))[0].separate(mix, rate).voice
    denoised, rec = make(mdx_settings(models, denoise=True))
    np.testing.assert_allclose(denoised.separate(mix, rate).voice, plain, atol=1e-6)
    first = rec.runs["identity.onnx"]
    assert np.array_equal(first[1]["input"], -first[0]["input"])  # the model on x and −x


def test_graph_dims_win_and_batches_follow_the_graph(models: Models) -> None:
    rate = 44100
    mix = tones(rate, 44100, 2, (700.0,))
    separator, rec = make(mdx_settings(models, dim_f=128, dim_t=16, batch_size=3))
    assert (separator.dim_f, separator.dim_t) == (DIM_F, DIM_T)
    separator.separate(mix, rate)
    batches = [run["input"].shape[0] for run in rec.runs["identity.onnx"]]
    assert max(batches) == 3 and len(batches) >= 2

    fixed, rec = make(mdx_settings(models, "batch1.onnx", batch_size=4))
    fixed.separate(mix, rate)
    assert {run["input"].shape[0] for run in rec.runs["batch1.onnx"]} == {1}


def test_spectrogram_round_trip_is_exact() -> None:
    stft = Spectrogram(N_FFT, HOP, N_FFT // 2 + 1)
    waves = np.random.default_rng(1).normal(0, 0.3, (2, 2, HOP * (DIM_T - 1))).astype(np.float32)
    spec = stft.forward(waves)
    assert spec.shape == (2, 4, N_FFT // 2 + 1, DIM_T)
    # channel layout: left real, left imag, right real, right imag
    left = np.fft.rfft(np.pad(waves[0, 0], N_FFT // 2, mode="reflect")[:N_FFT] * stft.window)
    np.testing.assert_allclose(spec[0, 0, :, 0], left.real, atol=1e-4)
    np.testing.assert_allclose(spec[0, 1, :, 0], left.imag, atol=1e-4)
    np.testing.assert_allclose(stft.inverse(spec), waves, atol=1e-5)


def test_model_files_are_verified(models: Models, tmp_path: Path) -> None:
    with pytest.raises(ChecksumMismatch, match=r"identity\.onnx.*expected f{64}"):
        make(mdx_settings(models, sha256="f" * 64))
    with pytest.raises(ModelError, match=r"absent\.onnx.*voice\.mdx\.model"):
        make(mdx_settings(models, "absent.onnx"))
    with pytest.raises(SpecError, match=r"no pinned sha256: set voice\.mdx\.sha256"):
        make(mdx_settings(models, sha256=None))
    # the published Voc_FT hash is pinned: another file under that name is refused
    shutil.copy(models.root / "identity.onnx", tmp_path / VOC_FT)
    with pytest.raises(ChecksumMismatch, match=f"expected {KNOWN_SHA256[VOC_FT]}"):
        make(MdxSettings(models_dir=tmp_path, n_fft=N_FFT, hop_length=HOP, dim_f=DIM_F))
    with pytest.raises(ModelError, match="does not fit"):
        make(mdx_settings(models, n_fft=4096, hop_length=128, dim_f=256, dim_t=64))


def test_create_separator_builds_mdx(models: Models) -> None:
    settings = VoiceSettings(separator="mdx", mdx=mdx_settings(models))
    separator = create_separator(settings, WorkerResources())
    assert isinstance(separator, MdxSeparator) and separator.name == "mdx"
    mix = tones(32000, 16001, 2, (440.0,))
    parts = separator.separate(mix, 32000)
    assert parts.voice.shape == mix.shape
    assert create_separator(VoiceSettings()).name == "none"
