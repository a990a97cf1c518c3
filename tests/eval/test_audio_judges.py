"""The audio judges (speaker, words, lip sync) and silence sentences on the shared real media.

Speaker: d-vector cosines separate LJ Speech's reader from the GRID talkers. Words: Whisper
tiny.en on LJ001-0001 against its transcript, a wrong transcript, and a `vc` re-voicing of it.
Lip sync: the GRID jump-cut clip (one talker, 6 s) against copies of it whose audio ffmpeg moved
by +120 ms and -120 ms (video stream-copied), and with a stretch of frames that have no face;
the two-faces composite for the choice of the talker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import given
from hypothesis import strategies as st

from farm.errors import MediaError
from farm.eval.base import (
    EVAL_SAMPLE_RATE,
    EvalAudio,
    EvalContext,
    Face,
    FramePair,
    JudgeModels,
    SentenceSpan,
)
from farm.eval.lipsync import LipSyncJudge, MouthTrack
from farm.eval.metrics import LipSyncMetrics
from farm.eval.models import judge_manifest
from farm.eval.regions import cosine
from farm.eval.speaker import MIN_SAMPLES, DVectorEncoder, SpeakerJudge
from farm.eval.speech import sentences_from_silence
from farm.eval.words import WordsJudge, normalise_text, word_error_rate
from farm.media.ffmpeg import ffmpeg_binary, run_ffmpeg
from tests.conftest import media_path

LJ1 = "audio/ljspeech_LJ001-0001.wav"
LJ3 = "audio/ljspeech_LJ001-0003.wav"
GRID = ("audio/grid_bbaf2n.wav", "audio/grid_lwbsza.wav", "audio/grid_swiz3n.wav")
LJ1_TEXT = (
    "Printing, in the only sense with which we are at present concerned, differs from most if "
    "not from all the arts and crafts represented in the Exhibition"
)
LJ3_TEXT = (
    "For although the Chinese took impressions from wood blocks engraved in relief for centuries "
    "before the woodcutters of the Netherlands, by a similar process"
)
JUMPCUT = "video/grid_jumpcut_same_speaker_6s.mp4"
JUMPCUT_SHOTS = ((0, 75), (75, 150))
SHIFT_MS = 120.0
TOLERANCE_MS = 40.0


# ---------------------------------------------------------------- media helpers


def load_wav(relative: str) -> np.ndarray:
    data, rate = sf.read(str(media_path(relative)), dtype="float32", always_2d=True)
    return soxr.resample(data.mean(axis=1), rate, EVAL_SAMPLE_RATE).astype(np.float32)


def decode_audio(path: Path, seconds: float) -> np.ndarray:
    """Mono 16 kHz, placed by its first timestamp against the video's, cut/padded to ``seconds``."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video_start = float(video.start_time * video.time_base) if video.start_time else 0.0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=EVAL_SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        first: float | None = None
        for frame in container.decode(audio=0):
            if first is None:
                first = float(frame.time or 0.0)
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    pcm = np.concatenate(chunks).astype(np.float32)
    lead = round(((first or 0.0) - video_start) * EVAL_SAMPLE_RATE)
    pcm = np.concatenate([np.zeros(lead, np.float32), pcm]) if lead >= 0 else pcm[-lead:]
    total = round(seconds * EVAL_SAMPLE_RATE)
    return np.pad(pcm, (0, max(0, total - pcm.size)))[:total]


@dataclass(frozen=True, eq=False)
class Clip:
    """A decoded clip: BGR frames, their times, YuNet faces and its audio."""

    path: Path
    fps: float
    frames: tuple[np.ndarray, ...]
    times: tuple[float, ...]
    faces: tuple[tuple[Face, ...], ...]
    audio: np.ndarray


def decode_clip(path: Path, models: JudgeModels) -> Clip:
    frames: list[np.ndarray] = []
    times: list[float] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.time or 0.0))
    faces = tuple(models.detect(f) for f in frames)
    return Clip(
        path, fps, tuple(frames), tuple(times), faces, decode_audio(path, len(frames) / fps)
    )


def shifted_copy(source: Path, shift_s: float, out: Path) -> Path:
    """The clip with its audio moved by ``shift_s`` (video copied, same length).

    ``-itsoffset`` moves the audio input's timestamps; ``aresample=async=1:first_pts=0`` then
    writes the move into the samples (silence in front, or the head cut off) and ``apad`` with
    ``-shortest`` keeps the length, so any decoder sees it, not only one that reads timestamps.
    """
    run_ffmpeg(
        [ffmpeg_binary(needs={"aac"}), "-hide_banner", "-loglevel", "error", "-y",
         "-i", str(source), "-itsoffset", f"{shift_s:.3f}", "-i", str(source),
         "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac",
         "-af", "aresample=async=1:first_pts=0,apad", "-shortest", str(out)]
    )  # fmt: skip
    return out


def context(
    source: Path,
    output: Path,
    audio: EvalAudio,
    *,
    sentences: tuple[SentenceSpan, ...] = (),
    transcript: str | None = None,
    fps: float = 25.0,
    frames: int = 0,
    shots: tuple[tuple[int, int], ...] = (),
) -> EvalContext:
    return EvalContext(
        source=source,
        output=output,
        frames=frames,
        fps=fps,
        width=360,
        height=288,
        shots=shots,
        sampled=frozenset(),
        pairs=(),
        identity_faces=(),
        audio=audio,
        sentences=sentences,
        transcript=transcript,
    )


def shot_of(index: int, shots: tuple[tuple[int, int], ...]) -> int:
    return next(k for k, (a, b) in enumerate(shots) if a <= index < b)


def judge_lip_sync(
    source: Clip,
    output: Clip,
    models: JudgeModels,
    *,
    faceless: range = range(0),
    shots: tuple[tuple[int, int], ...] = JUMPCUT_SHOTS,
) -> LipSyncMetrics:
    """The lip-sync judge on two decoded clips; ``faceless`` output frames lose their face."""
    n = min(len(source.frames), len(output.frames))
    sentences = sentences_from_silence(output.audio, EVAL_SAMPLE_RATE)
    ctx = context(
        source.path,
        output.path,
        EvalAudio(source=source.audio, output=output.audio),
        sentences=sentences,
        fps=source.fps,
        frames=n,
        shots=shots,
    )
    judge = LipSyncJudge(ctx, models)
    for k in range(n):
        judge.observe(
            FramePair(
                index=k,
                time_s=source.times[k],
                shot=shot_of(k, shots),
                source=source.frames[k],
                output=output.frames[k],
                source_faces=source.faces[k],
                output_faces=() if k in faceless else output.faces[k],
            )
        )
    return judge.finish()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models() -> JudgeModels:
    return JudgeModels(judge_manifest())


@pytest.fixture(scope="module")
def voices() -> dict[str, np.ndarray]:
    return {name: load_wav(name) for name in (LJ1, LJ3, *GRID)}


@pytest.fixture(scope="module")
def jumpcut(models: JudgeModels) -> Clip:
    return decode_clip(media_path(JUMPCUT), models)


@pytest.fixture(scope="module")
def shifted(models: JudgeModels, tmp_path_factory: pytest.TempPathFactory) -> dict[float, Clip]:
    tmp = tmp_path_factory.mktemp("lipsync")
    return {
        shift: decode_clip(
            shifted_copy(media_path(JUMPCUT), shift / 1000, tmp / f"shift{shift:+.0f}.mp4"), models
        )
        for shift in (SHIFT_MS, -SHIFT_MS)
    }


# ---------------------------------------------------------------- speaker


def test_dvector_same_speaker_scores_above_every_other_speaker(
    models: JudgeModels, voices: dict[str, np.ndarray]
) -> None:
    encoder: DVectorEncoder = models.dvector
    emb = {name: encoder.embed(audio) for name, audio in voices.items()}
    assert all(v.shape == (256,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4 for v in emb.values())
    same = cosine(emb[LJ1], emb[LJ3])
    different = [cosine(emb[a], emb[b]) for a in (LJ1, LJ3, *GRID) for b in GRID if a < b]
    assert same >= 0.85, same
    assert max(different) <= 0.5, different
    assert same > max(different) + 0.3


def test_dvector_refuses_audio_shorter_than_one_window(models: JudgeModels) -> None:
    encoder: DVectorEncoder = models.dvector
    with pytest.raises(MediaError, match=r"at least 0\.82 s"):
        encoder.embed(np.zeros(MIN_SAMPLES - 1, np.float32))
    assert encoder.embed(np.random.default_rng(0).normal(0, 0.1, MIN_SAMPLES)).shape == (256,)


def test_speaker_judge_on_a_passthrough_finds_the_original_not_the_reference(
    models: JudgeModels, voices: dict[str, np.ndarray]
) -> None:
    lj = voices[LJ1]
    sentences = sentences_from_silence(lj, EVAL_SAMPLE_RATE)
    assert len(sentences) >= 2
    short = SentenceSpan(index=len(sentences), start_s=9.0, end_s=9.5)  # under one window
    audio = EvalAudio(source=lj, output=lj.copy(), reference_voices=(voices[GRID[2]],))
    ctx = context(Path("in.mp4"), Path("out.mp4"), audio, sentences=(*sentences, short))
    metrics = SpeakerJudge(ctx, models).finish()
    kept = [s.index for s in metrics.sentences]
    assert kept == [s.index for s in sentences], "the short sentence is left out"
    assert metrics.mean_to_original is not None and metrics.mean_to_original > 0.999
    assert metrics.closer_to_reference == 0.0
    assert metrics.mean_to_reference is not None and metrics.mean_to_reference < 0.5
    assert metrics.source_to_reference == pytest.approx(metrics.mean_to_reference, abs=1e-6)

    # The output really is the reference speaker: closer to it than to the source, every time.
    grid = voices[GRID[0]]
    swapped = EvalAudio(source=grid, output=voices[GRID[2]], reference_voices=(voices[GRID[2]],))
    span = (SentenceSpan(index=0, start_s=0.0, end_s=grid.size / EVAL_SAMPLE_RATE),)
    revoiced = SpeakerJudge(context(Path("a"), Path("b"), swapped, sentences=span), models).finish()
    assert revoiced.closer_to_reference == 1.0
    assert revoiced.mean_to_reference is not None and revoiced.mean_to_reference > 0.99

    # Without a reference there is nothing to be closer to.
    plain = EvalAudio(source=lj, output=lj)
    alone = SpeakerJudge(context(Path("a"), Path("b"), plain, sentences=sentences), models)
    result = alone.finish()
    assert result.closer_to_reference is None and result.mean_to_reference is None
    assert all(s.to_reference is None for s in result.sentences)


def test_speaker_judge_with_no_sentence_long_enough_is_a_clear_error(
    models: JudgeModels, voices: dict[str, np.ndarray]
) -> None:
    lj = voices[LJ1]
    spans = (SentenceSpan(0, 1.0, 1.5), SentenceSpan(1, 2.0, 2.3))
    judge = SpeakerJudge(context(Path("a"), Path("b"), EvalAudio(lj, lj), sentences=spans), models)
    with pytest.raises(MediaError, match="none of the 2 sentences"):
        judge.finish()


# ---------------------------------------------------------------- words


@given(st.text(alphabet=st.characters(categories=("L", "N", "P", "Zs")), max_size=80))
def test_wer_of_a_text_against_itself_is_zero(text: str) -> None:
    assert word_error_rate(text, text) == 0.0
    assert word_error_rate(text, f"{text} !") == 0.0


@given(st.text(alphabet="abcXYZ019 ,.!?;:'\"()-", max_size=60))
def test_wer_ignores_case_and_punctuation(text: str) -> None:
    assert word_error_rate(text, text.upper()) == 0.0
    assert word_error_rate(text, text.replace(" ", " - ")) == 0.0


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=12),
    st.lists(st.sampled_from(["a", "b", "c", "e"]), max_size=12),
)
def test_wer_is_bounded_by_the_word_counts(ref: list[str], hyp: list[str]) -> None:
    wer = word_error_rate(" ".join(ref), " ".join(hyp))
    assert abs(len(ref) - len(hyp)) / len(ref) <= wer <= max(len(ref), len(hyp)) / len(ref)


def test_wer_counts_substitutions_deletions_and_insertions() -> None:
    assert word_error_rate("the cat sat", "the bat sat") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "the sat") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "the cat sat down now") == pytest.approx(2 / 3)
    assert word_error_rate("a b c d", "") == 1.0
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "word") == 1.0
    quoted = 'The "forty-two line" Bible, of 1455!'
    assert normalise_text(quoted) == "the forty two line bible of 1455"
    assert normalise_text("Don't  STOP—now") == "dont stop now"
    assert word_error_rate("fourteen fifty-five", "1455") == 1.0, "numbers are kept as they come"


def test_words_judge_scores_a_true_transcript_low_and_a_wrong_one_high(
    models: JudgeModels, voices: dict[str, np.ndarray]
) -> None:
    lj = voices[LJ1]
    right = context(Path("a"), Path("b"), EvalAudio(lj, lj), transcript=LJ1_TEXT)
    metrics = WordsJudge(right, models).finish()
    assert metrics.reference == "transcript" and metrics.reference_text == LJ1_TEXT
    assert metrics.wer <= 0.2, metrics.output_text
    assert metrics.source_wer == pytest.approx(metrics.wer)

    wrong = context(Path("a"), Path("b"), EvalAudio(None, lj), transcript=LJ3_TEXT)
    mismatch = WordsJudge(wrong, models).finish()
    assert mismatch.wer >= 0.7, mismatch.output_text
    assert mismatch.source_text is None and mismatch.source_wer is None


def test_words_judge_without_transcript_compares_with_the_source_asr(
    models: JudgeModels, voices: dict[str, np.ndarray]
) -> None:
    other = context(Path("a"), Path("b"), EvalAudio(voices[LJ1], voices[LJ3]))
    metrics = WordsJudge(other, models).finish()
    assert metrics.reference == "asr-of-source" and metrics.source_wer is None
    assert metrics.reference_text == metrics.source_text
    assert word_error_rate(LJ1_TEXT, metrics.reference_text) <= 0.2
    assert metrics.wer >= 0.7


def test_a_vc_revoiced_sentence_keeps_its_words(models: JudgeModels, tmp_path: Path) -> None:
    """LJ001-0001 (female) converted by `vc` toward two GRID men: Whisper's WER stays within 0.1."""
    from farm.pipeline.voice import voice_track_in_process
    from farm.voice.settings import VoiceSettings

    data, rate = sf.read(str(media_path(LJ1)), dtype="float32", always_2d=True)
    refs = [media_path(GRID[0]), media_path(GRID[2])]
    out, report = voice_track_in_process(
        data, rate, VoiceSettings(mode="vc"), refs, tmp_path / "work"
    )
    assert out.shape == data.shape and report.sentences
    source = soxr.resample(data[:, 0], rate, EVAL_SAMPLE_RATE).astype(np.float32)
    output = soxr.resample(out[:, 0], rate, EVAL_SAMPLE_RATE).astype(np.float32)
    assert float(np.abs(output - source[: output.size]).mean()) > 0.01, "the voice did change"
    ctx = context(Path("a"), Path("b"), EvalAudio(source, output), transcript=LJ1_TEXT)
    metrics = WordsJudge(ctx, models).finish()
    assert metrics.source_wer is not None and metrics.source_wer <= 0.2
    assert abs(metrics.wer - metrics.source_wer) <= 0.1, (metrics.output_text, metrics.source_text)


# ---------------------------------------------------------------- sentences by silence


def test_sentences_from_silence_find_each_take_of_the_jump_cut(jumpcut: Clip) -> None:
    spans = sentences_from_silence(jumpcut.audio, EVAL_SAMPLE_RATE)
    assert [s.index for s in spans] == list(range(len(spans)))
    assert len(spans) == 2, spans
    first, second = spans
    # GRID alignment of the second take: speech 3.49-5.21 s.
    assert 0.0 <= first.start_s < first.end_s <= 3.0
    assert 3.0 <= second.start_s <= 3.55 and 5.15 <= second.end_s <= 5.6
    assert sentences_from_silence(np.zeros(EVAL_SAMPLE_RATE, np.float32), EVAL_SAMPLE_RATE) == ()


# ---------------------------------------------------------------- lip sync


def test_lip_sync_of_the_unshifted_clip_is_near_zero(jumpcut: Clip, models: JudgeModels) -> None:
    metrics = judge_lip_sync(jumpcut, jumpcut, models)
    assert metrics.offset_ms is not None and abs(metrics.offset_ms) <= TOLERANCE_MS, metrics
    assert metrics.source_offset_ms == pytest.approx(metrics.offset_ms)
    assert metrics.confidence >= 0.4
    assert metrics.face_frames == len(jumpcut.frames)
    assert len(metrics.sentences) == 2
    assert all(
        s.offset_ms is not None and abs(s.offset_ms) <= TOLERANCE_MS for s in metrics.sentences
    )
    assert metrics.trend_ms_per_min is None, "fewer than 3 sentences"


@pytest.mark.parametrize("shift", [SHIFT_MS, -SHIFT_MS])
def test_lip_sync_measures_an_ffmpeg_audio_shift(
    shift: float, jumpcut: Clip, shifted: dict[float, Clip], models: JudgeModels
) -> None:
    output = shifted[shift]
    assert len(output.frames) == len(jumpcut.frames)
    assert abs(output.audio.size - jumpcut.audio.size) <= 1
    metrics = judge_lip_sync(jumpcut, output, models)
    assert metrics.offset_ms is not None
    assert abs(metrics.offset_ms - shift) <= TOLERANCE_MS, metrics
    assert metrics.source_offset_ms is not None and abs(metrics.source_offset_ms) <= TOLERANCE_MS
    assert all(
        s.offset_ms is not None and abs(s.offset_ms - shift) <= TOLERANCE_MS
        for s in metrics.sentences
    )


def test_lip_sync_masks_frames_without_a_face(
    jumpcut: Clip, shifted: dict[float, Clip], models: JudgeModels
) -> None:
    """A run of 30 faceless frames, and every third frame faceless: missing, never zero."""
    full = judge_lip_sync(jumpcut, shifted[SHIFT_MS], models)
    for gap in (range(40, 70), range(0, len(jumpcut.frames), 3)):
        metrics = judge_lip_sync(jumpcut, shifted[SHIFT_MS], models, faceless=gap)
        assert metrics.face_frames == len(jumpcut.frames) - len(gap)
        assert metrics.offset_ms is not None and abs(metrics.offset_ms - SHIFT_MS) <= TOLERANCE_MS
        assert metrics.confidence >= full.confidence - 0.15, (metrics.confidence, full.confidence)


def test_lip_sync_reads_the_talker_of_two_faces_side_by_side(models: JudgeModels) -> None:
    """The composite: the left face talks for 3 s, then freezes while the right one talks."""
    clip = decode_clip(media_path("video/grid_two_faces_turn_taking_6s.mp4"), models)
    track = MouthTrack()
    for k, frame in enumerate(clip.frames):
        assert len(clip.faces[k]) == 2
        track.add(clip.times[k], 0, frame, clip.faces[k])
    assert len(track.tracks) == 2
    left, right = sorted(track.tracks, key=lambda t: float(t.centre[0]))
    series = track.series(clip.fps)
    assert all(series[k] == left.values[k] != right.values[k] for k in range(10, 65))
    assert all(series[k] == right.values[k] != left.values[k] for k in range(85, 140))
    metrics = judge_lip_sync(clip, clip, models, shots=((0, len(clip.frames)),))
    assert metrics.offset_ms is not None and abs(metrics.offset_ms) <= TOLERANCE_MS, metrics


def test_lip_sync_without_faces_is_a_clear_error(jumpcut: Clip, models: JudgeModels) -> None:
    with pytest.raises(MediaError, match="mouth was found on 0 output frames"):
        judge_lip_sync(jumpcut, jumpcut, models, faceless=range(len(jumpcut.frames)))
