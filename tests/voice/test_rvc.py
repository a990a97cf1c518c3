"""The `rvc` backend on synthetic graphs with the real models' names and shapes.

The graphs (`tests.voice.rvc_graphs`) are a strided box-filter encoder, a generator that sings a
sine at ``pitchf`` on voiced frames, and an RMVPE stand-in with a fixed salience peak; every
session run is recorded, so the tests read what each graph was fed.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.devices import WorkerResources
from farm.errors import ChecksumMismatch, ModelError, SpecError
from farm.face.onnx.runtime import CPU, SessionFactory
from farm.fsutil import sha256_file
from farm.models import file_entry, write_manifest
from farm.voice import weights
from farm.voice.model import VoiceProfile
from farm.voice.rvc_pitch import (
    CENTS_BASE,
    coarse_pitch,
    mel_filterbank,
    rmvpe_log_mel,
    salience_to_cents,
    salience_to_f0,
)
from farm.voice.settings import RvcSettings, VoiceSettings
from farm.voice.signal import resample, speech_bounds
from farm.voice.synth import SynthRequest, create_synth, needs_target_profile
from farm.voice.synth.rvc import RvcSynth
from tests.voice import rvc_graphs as graphs
from tests.voice.helpers import median_f0, write_tone

PAD = 8000
"""The backend's reflect padding at 16 kHz with the default edge_pad_s of 0.5 s."""


@dataclass(frozen=True)
class Models:
    root: Path
    sha: dict[str, str]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("rvc-models")
    graphs.encoder_graph(root / "enc.onnx")
    graphs.encoder_graph(root / "enc_r2.onnx", rank=2, channels_last=False)
    graphs.encoder_graph(root / "enc256.onnx", channels=256)
    graphs.generator_graph(root / "gen40.onnx", sample_rate=40000)
    graphs.generator_graph(root / "gen48.onnx", sample_rate=48000)
    (root / "gen48.json").write_text(json.dumps({"sr": "48k"}), encoding="utf-8")
    graphs.generator_graph(root / "gen32.onnx", sample_rate=32000, metadata={"sr": "32000"})
    graphs.generator_graph(root / "gen_norate.onnx", sample_rate=40000)
    graphs.rmvpe_graph(root / "rmvpe.onnx", peak_bin=100.0)
    return Models(root, {p.name: sha256_file(p) for p in root.glob("*.onnx")})


def rvc_settings(models: Models, **update: object) -> VoiceSettings:
    generator = str(update.pop("generator", "gen40.onnx"))
    encoder = str(update.pop("encoder", "enc.onnx"))
    values: dict[str, object] = {
        "models_dir": models.root,
        "generator": generator,
        "generator_sha256": models.sha.get(generator),
        "generator_sample_rate": 40000 if generator == "gen40.onnx" else None,
        "encoder": encoder,
        "encoder_sha256": models.sha.get(encoder),
        "rmvpe": "rmvpe.onnx",
        "rmvpe_sha256": models.sha["rmvpe.onnx"],
        "match_target_f0": False,
    }
    values.update(update)
    return VoiceSettings(mode="rvc", rvc=RvcSettings.model_validate(values))


def make(
    settings: VoiceSettings,
    recorder: graphs.RecordingSessions | None = None,
    *,
    resources: WorkerResources | None = None,
    target: VoiceProfile | None = None,
    refs: list[Path] | None = None,
) -> tuple[RvcSynth, graphs.RecordingSessions]:
    recorder = recorder or graphs.RecordingSessions()
    sessions = SessionFactory("cpu", available=(CPU,), create=recorder)
    synth = RvcSynth(
        settings, refs or [], target, resources or WorkerResources(), sessions=sessions
    )
    return synth, recorder


def burst(rate: int, length: int, freq: float = 200.0) -> np.ndarray:
    """A sine from 25 % to 75 % of the length, digital silence around it."""
    x = np.zeros(length, dtype=np.float32)
    on = np.arange(length // 4, 3 * length // 4)
    x[on] = 0.3 * np.sin(2 * np.pi * freq * on / rate)
    return x


def request(
    x: np.ndarray, rate: int, seed: int = 7, source_profile: VoiceProfile | None = None
) -> SynthRequest:
    return SynthRequest(0, None, "en", x, rate, seed, source_profile=source_profile)


def profile(median_hz: float) -> VoiceProfile:
    log = math.log(median_hz)
    return VoiceProfile(log, log, 0.1, 1500.0, 3.0, 16000)


def voiced_median(pitchf: np.ndarray) -> float:
    return float(np.median(pitchf[pitchf > 0]))


@pytest.fixture(scope="module")
def synth40(models: Models) -> tuple[RvcSynth, graphs.RecordingSessions]:
    return make(rvc_settings(models))


@pytest.mark.parametrize(
    ("rate", "length", "generator", "generator_rate"),
    [
        (44100, 44101, "gen40.onnx", 40000),
        (48000, 40001, "gen48.onnx", 48000),  # rate from the sidecar gen48.json
        (16000, 16001, "gen32.onnx", 32000),  # rate from the ONNX metadata
        (22050, 22051, "gen40.onnx", 40000),
    ],
)
def test_output_has_the_input_length_and_timing_through_every_graph(
    models: Models, rate: int, length: int, generator: str, generator_rate: int
) -> None:
    synth, rec = make(rvc_settings(models, generator=generator))
    assert synth.sample_rate == generator_rate
    x = burst(rate, length)
    out, out_rate = synth.synthesize(request(x, rate))
    assert out_rate == rate and out.dtype == np.float32 and out.shape == x.shape

    # the encoder saw the sentence at 16 kHz, padded by whole frames to a multiple of 320
    source = rec.last("enc.onnx")["source"]
    padded = source.shape[2]
    assert source.shape[:2] == (1, 1) and padded % 320 == 0
    assert padded - 2 * PAD - resample(x, rate, 16000).size in range(320)
    frames = rec.last("enc.onnx")["@out"].shape[1]
    assert frames == (padded - graphs.ENCODER_KERNEL) // graphs.ENCODER_STRIDE + 1

    # ×2 to 10 ms frames, pitch aligned to the same N2, audio N2 · rate / 100 samples
    gen = rec.last(generator)
    n2 = min(2 * frames, padded // 160)
    assert gen["phone"].shape == (1, n2, 768)
    assert gen["phone_lengths"].tolist() == [n2]
    assert gen["pitch"].shape == gen["pitchf"].shape == (1, n2)
    assert gen["rnd"].shape == (1, 192, n2)
    assert gen["@out"].shape == (1, 1, n2 * generator_rate // 100)
    assert np.array_equal(gen["pitch"], coarse_pitch(gen["pitchf"]))

    # the sung part sits where the source's speech was, at its pitch and level
    bounds_in = speech_bounds(x, rate, 40.0, -60.0)
    bounds_out = speech_bounds(out, rate, 40.0, -60.0)
    assert bounds_in is not None and bounds_out is not None
    tolerance = 0.02 * rate
    assert abs(bounds_out[0] - bounds_in[0]) <= tolerance
    assert abs(bounds_out[1] - bounds_in[1]) <= tolerance
    assert median_f0(out, rate) == pytest.approx(200.0, rel=0.02)
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)


@settings(max_examples=8, deadline=None)
@given(
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    length=st.integers(min_value=1, max_value=12000),
)
def test_any_length_at_any_rate_comes_back_exactly(
    synth40: tuple[RvcSynth, graphs.RecordingSessions], rate: int, length: int
) -> None:
    synth, _ = synth40
    t = np.arange(length) / rate
    x = (0.2 * np.sin(2 * np.pi * 180.0 * t)).astype(np.float32)
    out, out_rate = synth.synthesize(request(x, rate))
    assert out_rate == rate and out.shape == (length,) and np.isfinite(out).all()


def test_empty_sentence_gives_empty_audio(
    synth40: tuple[RvcSynth, graphs.RecordingSessions],
) -> None:
    out, rate = synth40[0].synthesize(request(np.zeros(0, np.float32), 44100))
    assert out.shape == (0,) and rate == 44100


def test_key_shift_and_the_identitys_pitch_range(models: Models, tmp_path: Path) -> None:
    rate = 44100
    x = burst(rate, 44100)

    def pitch_fed(synth: RvcSynth, rec: graphs.RecordingSessions, **kw: object) -> float:
        synth.synthesize(request(x, rate, **kw))  # type: ignore[arg-type]
        pitchf = rec.last("gen40.onnx")["pitchf"][0]
        return voiced_median(pitchf)

    synth, rec = make(rvc_settings(models))
    assert pitch_fed(synth, rec) == pytest.approx(200.0, rel=0.01)

    synth, rec = make(rvc_settings(models, transpose_semitones=12.0))
    out, _ = synth.synthesize(request(x, rate))
    assert voiced_median(rec.last("gen40.onnx")["pitchf"][0]) == pytest.approx(400.0, rel=0.01)
    assert median_f0(out, rate) == pytest.approx(400.0, rel=0.02)

    # onto the identity's median: from this sentence, or from the track's profile when given
    matched = rvc_settings(models, match_target_f0=True)
    synth, rec = make(matched, target=profile(150.0))
    assert pitch_fed(synth, rec) == pytest.approx(150.0, rel=0.01)
    assert pitch_fed(synth, rec, source_profile=profile(250.0)) == pytest.approx(120.0, rel=0.01)
    down = rvc_settings(models, match_target_f0=True, transpose_semitones=-12.0)
    synth, rec = make(down, target=profile(150.0))
    assert pitch_fed(synth, rec) == pytest.approx(75.0, rel=0.01)

    # no profile given: computed from the identity's reference clips
    refs = [write_tone(tmp_path / "ref.wav", 3.5, freq=150.0)]
    synth, rec = make(matched, refs=refs)
    assert synth.target is not None
    assert pitch_fed(synth, rec) == pytest.approx(150.0, rel=0.03)


def test_same_seed_same_voice_and_the_speaker_id_reaches_the_generator(models: Models) -> None:
    synth, rec = make(rvc_settings(models, speaker_id=3))
    x = burst(48000, 30001)
    first, _ = synth.synthesize(request(x, 48000, seed=11))
    fed = rec.last("gen40.onnx")
    again, _ = synth.synthesize(request(x, 48000, seed=11))
    other, _ = synth.synthesize(request(x, 48000, seed=12))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert fed["ds"].tolist() == [3]
    noise = np.random.default_rng(11).standard_normal(fed["rnd"].shape, dtype=np.float32)
    assert np.array_equal(fed["rnd"], noise * np.float32(0.66666))


def test_encoder_layouts_rank_2_input_and_channels_first_give_the_same_voice(
    models: Models,
) -> None:
    x = burst(44100, 33333)
    base, _ = make(rvc_settings(models))
    other, rec = make(rvc_settings(models, encoder="enc_r2.onnx"))
    expected, _ = base.synthesize(request(x, 44100))
    got, _ = other.synthesize(request(x, 44100))
    assert rec.last("enc_r2.onnx")["source"].ndim == 2
    assert rec.last("enc_r2.onnx")["@out"].shape[1] == 768
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_rmvpe_pitch_is_decoded_and_fed_on_voiced_frames(models: Models) -> None:
    synth, rec = make(rvc_settings(models, f0_method="rmvpe"))
    x = burst(16000, 32000)
    synth.synthesize(request(x, 16000))
    mel = rec.last("rmvpe.onnx")["input"]
    padded = rec.last("enc.onnx")["source"].shape[2]
    assert mel.shape[:2] == (1, 128) and mel.shape[2] % 32 == 0
    assert mel.shape[2] >= padded // 160 + 1
    pitchf = rec.last("gen40.onnx")["pitchf"][0]
    expected = salience_to_f0(graphs.rmvpe_peak(100.0)[None], 0.03)[0]
    assert expected == pytest.approx(10 * 2 ** ((CENTS_BASE + 2000) / 1200), rel=1e-5)
    voiced = pitchf > 0
    assert np.allclose(pitchf[voiced], expected, rtol=1e-5)
    # voiced around the burst: frames 50..150 of the sentence (the reflected pad is cut later)
    frames = np.flatnonzero(voiced[PAD // 160 : PAD // 160 + 200])
    assert abs(frames[0] - 50) <= 3 and abs(frames[-1] - 150) <= 3


def test_coarse_pitch_is_rvcs_mel_quantisation() -> None:
    f0 = np.array([0.0, 30.0, 50.0, 100.0, 200.0, 440.0, 1100.0, 2000.0])
    mel_min, mel_max = 1127 * math.log(1 + 50 / 700), 1127 * math.log(1 + 1100 / 700)
    expected = []
    for f in f0:
        mel = 1127 * math.log(1 + f / 700)
        if mel > 0:
            mel = (mel - mel_min) * 254 / (mel_max - mel_min) + 1
        expected.append(int(np.rint(min(max(mel, 1), 255))))
    assert coarse_pitch(f0).tolist() == expected
    assert expected[0] == expected[1] == expected[2] == 1 and expected[-2:] == [255, 255]
    assert coarse_pitch(f0).dtype == np.int64


def test_salience_decode_is_the_local_weighted_average() -> None:
    salience = np.zeros((4, 360), dtype=np.float32)
    salience[0, 98:103] = [0.1, 0.5, 1.0, 0.5, 0.1]  # symmetric: exactly bin 100
    salience[1, 0:3] = [1.0, 0.5, 0.0]  # at the edge: only bins inside count
    salience[2, 200] = 0.02  # below the 0.03 threshold: unvoiced
    salience[3, 359] = 0.5
    cents = salience_to_cents(salience, 0.03)
    assert cents[0] == pytest.approx(CENTS_BASE + 2000.0)
    assert cents[1] == pytest.approx(CENTS_BASE + 20.0 * (0.5 / 1.5))
    assert cents[2] == 0.0
    assert cents[3] == pytest.approx(CENTS_BASE + 20.0 * 359)
    f0 = salience_to_f0(salience, 0.03)
    assert f0[2] == 0.0 and f0[0] == pytest.approx(10 * 2 ** (cents[0] / 1200), rel=1e-6)
    with pytest.raises(ModelError, match="360"):
        salience_to_cents(np.zeros((3, 100)), 0.03)


def test_rmvpe_front_end_matches_librosa() -> None:
    """Reference numbers from librosa 0.11 (``filters.mel(htk=True)``; ``stft(center=True,
    pad_mode="reflect")`` magnitudes), pinned so the test needs no librosa import (3 s)."""
    basis = mel_filterbank(16000, 1024, 128, 30.0, 8000.0)
    assert basis.shape == (128, 513)
    assert float(basis.sum()) == pytest.approx(8.189247, rel=1e-5)
    for row, first, last, top in ((0, 2, 3, 0.05678504), (64, 115, 121, 0.02016606),
                                  (127, 492, 512, 0.00586089)):  # fmt: skip
        nonzero = np.flatnonzero(basis[row])
        assert (nonzero[0], nonzero[-1]) == (first, last)
        assert float(basis[row].max()) == pytest.approx(top, rel=1e-5)
    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(4001) / 16000)).astype(np.float32)
    got = rmvpe_log_mel(x)
    assert got.shape == (128, 26)
    expected = [-6.488984, 0.660401, 1.553069, 0.715966, -11.512925]
    np.testing.assert_allclose(got[[5, 10, 11, 12, 40], 12], expected, atol=1e-3)
    assert float(got.mean()) == pytest.approx(-8.956671, abs=1e-3)


def test_weights_are_verified_and_named_when_wrong(
    models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FARM_MODELS", raising=False)
    with pytest.raises(ChecksumMismatch, match=r"gen40\.onnx.*expected 0{64}"):
        make(rvc_settings(models, generator_sha256="0" * 64))
    with pytest.raises(SpecError, match=r"no pinned sha256: set voice\.rvc\.generator_sha256"):
        make(rvc_settings(models, generator_sha256=None))
    with pytest.raises(ModelError, match=r"missing\.onnx.*voice\.rvc\.generator") as missing:
        make(rvc_settings(models, generator="missing.onnx"))
    assert "\n" not in str(missing.value)
    with pytest.raises(ModelError, match=r"rmvpe\.onnx"):
        make(rvc_settings(models, f0_method="rmvpe", rmvpe="nope/rmvpe.onnx"))
    with pytest.raises(ModelError, match=r"\$FARM_MODELS"):
        make(rvc_settings(models, models_dir=None))
    with pytest.raises(ModelError, match=r"256-D features .* takes 768-D"):
        make(rvc_settings(models, encoder="enc256.onnx"))
    with pytest.raises(ModelError, match=r"lacks inputs .*phone"):
        make(rvc_settings(models, generator="enc.onnx"))
    with pytest.raises(ModelError, match=r"voice\.rvc\.generator_sample_rate"):
        make(rvc_settings(models, generator="gen_norate.onnx"))
    wrong, _ = make(rvc_settings(models, generator_sample_rate=48000))
    with pytest.raises(ModelError, match=r"returned \d+ samples for \d+ frames, expected"):
        wrong.synthesize(request(burst(16000, 8000), 16000))
    # Valid settings (a job takes the generator from the identity pack), but no backend.
    with pytest.raises(SpecError, match=r"needs voice\.rvc\.generator"):
        make(VoiceSettings(mode="rvc"))

    # $FARM_MODELS stands in for models_dir
    monkeypatch.setenv("FARM_MODELS", str(models.root))
    synth, _ = make(rvc_settings(models, models_dir=None))
    assert synth.sample_rate == 40000


def test_manifest_pins_a_generator_registered_by_name(models: Models, tmp_path: Path) -> None:
    for name in ("gen40.onnx", "enc.onnx"):
        shutil.copy(models.root / name, tmp_path / name)
    write_manifest(
        tmp_path,
        [
            file_entry(tmp_path, "alice-rvc", "gen40.onnx", kind="rvc-generator", licence="x",
                       source="alice's consented recordings"),
            file_entry(tmp_path, "contentvec", "enc.onnx", kind="content-encoder", licence="MIT",
                       source="test"),
        ],
    )  # fmt: skip
    rvc = RvcSettings(
        models_dir=tmp_path, generator="alice-rvc", encoder="enc.onnx", generator_sample_rate=40000
    )
    synth, rec = make(VoiceSettings(mode="rvc", rvc=rvc))
    synth.synthesize(request(burst(16000, 8000), 16000))
    assert rec.opened == ["gen40.onnx", "enc.onnx"]


def test_sessions_and_hashes_are_cached_per_worker(
    models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []
    real = weights.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(weights, "sha256_file", counting)
    resources = WorkerResources()
    recorder = graphs.RecordingSessions()
    cfg = rvc_settings(models, f0_method="rmvpe")
    for _ in range(3):
        make(cfg, recorder, resources=resources)
    assert sorted(recorder.opened) == ["enc.onnx", "gen40.onnx", "rmvpe.onnx"]
    assert len(hashed) == 3


def test_registry_settings_and_default_sessions(models: Models) -> None:
    cfg = rvc_settings(models)
    assert cfg.backend_name() == "rvc" and needs_target_profile("rvc")
    synth = create_synth("rvc", cfg, [], None, WorkerResources())
    assert isinstance(synth, RvcSynth) and synth.keeps_timing and synth.name == "rvc"
    out, _ = synth.synthesize(request(burst(16000, 4001), 16000))
    assert out.shape == (4001,)
    synth.close()
