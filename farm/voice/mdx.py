"""The `mdx` separator: a UVR MDX-Net ONNX model (e.g. ``UVR-MDX-NET-Voc_FT.onnx``), user-supplied.

The model maps a stereo spectrogram to the spectrogram of one stem: input ``input`` float32
[batch, 4, dim_f, dim_t], output the same shape. The four channels are (left real, left imag,
right real, right imag) of an STFT at 44.1 kHz (periodic Hann window of n_fft, hop 1024, centred
frames with reflect padding; only the lowest dim_f bins, the first 3 zeroed). The STFT/iSTFT run
here, in numpy; the settings give n_fft, hop, dim_f, dim_t, the stem gain ``compensate`` and which
stem the model outputs; dim_f and dim_t are read from the graph when it fixes them. UVR's model
table gives Voc_FT n_fft 7680, dim_f 3072, dim_t 256, compensate 1.021, vocals.

The track is cut into chunks of hop·(dim_t − 1) samples (after n_fft/2 of silence each side),
stepped by (1 − overlap)·chunk and blended with a Hann window, as UVR does, then trimmed back to
the input's length. Voice = the model's stem (or mix − stem for an instrumental model), and the
background = mix − voice at the input's rate, so voice + background is the mix exactly. Input is
resampled to 44.1 kHz and back; channels go through the model in pairs (a mono track as both
sides of a stereo pair, 5.1 as three pairs), so the output has exactly the input's shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from farm.devices import WorkerResources
from farm.errors import FarmError, ModelError
from farm.face.onnx.runtime import SessionFactory, run_bound
from farm.voice.separate import Separation
from farm.voice.settings import MdxSettings
from farm.voice.signal import as_2d, fit_length, resample
from farm.voice.weights import VoiceModel, cached_session, session_factory, verified_file

MDX_RATE = 44100
VOC_FT = "UVR-MDX-NET-Voc_FT.onnx"
KNOWN_SHA256 = {VOC_FT: "534b2070fcc7df514b13ef660dc8cbb328679c2374d04354a5c42bb14ecce111"}
"""Published files whose hash is known (Voc_FT as UVR's model repository serves it)."""
_ZEROED_BINS = 3
_WINDOW_FLOOR = 1e-4


def mdx_model(mdx: MdxSettings) -> VoiceModel:
    return VoiceModel(
        name="mdx-net",
        file=mdx.model,
        sha256=mdx.sha256,
        setting="voice.mdx.model",
        sha256_setting="voice.mdx.sha256",
        licence="MIT (UVR models by Anjok07 and aufr33); check the model's card",
        source="github.com/TRvlvr/model_repo/releases (all_public_uvr_models)",
        kind="mdx-separator",
        output="[batch, 4, dim_f, dim_t] spectrogram of the separated stem",
        known=KNOWN_SHA256,
    )


class Spectrogram:
    """torch.stft/istft (centred, reflect-padded, periodic Hann) in numpy, in MDX's layout."""

    def __init__(self, n_fft: int, hop: int, dim_f: int) -> None:
        self.n_fft, self.hop, self.dim_f = n_fft, hop, dim_f
        self.window = np.hanning(n_fft + 1)[:-1].astype(np.float32)

    def forward(self, waves: np.ndarray) -> np.ndarray:
        """[B, 2, samples] → [B, 4, dim_f, frames] (L real, L imag, R real, R imag)."""
        batch, channels, samples = waves.shape
        half = self.n_fft // 2
        flat = np.pad(waves.reshape(batch * channels, samples), ((0, 0), (half, half)), "reflect")
        frames = np.lib.stride_tricks.sliding_window_view(flat, self.n_fft, axis=1)[:, :: self.hop]
        spec = np.fft.rfft(frames * self.window, axis=2)[:, :, : self.dim_f]
        parts = np.stack([spec.real, spec.imag], axis=1).transpose(0, 1, 3, 2)
        return np.ascontiguousarray(
            parts.reshape(batch, channels * 2, self.dim_f, -1), dtype=np.float32
        )

    def inverse(self, spec: np.ndarray) -> np.ndarray:
        """[B, 4, dim_f, frames] → [B, 2, hop·(frames − 1)]; bins above dim_f are zero."""
        batch, _, dim_f, count = spec.shape
        parts = spec.reshape(batch, 2, 2, dim_f, count).astype(np.float64)
        full = np.zeros((batch, 2, count, self.n_fft // 2 + 1), dtype=np.complex128)
        full[..., :dim_f] = (parts[:, :, 0] + 1j * parts[:, :, 1]).transpose(0, 1, 3, 2)
        frames = np.fft.irfft(full, n=self.n_fft, axis=-1) * self.window
        length = self.n_fft + self.hop * (count - 1)
        out = np.zeros((batch, 2, length))
        norm = np.zeros(length)
        square = self.window.astype(np.float64) ** 2
        for t in range(count):
            at = t * self.hop
            out[..., at : at + self.n_fft] += frames[:, :, t]
            norm[at : at + self.n_fft] += square
        out /= np.where(norm > 1e-11, norm, 1.0)
        half = self.n_fft // 2
        return out[..., half : half + self.hop * (count - 1)].astype(np.float32)


class MdxSeparator:
    """Voice and background with an MDX-Net model; both exactly the input's shape."""

    name: ClassVar[str] = "mdx"

    def __init__(
        self,
        mdx: MdxSettings,
        resources: WorkerResources | None = None,
        *,
        sessions: SessionFactory | None = None,
    ) -> None:
        resources = resources or WorkerResources()
        self._mdx = mdx
        path, sha256 = verified_file(mdx_model(mdx), mdx.models_dir, resources)
        factory = session_factory(mdx.device, resources, sessions)
        self._session = cached_session(path, sha256, factory, resources)
        self._path = path
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 4) or not outputs:
            raise ModelError(
                f"{path} is not an MDX-Net model: expected input [batch, 4, dim_f, dim_t] and one "
                f"output, found inputs {[(i.name, i.shape) for i in inputs]}, outputs "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        self._input, self._output = str(inputs[0].name), str(outputs[0].name)
        self.dim_f = shape[2] if isinstance(shape[2], int) else mdx.dim_f
        self.dim_t = shape[3] if isinstance(shape[3], int) else mdx.dim_t
        self._fixed_batch = isinstance(shape[0], int)
        self.batch = shape[0] if isinstance(shape[0], int) else mdx.batch_size
        self.n_fft, self.hop = mdx.n_fft, mdx.hop_length
        if self.dim_f > self.n_fft // 2 + 1 or self.hop * (self.dim_t - 1) <= self.n_fft:
            raise ModelError(
                f"{path} takes dim_f {self.dim_f}, dim_t {self.dim_t}, which does not fit "
                f"voice.mdx n_fft {self.n_fft} and hop_length {self.hop}: set the model's own "
                "n_fft (UVR's model table lists it)"
            )
        self._stft = Spectrogram(self.n_fft, self.hop, self.dim_f)

    @property
    def chunk(self) -> int:
        """Samples per model call at 44.1 kHz."""
        return self.hop * (self.dim_t - 1)

    def _model(self, spec: np.ndarray) -> np.ndarray:
        try:
            (out,) = run_bound(self._session, {self._input: spec}, [self._output])
        except FarmError:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"MDX-Net model {self._path} failed: {first}") from None
        return np.asarray(out, dtype=np.float32).reshape(spec.shape)

    def _stem(self, chunks: np.ndarray) -> np.ndarray:
        """[B, 2, chunk] waves → the model's stem, [B, 2, chunk]."""
        spec = self._stft.forward(chunks)
        spec[:, :, :_ZEROED_BINS] = 0.0
        out = self._model(spec)
        if self._mdx.denoise:
            out = 0.5 * (out - self._model(-spec))
        return self._stft.inverse(out)

    def demix(self, mix: np.ndarray) -> np.ndarray:
        """The model's stem of a [2, samples] mix at 44.1 kHz (times ``compensate``)."""
        length = mix.shape[1]
        trim = self.n_fft // 2
        chunk = self.chunk
        gen = chunk - 2 * trim
        pad = gen + trim - length % gen
        mixture = np.concatenate(
            [np.zeros((2, trim), np.float32), mix, np.zeros((2, pad), np.float32)], axis=1
        )
        total = mixture.shape[1]
        overlap = self._mdx.overlap
        step = max(1, int((1.0 - overlap) * chunk))
        window = (
            np.maximum(np.hanning(chunk), _WINDOW_FLOOR).astype(np.float32)
            if overlap > 0
            else np.ones(chunk, np.float32)
        )
        result = np.zeros((2, total), dtype=np.float64)
        weight = np.zeros(total, dtype=np.float64)
        starts = list(range(0, total, step))
        for first in range(0, len(starts), self.batch):
            group = starts[first : first + self.batch]
            rows = self.batch if self._fixed_batch else len(group)
            waves = np.zeros((rows, 2, chunk), dtype=np.float32)
            for row, start in enumerate(group):
                part = mixture[:, start : start + chunk]
                waves[row, :, : part.shape[1]] = part
            stems = self._stem(waves)
            for row, start in enumerate(group):
                size = min(chunk, total - start)
                result[:, start : start + size] += stems[row, :, :size] * window[:size]
                weight[start : start + size] += window[:size]
        result /= np.where(weight > 0, weight, 1.0)
        return (result[:, trim : trim + length] * self._mdx.compensate).astype(np.float32)

    def separate(self, audio: np.ndarray, sample_rate: int) -> Separation:
        mix = as_2d(audio)
        samples, channels = mix.shape
        voice = np.zeros_like(mix)
        if samples == 0:
            return Separation(voice=voice, background=mix.copy())
        for left in range(0, channels, 2):
            right = min(left + 1, channels - 1)
            pair = np.stack([resample(mix[:, c], sample_rate, MDX_RATE) for c in (left, right)])
            stem = self.demix(pair)
            sung = stem if self._mdx.stem == "vocals" else pair - stem
            back = [fit_length(resample(s, MDX_RATE, sample_rate), samples) for s in sung]
            if right == left:
                voice[:, left] = 0.5 * (back[0] + back[1])
            else:
                voice[:, left], voice[:, right] = back
        return Separation(voice=voice, background=mix - voice)


def model_path(mdx: MdxSettings, resources: WorkerResources | None = None) -> Path:
    """The verified model file the settings name (for preflight checks)."""
    path, _ = verified_file(mdx_model(mdx), mdx.models_dir, resources or WorkerResources())
    return path
