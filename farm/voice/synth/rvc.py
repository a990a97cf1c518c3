"""The `rvc` backend: Retrieval-based Voice Conversion v2 on onnxruntime, with the user's weights.

One RVC model per identity: the generator (``SynthesizerTrnMs768NSFsid`` exported to ONNX by the
RVC project's ``infer/modules/onnx/export.py``), plus a content encoder shared by all identities
(HuBERT base / ContentVec, e.g. ``vec-768-layer-12.onnx``) and, for ``f0_method: rmvpe``, the
RMVPE pitch model. Each sentence::

    source @ r ─ resample ─▶ 16 kHz ─ 48 Hz high-pass ─ reflect-pad ─┬─ encoder ─▶ [N, 768]
                                                                     │  @ 20 ms, ×2 ─▶ [N2, 768]
                                                                     └─ F0 @ 10 ms ─▶ N2 frames,
                                                                        key shift, coarse 1..255
    generator(phone, phone_lengths, pitch, pitchf, ds, rnd) ─▶ N2 · rate/100 samples @ rate
    ─ cut the padding ─ resample to r ─ exactly len(source) samples ─ RMS of the source

N2 = min(2N, padded // 160): N is what the encoder returned (a conv front end gives about
T // 320), never assumed. Output sample k lies at the source's sample k (``keeps_timing``), so
the stage places it without stretching, like ``vc``. The prior noise ``rnd`` is drawn from a
numpy Generator seeded with the request's seed, so a sentence voices the same on every run.

Not done (yet): RVC's faiss feature retrieval (``index_rate``) and its consonant ``protect``
blend, which only acts together with the retrieval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.signal import butter, sosfiltfilt

from farm.devices import WorkerResources
from farm.errors import FarmError, ModelError, SpecError
from farm.face.onnx.runtime import SessionFactory, run_bound
from farm.voice.model import VoiceProfile
from farm.voice.rvc_pitch import (
    HOP,
    SAMPLE_RATE,
    RmvpePitch,
    coarse_pitch,
    fit_frames,
    median_log_f0,
    shift_semitones,
    world_f0,
)
from farm.voice.settings import RvcSettings, VoiceSettings
from farm.voice.signal import fit_length, resample
from farm.voice.synth import SynthRequest
from farm.voice.weights import VoiceModel, cached_session, session_factory, verified_file
from farm.voice.world import profile_from_references

ENCODER_HOP = 320
"""16 kHz samples per content frame (20 ms)."""
FEATURE_SIZES = (256, 768)
"""Content feature sizes: v1 models take 256 (HuBERT's final projection), v2 take 768."""
GENERATOR_INPUTS = ("phone", "phone_lengths", "pitch", "pitchf", "ds", "rnd")
GENERATOR_RATES = (32000, 40000, 48000)
_HIGHPASS_HZ = 48.0
_MAX_GAIN = 10.0
_MAX_TARGET_SHIFT = 24.0

RVC_LICENCE = "MIT code (RVC-Project); the weights are the user's: check their training data"
RVC_SOURCE = (
    "the identity's RVC v2 model, exported with the RVC WebUI's ONNX export "
    "(infer/modules/onnx/export.py)"
)
ENCODER_SOURCE = (
    "ContentVec / HuBERT base ONNX, e.g. vec-768-layer-12.onnx "
    "(huggingface.co/NaruseMioShirakana/MoeSS-SUBModel)"
)
RMVPE_SOURCE = "rmvpe.onnx (huggingface.co/lj1995/VoiceConversionWebUI)"


def encoder_model(rvc: RvcSettings) -> VoiceModel:
    return VoiceModel(
        name="rvc-content-encoder",
        file=rvc.encoder,
        sha256=rvc.encoder_sha256,
        setting="voice.rvc.encoder",
        sha256_setting="voice.rvc.encoder_sha256",
        licence="MIT (ContentVec, HuBERT by fairseq); check the export's card",
        source=ENCODER_SOURCE,
        kind="content-encoder",
        output="[1, N, 768] (or [1, 768, N]) features at 20 ms of 16 kHz audio",
    )


def generator_model(rvc: RvcSettings) -> VoiceModel:
    if rvc.generator is None:
        raise SpecError("voice mode 'rvc' needs voice.rvc.generator (the identity's RVC .onnx)")
    return VoiceModel(
        name="rvc-generator",
        file=rvc.generator,
        sha256=rvc.generator_sha256,
        setting="voice.rvc.generator",
        sha256_setting="voice.rvc.generator_sha256",
        licence=RVC_LICENCE,
        source=RVC_SOURCE,
        kind="rvc-generator",
        output="audio [1, 1, N2 * rate / 100]",
    )


def rmvpe_model(rvc: RvcSettings) -> VoiceModel:
    return VoiceModel(
        name="rmvpe",
        file=rvc.rmvpe,
        sha256=rvc.rmvpe_sha256,
        setting="voice.rvc.rmvpe",
        sha256_setting="voice.rvc.rmvpe_sha256",
        licence="Apache-2.0 (RMVPE, Dream-High); check the export's card",
        source=RMVPE_SOURCE,
        kind="pitch-estimator",
        output="[1, frames, 360] pitch salience, 20 cents per bin",
    )


def _feed(value: np.ndarray, node: Any) -> np.ndarray:
    """``value`` in the dtype the graph input declares (float16 exports exist)."""
    return value.astype(np.float16) if node.type == "tensor(float16)" else value


def _run(session: Any, feeds: dict[str, np.ndarray], output: str, what: str) -> np.ndarray:
    try:
        (result,) = run_bound(session, feeds, [output])
    except FarmError:
        raise
    except Exception as exc:  # onnxruntime raises its own untyped errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{what} failed: {first}") from None
    return np.asarray(result, dtype=np.float32)


class ContentEncoder:
    """HuBERT / ContentVec features of 16 kHz audio: (frames, channels) at 20 ms."""

    def __init__(self, session: Any, path: Path) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        out_shape = list(outputs[0].shape) if outputs else []
        if len(inputs) != 1 or len(inputs[0].shape) not in (2, 3) or len(out_shape) != 3:
            raise ModelError(
                f"{path} is not a content encoder: expected one input [1, 1, T] or [1, T] and an "
                f"output [1, N, C], found inputs {[(i.name, i.shape) for i in inputs]}, outputs "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        self._session, self._path = session, path
        self._input = inputs[0]
        self._output = str(outputs[0].name)
        self._channel_axis = self._find_channel_axis(out_shape[1], out_shape[2])
        dim = out_shape[self._channel_axis] if self._channel_axis else None
        self.channels: int | None = dim if isinstance(dim, int) else None

    @staticmethod
    def _find_channel_axis(a: object, b: object) -> int | None:
        """Which output axis holds the features: the fixed one (frames are symbolic)."""
        fixed_a, fixed_b = isinstance(a, int), isinstance(b, int)
        if fixed_b and b in FEATURE_SIZES and not (fixed_a and a in FEATURE_SIZES):
            return 2
        if fixed_a and a in FEATURE_SIZES and not (fixed_b and b in FEATURE_SIZES):
            return 1
        if fixed_a != fixed_b:
            return 2 if fixed_b else 1
        return None

    def __call__(self, x16: np.ndarray) -> np.ndarray:
        wave = np.asarray(x16, dtype=np.float32)
        feed = wave[None, None] if len(self._input.shape) == 3 else wave[None]
        out = _run(
            self._session,
            {self._input.name: _feed(feed, self._input)},
            self._output,
            f"content encoder {self._path}",
        )
        if out.ndim != 3 or out.shape[0] != 1:
            raise ModelError(f"content encoder {self._path} returned {out.shape}, not [1, N, C]")
        axis = self._channel_axis
        if axis is None:
            axis = 1 if out.shape[1] in FEATURE_SIZES and out.shape[2] not in FEATURE_SIZES else 2
        feats = out[0] if axis == 2 else out[0].T
        return np.ascontiguousarray(feats, dtype=np.float32)


class RvcGenerator:
    """An RVC generator export: (phone, phone_lengths, pitch, pitchf, ds, rnd) → audio."""

    def __init__(self, session: Any, path: Path) -> None:
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        missing = [name for name in GENERATOR_INPUTS if name not in inputs]
        if missing or not outputs:
            hint = (
                "; a model trained without pitch guidance (the _nono export) is not supported"
                if "pitch" in missing
                else ""
            )
            raise ModelError(
                f"{path} is not an RVC generator export: it lacks inputs {missing} (has "
                f"{sorted(inputs)}){hint}"
            )
        self._session, self._path, self._inputs = session, path, inputs
        self._output = "audio" if "audio" in outputs else outputs[0]
        phone = list(inputs["phone"].shape)
        rnd = list(inputs["rnd"].shape)
        self.channels: int | None = (
            phone[2] if len(phone) == 3 and isinstance(phone[2], int) else None
        )
        self.noise_channels: int = rnd[1] if len(rnd) == 3 and isinstance(rnd[1], int) else 192

    def __call__(
        self,
        phone: np.ndarray,
        pitch: np.ndarray,
        pitchf: np.ndarray,
        speaker_id: int,
        rnd: np.ndarray,
    ) -> np.ndarray:
        frames = phone.shape[0]
        feeds: dict[str, np.ndarray] = {
            "phone": phone[None].astype(np.float32),
            "phone_lengths": np.array([frames], dtype=np.int64),
            "pitch": pitch[None].astype(np.int64),
            "pitchf": pitchf[None].astype(np.float32),
            "ds": np.array([speaker_id], dtype=np.int64),
            "rnd": rnd.astype(np.float32),
        }
        feeds = {name: _feed(value, self._inputs[name]) for name, value in feeds.items()}
        audio = _run(
            self._session,
            feeds,
            self._output,
            f"RVC generator {self._path} (speaker id {speaker_id})",
        )
        return audio.reshape(-1)


def _parse_rate(value: object) -> int | None:
    """40000, "40000" or RVC's "40k"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)
        except ValueError:
            return None
    return None


def _rate_in(mapping: dict[str, Any]) -> object:
    for key in ("sample_rate", "sr", "samplingRate"):
        if key in mapping:
            return mapping[key]
    return None


def generator_sample_rate(rvc: RvcSettings, path: Path, session: Any) -> int:
    """The generator's output rate: the setting, else its sidecar ``<name>.json``, else the
    ONNX metadata (``sample_rate``/``sr``, or ``samplingRate`` in a ``metadata`` JSON)."""
    if rvc.generator_sample_rate is not None:
        return rvc.generator_sample_rate
    sidecar = path.with_suffix(".json")
    found: object = None
    where = ""
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read {sidecar}: {exc}") from None
        found, where = (_rate_in(data) if isinstance(data, dict) else None), str(sidecar)
    if found is None:
        meta = dict(session.get_modelmeta().custom_metadata_map or {})
        found = _rate_in(meta)
        if found is None and "metadata" in meta:
            try:
                nested = json.loads(meta["metadata"])
            except json.JSONDecodeError:
                nested = None
            found = _rate_in(nested) if isinstance(nested, dict) else None
        where = f"{path}'s metadata"
    if found is None:
        raise ModelError(
            f"cannot tell the output rate of RVC generator {path}: set "
            "voice.rvc.generator_sample_rate (32000, 40000 or 48000, the 'sr' it was trained at) "
            f'or write {sidecar} with {{"sample_rate": 40000}}'
        )
    rate = _parse_rate(found)
    if rate not in GENERATOR_RATES:
        raise ModelError(
            f"{where} gives the RVC generator's rate as {found!r}; expected one of "
            f"{', '.join(map(str, GENERATOR_RATES))}"
        )
    return rate


class RvcSynth:
    """Converts the original sentence into the identity's voice with its RVC model."""

    name: ClassVar[str] = "rvc"
    keeps_timing: ClassVar[bool] = True

    def __init__(
        self,
        settings: VoiceSettings,
        voice_refs: Sequence[Path],
        target: VoiceProfile | None,
        resources: WorkerResources,
        *,
        sessions: SessionFactory | None = None,
    ) -> None:
        rvc = settings.rvc
        self._rvc = rvc
        factory = session_factory(rvc.device, resources, sessions)
        gen_path, gen_sha = verified_file(generator_model(rvc), rvc.models_dir, resources)
        enc_path, enc_sha = verified_file(encoder_model(rvc), rvc.models_dir, resources)
        gen_session = cached_session(gen_path, gen_sha, factory, resources)
        self._generator = RvcGenerator(gen_session, gen_path)
        self._encoder = ContentEncoder(
            cached_session(enc_path, enc_sha, factory, resources), enc_path
        )
        wanted, given = self._generator.channels, self._encoder.channels
        if wanted is not None and given is not None and wanted != given:
            raise ModelError(
                f"content encoder {enc_path} gives {given}-D features but RVC generator "
                f"{gen_path} takes {wanted}-D (v1 models take 256, v2 768): give the matching "
                "voice.rvc.encoder"
            )
        self.sample_rate = generator_sample_rate(rvc, gen_path, gen_session)
        """The generator's output rate."""
        self._rmvpe: RmvpePitch | None = None
        if rvc.f0_method == "rmvpe":
            path, sha = verified_file(rmvpe_model(rvc), rvc.models_dir, resources)
            self._rmvpe = RmvpePitch(cached_session(path, sha, factory, resources), path)
        if target is None and rvc.match_target_f0 and voice_refs:
            target = profile_from_references(voice_refs, settings.vc, settings.reference_min_s)
        self._target = target
        self._highpass = butter(5, _HIGHPASS_HZ, btype="high", fs=SAMPLE_RATE, output="sos")

    @property
    def target(self) -> VoiceProfile | None:
        return self._target

    def f0(self, x16: np.ndarray) -> np.ndarray:
        """F0 (Hz) of 16 kHz audio at 10 ms frames with the configured extractor."""
        if self._rmvpe is not None:
            return self._rmvpe(x16, self._rvc.rmvpe_threshold)
        return world_f0(x16, "harvest" if self._rvc.f0_method == "harvest" else "dio")

    def semitones(self, f0_core: np.ndarray, source: VoiceProfile | None) -> float:
        """The key change: the setting, plus the move of the source's median F0 onto the
        identity's (from the sentence itself when the track's profile is not given)."""
        shift = self._rvc.transpose_semitones
        target = self._target
        if not self._rvc.match_target_f0 or target is None or target.voiced_seconds <= 0:
            return shift
        if source is not None and source.voiced_seconds > 0:
            src: float | None = source.log_f0_median
        else:
            src = median_log_f0(f0_core)
        if src is None:
            return shift
        move = 12.0 * (target.log_f0_median - src) / math.log(2.0)
        return shift + float(np.clip(move, -_MAX_TARGET_SHIFT, _MAX_TARGET_SHIFT))

    def synthesize(self, request: SynthRequest) -> tuple[np.ndarray, int]:
        x = np.asarray(request.source, dtype=np.float32)
        rate = request.sample_rate
        if x.size == 0:
            return x.copy(), rate
        x16 = resample(x, rate, SAMPLE_RATE)
        if x16.size == 0:  # one sample at 44.1 kHz resamples to none
            x16 = np.zeros(1, dtype=np.float32)
        if x16.size > 64:
            x16 = sosfiltfilt(self._highpass, x16).astype(np.float32)
        # Reflected audio either side keeps the models' edge effects off the sentence; the left
        # pad is whole 10 ms frames, so it maps to whole output samples at any generator rate.
        pad_frames = math.ceil(self._rvc.edge_pad_s * SAMPLE_RATE / HOP)
        left = pad_frames * HOP
        right = left + (-(x16.size + 2 * left)) % ENCODER_HOP
        padded = np.pad(x16, (left, right), mode="reflect" if x16.size > 1 else "edge")

        feats = self._encoder(padded)
        frames = min(2 * feats.shape[0], padded.size // HOP)
        if frames < 1:
            raise ModelError(f"content encoder returned no frames for {padded.size} samples")
        phone = np.repeat(feats, 2, axis=0)[:frames]
        f0 = fit_frames(self.f0(padded), frames)
        core = f0[pad_frames : pad_frames + x16.size // HOP]
        f0 = shift_semitones(f0, self.semitones(core, request.source_profile))
        noise = np.random.default_rng(request.seed).standard_normal(
            (1, self._generator.noise_channels, frames), dtype=np.float32
        )
        audio = self._generator(
            phone,
            coarse_pitch(f0),
            f0,
            self._rvc.speaker_id,
            noise * np.float32(self._rvc.noise_scale),
        )
        hop_out = self.sample_rate // 100
        if audio.size != frames * hop_out:
            raise ModelError(
                f"RVC generator returned {audio.size} samples for {frames} frames, expected "
                f"{frames * hop_out} at {self.sample_rate} Hz: check "
                "voice.rvc.generator_sample_rate"
            )
        wanted = math.ceil(x.size * self.sample_rate / rate)
        voiced = fit_length(audio[pad_frames * hop_out :], wanted)
        out = fit_length(resample(voiced, self.sample_rate, rate), x.size)
        if self._rvc.match_loudness:
            out = _match_rms(out, x)
        return out, rate

    def close(self) -> None:
        return None


def _match_rms(out: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``out`` scaled to the source's RMS (at most ×10, so near-silence is not blown up)."""
    have = float(np.sqrt(np.mean(np.square(out, dtype=np.float64))))
    want = float(np.sqrt(np.mean(np.square(source, dtype=np.float64))))
    if have <= 1e-9:
        return out
    return (out * np.float32(min(want / have, _MAX_GAIN))).astype(np.float32)
