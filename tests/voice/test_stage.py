"""The stage entry points on bad and unusual input: clear errors or warnings, nothing lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from farm.errors import MediaError, ModelError, SpecError
from farm.pipeline.voice import voice_units_from_pcm
from farm.voice.asr import check_model_dir, create_transcriber
from farm.voice.settings import AsrSettings, EspeakSettings, SlicerSettings, VoiceSettings
from farm.voice.stage import decide_voice_stage, plan_voice
from farm.voice.synth import SYNTH_BACKENDS, create_synth
from farm.voice.synth.espeak import espeak_command
from farm.voice.transcript import align_text, read_transcript
from tests.conftest import media_path
from tests.voice.helpers import load_mono, revoice

REFS = [media_path("audio/ljspeech_LJ001-0003.wav")]
VC = VoiceSettings(mode="vc")
LJ1_TEXT = (
    "Printing, in the only sense with which we are at present concerned, differs from most if "
    "not from all the arts and crafts represented in the Exhibition"
)


def test_no_audio_track_skips_the_stage_and_says_so(tmp_path: Path) -> None:
    for audio in (None, np.zeros((0, 2), np.float32), np.zeros((100, 0), np.float32)):
        decision = decide_voice_stage(audio, VC)
        assert not decision.run and "no audio track" in decision.reason
    assert not decide_voice_stage(np.ones((10, 1), np.float32), VoiceSettings()).run  # keep
    assert decide_voice_stage(np.ones((10, 1), np.float32), VC).run
    units = voice_units_from_pcm(
        np.zeros((0, 2), np.float32), 48000, VC, tuple(REFS), job_id="0" * 12, work_dir=tmp_path
    )
    assert units.skipped and "no audio track" in units.skipped and not units.tasks


def test_silent_audio_gives_silence_of_the_exact_length_and_a_warning(tmp_path: Path) -> None:
    audio = np.zeros((48000 * 2 + 7, 2), np.float32)
    out, report = revoice(audio, 48000, VC, REFS, tmp_path)
    assert out.shape == (96007, 2) and not out.any()
    assert report.sentences == () and any("no speech" in w for w in report.warnings)


def test_over_music_the_background_stem_is_mixed_back_exactly(tmp_path: Path) -> None:
    mix, rate = load_mono("mix/speech_over_music_mix_12s.wav")
    music, _ = load_mono("mix/stem_music_brahms_hungarian_dance5_12s.wav")
    stem_path = media_path("mix/stem_music_brahms_hungarian_dance5_12s.wav")
    cfg = VoiceSettings(mode="vc", separator="stems", background_stem=stem_path)
    total = mix.size
    plan = plan_voice(mix[:, None], rate, cfg, None, total)
    # the voice track is the speech stem: slices lie inside 1.000–10.667 s (plus kept silence)
    assert plan.background is not None and plan.sentences
    assert plan.sentences[0].speech_start_sample >= int(0.99 * rate)
    assert plan.sentences[-1].speech_stop_sample <= int(10.68 * rate)
    out, report = revoice(mix[:, None], rate, cfg, REFS, tmp_path)
    assert out.shape == (total, 1)
    voiced = np.zeros(total, dtype=bool)
    for rep in report.sentences:
        voiced[rep.start_sample : rep.end_sample] = True
    np.testing.assert_array_equal(out[~voiced, 0], music[~voiced])
    assert np.abs(out[voiced, 0] - music[voiced]).max() > 0.05, "a new voice is over the music"


def test_stems_separator_rejects_a_mismatched_stem(tmp_path: Path) -> None:
    mix, rate = load_mono("mix/speech_over_music_mix_12s.wav")
    cfg = VoiceSettings(
        mode="vc", separator="stems", background_stem=media_path("audio/grid_bbaf2n.wav")
    )
    with pytest.raises(MediaError, match=r"44100 Hz.*22050 Hz"):
        plan_voice(mix[:, None], rate, cfg, None, mix.size)


def _srt(path: Path, body: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(body.encode(encoding))
    return path


def test_subtitles_become_sentences_at_exact_samples_and_overruns_are_reported(
    tmp_path: Path,
) -> None:
    audio, rate = load_mono("audio/ljspeech_LJ001-0001.wav")
    total = audio.size
    srt = _srt(
        tmp_path / "a.srt",
        "1\n00:00:00,250 --> 00:00:04,100\nPrinting, in the only sense\n\n"
        "2\n00:00:04,400 --> 00:00:12,000\nwith which we are at present concerned\n\n"
        "3\n00:00:15,000 --> 00:00:16,000\nafter the end\n",
    )
    plan = plan_voice(audio[:, None], rate, VoiceSettings(mode="tts"), srt, total)
    first, second = plan.sentences
    assert (first.start_sample, first.stop_sample) == (250 * rate // 1000, 4100 * rate // 1000)
    assert second.stop_sample == total and second.slot_stop_sample == total
    assert first.slot_stop_sample == second.speech_start_sample
    assert first.text == "Printing, in the only sense"
    assert any("ends at 12.000 s, after the video's end" in w for w in plan.warnings)
    assert any("'after the end'" in w and "not voiced" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("name", "body", "encoding", "message"),
    [
        ("latin.srt", "1\n00:00:00,000 --> 00:00:01,000\nça déjà\n", "latin-1", "not UTF-8"),
        ("junk.srt", "this is not\na subtitle file\n", "utf-8", "no usable cues"),
        (
            "junk.ass",
            "[Events]\nFormat: Start, End\nDialogue: x,y\n",
            "utf-8",
            "malformed|no usable",
        ),
        ("empty.txt", "\n\n", "utf-8", "empty"),
        ("notes.docx", "x", "utf-8", "unknown kind"),
    ],
)
def test_bad_transcripts_are_clear_errors(
    tmp_path: Path, name: str, body: str, encoding: str, message: str
) -> None:
    path = _srt(tmp_path / name, body, encoding)
    with pytest.raises(SpecError, match=message):
        read_transcript(path)
    with pytest.raises(SpecError, match=str(path.name) if "unknown" in message else message):
        audio, rate = load_mono("audio/grid_bbaf2n.wav")
        plan_voice(audio[:, None], rate, VoiceSettings(mode="tts"), path, audio.size)


def test_a_missing_transcript_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read transcript"):
        read_transcript(tmp_path / "missing.srt")


def test_vtt_and_ass_parse_and_empty_cues_are_warned(tmp_path: Path) -> None:
    vtt = _srt(
        tmp_path / "a.vtt",
        "WEBVTT\n\n00:01.000 --> 00:02.500\nhello <b>there</b>\n\n00:03.000 --> 00:03.500\n\n",
    )
    t = read_transcript(vtt)
    assert [(c.start_ms, c.end_ms, c.text) for c in t.cues] == [(1000, 2500, "hello there")]
    ass = _srt(
        tmp_path / "a.ass",
        "[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,Hi {\\i1}you{\\i0}\n",
    )
    assert [c.text for c in read_transcript(ass).cues] == ["Hi you"]


def test_plain_text_is_spread_over_the_slices_without_losing_words(tmp_path: Path) -> None:
    audio, rate = load_mono("audio/ljspeech_LJ001-0001.wav")
    txt = tmp_path / "lj.txt"
    txt.write_text(LJ1_TEXT + "\n", encoding="utf-8")
    plan = plan_voice(audio[:, None], rate, VoiceSettings(mode="tts"), txt, audio.size)
    assert len(plan.sentences) == 2
    texts = [s.text or "" for s in plan.sentences]
    assert " ".join(texts).split() == LJ1_TEXT.split()
    assert texts[0].startswith("Printing") and texts[1].endswith("Exhibition")
    assert any("spread over them" in w for w in plan.warnings)
    assert align_text(("a b", "c"), [10, 10]) == ["a b", "c"]
    assert align_text(("One. Two!",), [5, 5]) == ["One.", "Two!"]


def test_tts_without_text_or_asr_is_a_clear_error() -> None:
    audio, rate = load_mono("audio/grid_bbaf2n.wav")
    with pytest.raises(SpecError, match="needs the sentences' text"):
        settings = VoiceSettings(mode="tts", asr=AsrSettings(backend="none"))
        plan_voice(audio[:, None], rate, settings, None, audio.size)


def test_asr_backend_explains_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"lacks model\.bin, config\.json"):
        create_transcriber(AsrSettings(backend="faster-whisper", model_dir=tmp_path))
    assert create_transcriber(AsrSettings(backend="none")) is None
    with pytest.raises(ModelError, match="does not exist"):
        check_model_dir(tmp_path / "nope")
    with pytest.raises(ModelError, match=r"lacks model\.bin, config\.json"):
        check_model_dir(tmp_path)


def test_espeak_command_is_built_and_a_missing_binary_is_named(tmp_path: Path) -> None:
    argv = espeak_command(
        EspeakSettings(voice="en-gb", words_per_minute=170), "/bin/espeak-ng", tmp_path / "o.wav"
    )
    assert argv == [
        "/bin/espeak-ng",
        "-v",
        "en-gb",
        "-s",
        "170",
        "-w",
        str(tmp_path / "o.wav"),
        "--stdin",
    ]
    cfg = VoiceSettings(
        mode="tts", espeak=EspeakSettings(engine="binary", binary="espeak-ng-not-installed")
    )
    with pytest.raises(ModelError, match="'espeak-ng-not-installed' binary, which is not on PATH"):
        create_synth("espeak", cfg, REFS)
    binary_only = VoiceSettings(mode="tts", espeak=EspeakSettings(engine="binary"))
    with pytest.raises(ModelError, match="'espeak-ng' binary"):  # not installed on this machine
        create_synth("espeak", binary_only, REFS)


def test_registry_lists_backends_and_rejects_unknown_names() -> None:
    assert set(SYNTH_BACKENDS) == {"vc", "rvc", "gpt-sovits", "espeak"}
    with pytest.raises(SpecError, match="available: espeak, gpt-sovits, rvc, vc"):
        create_synth("so-vits-svc", VC, REFS)
    with pytest.raises(TypeError):
        SYNTH_BACKENDS["x"] = SYNTH_BACKENDS["vc"]  # type: ignore[index]


@pytest.mark.parametrize(
    "update",
    [
        {"peak_range_dbfs": (-3.0, -6.0)},
        {"reference_min_s": 12.0},
        {"separator": "stems"},
        {"slicer": {"min_length_ms": 100, "min_interval_ms": 300}},
        {"fit": {"stretch_min": 1.2}},
        {"unknown": 1},
    ],
)
def test_settings_reject_bad_values(update: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VoiceSettings.model_validate({"mode": "vc", **update})
    assert SlicerSettings().threshold_db == -34.0 and VoiceSettings().peak_range_dbfs == (
        -9.0,
        -6.0,
    )
