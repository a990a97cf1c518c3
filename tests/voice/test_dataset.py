"""`farm identity voice-dataset`: GPT-SoVITS training data from consented recordings.

Budget: one Whisper load for the module's core run (an LJ clip, a clipped and a too-short
recording), two CLI runs on the identity pack's 3 s GRID clip, and refusals that stop before ASR.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf

from farm.errors import MediaError, SpecError
from farm.eval.words import edit_distance, normalise_text
from farm.fsutil import sha256_file
from farm.provenance.consent import create_consent, write_consent
from farm.provenance.keys import load_operator, load_trust
from farm.voice.asr import (
    WHEEL_WHISPER_SHA256,
    AsrSegment,
    FasterWhisperTranscriber,
)
from farm.voice.dataset import (
    DATASET_SAMPLE_RATE,
    ConsentedVoices,
    ConsentInfo,
    DatasetSettings,
    DatasetSummary,
    build_voice_dataset,
    voices_from_clips,
)
from tests.conftest import farm_cli, media_path

LJ = {  # SOURCES.md's transcripts; one 9.7 s clip (two slices) keeps the module under budget
    "ljspeech_LJ001-0001": "Printing, in the only sense with which we are at present concerned, "
    "differs from most if not from all the arts and crafts represented in the Exhibition",
}
MAX_WER = 0.1
SETTINGS = DatasetSettings(speaker="linda")


def _consent(path: Path, voices: Sequence[Path]) -> Path:
    write_consent(
        create_consent(
            subject="test voice",
            scope=["voice"],
            purpose="tests",
            expires=dt.date(2099, 1, 1),
            voice_files=list(voices),
            operator=load_operator(),
        ),
        path,
    )
    return path


@dataclass(frozen=True)
class Built:
    out: Path
    summary: DatasetSummary
    clipped: Path
    short: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, whisper: FasterWhisperTranscriber) -> Built:
    root = tmp_path_factory.mktemp("voice-dataset")
    grid, rate = sf.read(str(media_path("audio/grid_bbaf2n.wav")), dtype="float32")
    clipped = root / "grid_clipped.wav"
    sf.write(str(clipped), np.clip(grid * 4.0, -1.0, 1.0), rate, subtype="PCM_16")
    lj, lj_rate = sf.read(str(media_path("audio/ljspeech_LJ001-0001.wav")), dtype="float32")
    short = root / "lj_short.flac"
    sf.write(str(short), lj[: round(0.7 * lj_rate)], lj_rate)  # "Printing": 0.7 s
    clips = [media_path(f"audio/{name}.wav") for name in LJ] + [clipped, short]
    voices = voices_from_clips(clips, _consent(root / "consent.yaml", clips), load_trust())
    out = root / "out"
    return Built(out, build_voice_dataset(voices, out, SETTINGS, whisper), clipped, short)


def _list_rows(out: Path, speaker: str) -> list[list[str]]:
    text = (out / f"{speaker}.list").read_text(encoding="utf-8")
    return [line.split("|") for line in text.splitlines()]


def test_list_file_is_gpt_sovits_format_with_existing_clips(built: Built) -> None:
    rows = _list_rows(built.out, "linda")
    assert len(rows) == built.summary.kept_clips >= 2
    for row in rows:
        assert len(row) == 4
        wav, speaker, language, text = row
        assert Path(wav).is_absolute() and Path(wav).is_file()
        assert Path(wav).parent == built.out.resolve() / "wavs"
        assert (speaker, language) == ("linda", "en") and text.strip() == text and text
    assert sorted(p.name for p in (built.out / "wavs").iterdir()) == sorted(
        Path(row[0]).name for row in rows
    )


def test_kept_clips_are_32k_int16_mono_within_limits_and_peak_band(built: Built) -> None:
    for clip in built.summary.clips:
        info = sf.info(str(built.out / clip.file))
        assert (info.samplerate, info.channels, info.subtype) == (DATASET_SAMPLE_RATE, 1, "PCM_16")
        audio, _ = sf.read(str(built.out / clip.file), dtype="float32")
        assert SETTINGS.min_clip_s <= audio.size / DATASET_SAMPLE_RATE <= SETTINGS.max_clip_s
        assert audio.size == clip.end - clip.start
        peak_db = 20 * np.log10(np.max(np.abs(audio)))
        assert -9.0 <= peak_db <= -6.0 and abs(peak_db - clip.peak_dbfs) < 1e-3
        assert clip.file == f"wavs/{clip.source}_{clip.start:010d}_{clip.end:010d}.wav"


def test_lj_transcripts_match_sources_md(built: Built) -> None:
    for name, reference in LJ.items():
        clips = sorted((c for c in built.summary.clips if c.source == name), key=lambda c: c.start)
        assert clips, f"nothing kept of {name}"
        ref = normalise_text(reference).split()
        hyp = normalise_text(" ".join(c.text for c in clips)).split()
        wer = edit_distance(ref, hyp) / len(ref)
        assert wer <= MAX_WER, (name, wer, hyp)


def test_clipped_and_too_short_recordings_are_dropped_with_reasons(built: Built) -> None:
    by_source = {d.source: d for d in built.summary.dropped}
    assert by_source["grid_clipped"].reason == "clipped"
    assert "full scale" in by_source["grid_clipped"].detail
    assert by_source["lj_short"].reason == "too-short"
    assert built.summary.dropped_by_reason == {"clipped": 1, "too-short": 1}
    assert {c.source for c in built.summary.clips} == set(LJ)


def test_summary_records_models_consent_and_sources(built: Built) -> None:
    summary = DatasetSummary.model_validate_json((built.out / "summary.json").read_text())
    assert summary == built.summary
    assert summary.asr.sha256 == WHEEL_WHISPER_SHA256
    assert summary.consent.sha256 == sha256_file(Path(summary.consent.path))
    for source in summary.sources:
        assert source.sha256 == sha256_file(Path(source.path))
    assert summary.kept_seconds == pytest.approx(sum(c.duration_s for c in summary.clips), abs=1e-3)
    assert summary.kept_hours == pytest.approx(summary.kept_seconds / 3600, abs=1e-5)
    assert not [p for p in built.out.parent.iterdir() if p.name.startswith(".out")]


def test_pack_input_via_cli_is_deterministic_and_force_replaces(
    identity_pack: Path, tmp_path: Path
) -> None:
    out = tmp_path / "set"
    args = ("identity", "voice-dataset", str(identity_pack), "-o", str(out), "--threads", "2")
    first = farm_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "1 clip(s)" in first.stdout and str(out / "pack.list") in first.stdout
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    summary = DatasetSummary.model_validate_json(files[Path("summary.json")])
    assert summary.identity_pack == str(identity_pack.resolve())
    assert summary.sources[0].path.endswith("voices/voice_00.wav")

    refused = farm_cli(*args)
    assert refused.returncode != 0 and "--force" in refused.stderr
    again = farm_cli(*args, "--force")
    assert again.returncode == 0, again.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_uncovered_recording_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    covered = media_path("audio/grid_swiz3n.wav")
    data, rate = sf.read(str(covered), dtype="int16")
    data[0] ^= 1  # one sample changed: not the consented recording any more
    stranger = tmp_path / "stranger.wav"
    sf.write(str(stranger), data, rate, subtype="PCM_16")
    consent = _consent(tmp_path / "consent.yaml", [covered])
    out = tmp_path / "out"
    base = ("identity", "voice-dataset", "-o", str(out))
    cases = {
        "not covered": ((str(covered), str(stranger), "--consent", str(consent)), "stranger.wav"),
        "no consent": ((str(covered),), "--consent"),
        "bad language": (
            (str(covered), "--consent", str(consent), "--language", "fr"),
            "language",
        ),
    }
    for label, (extra, needle) in cases.items():
        result = farm_cli(*base, *extra)
        assert result.returncode != 0, label
        line = result.stderr.strip()
        assert line.startswith("farm: error:") and "\n" not in line, (label, line)
        assert needle in line, (label, line)
        assert not out.exists(), label
    assert sorted(p.name for p in tmp_path.iterdir()) == ["consent.yaml", "stranger.wav"]


class ScriptedAsr:
    """A transcriber that answers from a script: one segment list per call."""

    name: ClassVar[str] = "scripted"

    def __init__(self, answers: list[list[AsrSegment]]) -> None:
        self.answers = answers

    @property
    def model_path(self) -> Path:
        return Path("/scripted/model.bin")

    @property
    def model_sha256(self) -> str:
        return "0" * 64

    def transcribe(self, audio: np.ndarray, language: str | None) -> str:
        raise AssertionError("the dataset asks for segments")

    def transcribe_segments(self, audio: np.ndarray, language: str | None) -> list[AsrSegment]:
        return self.answers.pop(0)


def _seg(text: str, logprob: float = -0.2, no_speech: float = 0.01) -> AsrSegment:
    return AsrSegment(0.0, 1.0, text, logprob, no_speech)


def test_asr_confidence_drops_and_empty_result_write_nothing(tmp_path: Path) -> None:
    grid = media_path("audio/grid_bbaf2n.wav")
    copies = []
    for name in ("a", "b", "c", "d"):
        copies.append(tmp_path / f"{name}.wav")
        copies[-1].write_bytes(grid.read_bytes())
    voices = ConsentedVoices(
        recordings=tuple(copies),
        consent=ConsentInfo(path="c", sha256="0" * 64, consent_id="x", subject="s", expires="x"),
    )
    asr = ScriptedAsr(
        [
            [_seg("  ")],
            [_seg("bin blue", no_speech=0.9)],
            [_seg("bin", logprob=-1.5)],
            [_seg("bin | blue")],
        ]
    )
    summary = build_voice_dataset(voices, tmp_path / "out", SETTINGS, asr)
    assert [d.reason for d in summary.dropped] == ["empty-text", "no-speech", "low-confidence"]
    assert [c.text for c in summary.clips] == ["bin blue"]  # the list delimiter is removed

    nothing = ScriptedAsr([[_seg("")]] * 4)
    with pytest.raises(MediaError, match=r"no clip .* survived cleaning \(4 empty-text\)"):
        build_voice_dataset(voices, tmp_path / "none", SETTINGS, nothing)
    assert not (tmp_path / "none").exists()
    with pytest.raises(SpecError, match="both make clips named a_"):
        build_voice_dataset(
            ConsentedVoices(recordings=(copies[0], copies[0]), consent=voices.consent),
            tmp_path / "dup",
            SETTINGS,
            asr,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "c.wav", "d.wav", "out"]
