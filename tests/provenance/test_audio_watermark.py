"""Audio watermark: the payload survives AAC 96 kb/s and a 5 s excerpt; unmarked audio is silent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from farm.provenance.audio_watermark import detect_audio_watermark, embed_audio_watermark
from farm.provenance.payload import watermark_payload
from tests.conftest import media_path
from tests.provenance.clips import ffmpeg, read_audio

PAYLOAD = watermark_payload("job-7f3a", "0823bd3ceff5b9b8")
CLIPS = {
    "speech_over_music": "mix/speech_over_music_mix_12s.wav",
    "music": "mix/stem_music_brahms_hungarian_dance5_12s.wav",
    "speech_44k_stereo": "",
}


def load(name: str) -> tuple[np.ndarray, int]:
    """float32 (samples, channels); the GRID clips are joined into a 9 s 44.1 kHz stereo track."""
    if name == "speech_44k_stereo":
        parts = [
            soundfile.read(str(media_path(f"audio/{stem}.wav")), dtype="float32")
            for stem in ("grid_bbaf2n", "grid_lwbsza", "grid_swiz3n")
        ]
        mono = np.concatenate([p[0] for p in parts])
        return np.stack([mono, 0.8 * mono], axis=1), int(parts[0][1])
    samples, rate = soundfile.read(str(media_path(CLIPS[name])), dtype="float32", always_2d=True)
    return samples, int(rate)


def aac_excerpt(tmp_path: Path, samples: np.ndarray, rate: int, *, start_s: float) -> np.ndarray:
    """AAC 96 kb/s, then a 5 s excerpt starting at `start_s`, decoded back to float32."""
    source = tmp_path / "in.wav"
    soundfile.write(str(source), samples, rate)
    encoded = tmp_path / "aac96.m4a"
    ffmpeg("-i", str(source), "-c:a", "aac", "-b:a", "96k", str(encoded))
    excerpt = tmp_path / "excerpt.m4a"
    ffmpeg("-ss", str(start_s), "-i", str(encoded), "-t", "5", "-c", "copy", str(excerpt))
    decoded, decoded_rate = read_audio(excerpt)
    assert decoded_rate == rate
    assert 4.8 * rate <= len(decoded) <= 5.2 * rate
    return decoded


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n  [watermark] {text}")


@pytest.mark.parametrize("name", list(CLIPS))
def test_payload_survives_aac_96k_and_a_5s_excerpt(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples, rate = load(name)
    marked = embed_audio_watermark(samples, rate, PAYLOAD)
    assert marked.shape == samples.shape and marked.dtype == np.float32
    below_db = 10 * np.log10(np.sum(samples**2) / np.sum((marked - samples) ** 2))
    raw = detect_audio_watermark(marked, rate, expected=PAYLOAD)
    attacked = aac_excerpt(tmp_path, marked, rate, start_s=2.3)
    reading = detect_audio_watermark(attacked, rate, expected=PAYLOAD)
    report(
        capsys,
        f"audio {name} ({rate} Hz): watermark {below_db:.1f} dB below the audio; raw bit "
        f"accuracy {raw.bit_accuracy:.3f}; after AAC 96k + 5 s excerpt: found={reading.found} "
        f"bit accuracy {reading.bit_accuracy:.3f}, lone 1.5 s channel-bit accuracy "
        f"{reading.frame_bit_accuracy:.3f}, coherence {reading.coherence:.2f}",
    )
    assert below_db >= 17.0
    assert raw.found and raw.payload == PAYLOAD
    assert reading.found
    assert reading.payload == PAYLOAD
    assert reading.bit_accuracy == 1.0
    assert detect_audio_watermark(attacked, rate).payload == PAYLOAD


@pytest.mark.parametrize("name", ["speech_over_music", "music"])
def test_unmarked_audio_reads_as_not_found(name: str, tmp_path: Path) -> None:
    samples, rate = load(name)
    for candidate in (samples, aac_excerpt(tmp_path, samples, rate, start_s=1.0)):
        reading = detect_audio_watermark(candidate, rate)
        assert not reading.found
        assert reading.payload is None


def test_mono_1d_input_keeps_its_shape() -> None:
    samples, rate = load("speech_over_music")
    mono = samples[:, 0]
    marked = embed_audio_watermark(mono, rate, PAYLOAD)
    assert marked.shape == mono.shape
    assert detect_audio_watermark(marked, rate).payload == PAYLOAD


def test_silence_and_too_short_audio_read_as_not_found() -> None:
    assert not detect_audio_watermark(np.zeros((48_000 * 6, 1), np.float32), 48_000).found
    assert not detect_audio_watermark(np.zeros(100, np.float32), 48_000).found
