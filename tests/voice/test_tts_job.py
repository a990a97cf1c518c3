"""`--voice tts` with no transcript on a pip-only install: Whisper tiny.en (from its wheel) gives
the text, espeak-ng (from its wheel) says it in the identity's voice, and the subtitles of what
the output says are written beside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pysubs2

from farm.eval.words import word_error_rate
from farm.media.ffmpeg import select_ffmpeg
from farm.pipeline.reduce import transcript_path
from farm.spec import JobSpec
from tests.conftest import media_path
from tests.jobs import run_local

LJ001_0001 = (
    "Printing, in the only sense with which we are at present concerned, differs from most if "
    "not from all the arts and crafts represented in the Exhibition"
)


def test_tts_without_a_transcript_transcribes_voices_and_writes_the_srt(
    tmp_path: Path, identity_pack: Path
) -> None:
    clip = tmp_path / "lj.mp4"
    subprocess.run(
        [select_ffmpeg({"libx264", "aac"}).path, "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10", "-i",
         str(media_path("audio/ljspeech_LJ001-0001.wav")), "-shortest",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(clip)],
        check=True,
    )  # fmt: skip
    out = tmp_path / "out.mp4"
    spec = JobSpec.model_validate(
        {
            "input": clip,
            "output": out,
            "face": {"identity": identity_pack},
            "voice": {"mode": "tts", "tts_backend": "espeak", "espeak": {"engine": "library"}},
        }
    )
    report = run_local(spec)
    voice = report.voice
    assert voice is not None and voice.backend == "espeak" and len(voice.sentences) >= 2
    assert all((s.text or "").strip() for s in voice.sentences), "ASR gave every sentence text"
    heard = " ".join(s.text or "" for s in voice.sentences)
    assert word_error_rate(LJ001_0001, heard) <= 0.15, heard
    for sentence in voice.sentences:
        assert sentence.start_sample >= 0 and sentence.end_sample <= voice.total_samples
        assert 0.8 - 1e-6 <= sentence.stretch_ratio <= 1.25 + 1e-6 or not sentence.in_band

    srt = transcript_path(out)
    assert out.is_file() and report.transcript_srt == str(srt)
    cues = pysubs2.load(str(srt))
    assert [c.text for c in cues] == [" ".join((s.text or "").split()) for s in voice.sentences]
    for cue, sentence in zip(cues, voice.sentences, strict=True):
        assert abs(cue.start / 1000 - sentence.start_s) <= 0.001
        assert abs(cue.end / 1000 - sentence.end_s) <= 0.001
