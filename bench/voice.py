"""Benchmark of the voice stage: real-time factor per backend on the shared speech clips.

Prints numbers; it is not a test. RTF = wall time of the voice stage's units run in one process
(`voice_track_in_process`: plan, reference analysis, synthesis, fitting, assembly) / audio
duration. Goal for `vc`: RTF ≤ 0.15.
Also prints the `vc` median-F0 error against the reference and the speech-boundary error, and
for every backend the independent judges of `farm.eval` (models the voice stage never uses):
d-vector similarity of the output to the target voice and to the source speaker, and Whisper
tiny.en's word error rate of the output and of the source against the clip's transcript.

    .venv/bin/python bench/voice.py [--repeat 3] [--gpt-sovits-url http://127.0.0.1:9880]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import pyworld as pw
import soundfile as sf

from farm.errors import FarmError
from farm.eval.base import EVAL_SAMPLE_RATE
from farm.eval.models import judge_manifest
from farm.eval.regions import cosine
from farm.eval.speaker import DVectorEncoder
from farm.eval.words import WhisperAsr, word_error_rate
from farm.pipeline.voice import voice_track_in_process
from farm.voice.settings import GptSovitsSettings, VcSettings, VoiceSettings
from farm.voice.signal import resample, speech_bounds
from farm.voice.stage import plan_voice
from farm.voice.synth.espeak import choose_engine

MEDIA = Path(__file__).resolve().parent.parent.parent / "shared" / "media"
CLIPS = [
    ("audio/ljspeech_LJ001-0001.wav", ["audio/grid_bbaf2n.wav", "audio/grid_swiz3n.wav"]),
    ("audio/ljspeech_LJ001-0003.wav", ["audio/grid_bbaf2n.wav", "audio/grid_swiz3n.wav"]),
    ("audio/ljspeech_LJ001-0007.wav", ["audio/grid_bbaf2n.wav", "audio/grid_swiz3n.wav"]),
    ("audio/ljspeech_LJ001-0007.wav", ["audio/grid_swiz3n.wav"]),  # the measured pair
    ("audio/grid_bbaf2n.wav", ["audio/ljspeech_LJ001-0003.wav"]),
    ("audio/grid_lwbsza.wav", ["audio/ljspeech_LJ001-0003.wav"]),
    ("audio/grid_swiz3n.wav", ["audio/ljspeech_LJ001-0003.wav"]),
]
TEXTS = {
    "audio/ljspeech_LJ001-0001.wav": "Printing, in the only sense with which we are at present "
    "concerned, differs from most if not from all the arts and crafts represented in the "
    "Exhibition",
    "audio/ljspeech_LJ001-0003.wav": "For although the Chinese took impressions from wood blocks "
    "engraved in relief for centuries before the woodcutters of the Netherlands, by a similar "
    "process",
    "audio/ljspeech_LJ001-0007.wav": "the earliest book printed with movable types, the Gutenberg, "
    'or "forty-two line Bible" of about fourteen fifty-five,',
    "audio/grid_bbaf2n.wav": "bin blue at f two now",
    "audio/grid_lwbsza.wav": "lay white by s zero again",
    "audio/grid_swiz3n.wav": "set white in z three now",
}


def _median_f0(x: np.ndarray, rate: int) -> float:
    f0, t = pw.dio(x.astype(np.float64), rate, f0_floor=60.0, f0_ceil=600.0, frame_period=5.0)
    f0 = pw.stonemask(x.astype(np.float64), f0, t, rate)
    return float(np.median(f0[f0 > 0]))


def _load(relative: str) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(MEDIA / relative), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


class Judges:
    """The d-vector encoder and Whisper, loaded once for the whole benchmark."""

    def __init__(self) -> None:
        manifest = judge_manifest()
        self.encoder = DVectorEncoder.from_manifest(manifest)
        self.asr = WhisperAsr.from_manifest(manifest)

    def line(
        self, source: np.ndarray, output: np.ndarray, rate: int, refs: list[str], text: str
    ) -> tuple[str, bool]:
        """The judges' line for one clip, and whether the output is nearer the target."""
        def at_16k(x: np.ndarray, x_rate: int) -> np.ndarray:
            return np.asarray(resample(x.astype(np.float32), x_rate, EVAL_SAMPLE_RATE))

        src, out = at_16k(source, rate), at_16k(output, rate)
        target = np.mean([self.encoder.embed(at_16k(*_load(r))) for r in refs], axis=0)
        out_vec = self.encoder.embed(out)
        to_target = cosine(out_vec, target)
        to_source = cosine(out_vec, self.encoder.embed(src))
        wer_out = word_error_rate(text, self.asr.transcribe(out))
        wer_src = word_error_rate(text, self.asr.transcribe(src))
        return (
            f"  d-vector to target {to_target:.3f}, to source {to_source:.3f}"
            f"  WER {wer_out:.3f} (source {wer_src:.3f})"
        ), to_target > to_source


def bench_backend(
    settings: VoiceSettings, repeat: int, tmp: Path, judges: Judges, label: str = ""
) -> None:
    name = settings.backend_name()
    label = label or name
    closer = 0
    total_audio = total_wall = total_cpu = total_setup = 0.0
    rows = []
    for clip, refs in CLIPS:
        audio, rate = _load(clip)
        transcript = None
        if settings.mode == "tts":
            transcript = tmp / (Path(clip).stem + ".txt")
            transcript.write_text(TEXTS[clip] + "\n", encoding="utf-8")
        ref_paths = [MEDIA / r for r in refs]
        walls = []
        cpus = []
        setups = []
        out = np.zeros(0)
        for _ in range(repeat):
            began, cpu = time.perf_counter(), time.process_time()
            clip_settings = settings.model_copy(update={"transcript": transcript})
            out, report = voice_track_in_process(
                audio[:, None], rate, clip_settings, ref_paths, tmp / "work"
            )
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - cpu)
            setups.append(report.timings_s.get("target", 0.0))
        wall = statistics.median(walls)
        seconds = audio.size / rate
        total_audio += seconds
        total_wall += wall
        total_cpu += statistics.median(cpus)
        total_setup += statistics.median(setups)
        line = (
            f"  {clip:40s} {seconds:6.2f} s  wall {wall:6.3f} s  RTF {wall / seconds:.3f}"
            f"  (CPU {statistics.median(cpus) / seconds:.3f})"
        )
        if name == "vc":
            ref_audio = [_load(r) for r in refs]
            ref_f0 = _median_f0(np.concatenate([a for a, _ in ref_audio]), ref_audio[0][1])
            plan = plan_voice(audio[:, None], rate, settings, None, audio.size)
            speech = np.concatenate(
                [out[s.speech_start_sample : s.speech_stop_sample, 0] for s in plan.sentences]
            )
            f0_err = _median_f0(speech, rate) / ref_f0 - 1
            errs = []
            for s in plan.sentences:
                b = speech_bounds(out[s.start_sample : s.slot_stop_sample, 0], rate, 40.0, -60.0)
                if b is not None:
                    errs += [
                        abs(s.start_sample + b[0] - s.speech_start_sample) / rate * 1000,
                        abs(s.start_sample + b[1] - s.speech_stop_sample) / rate * 1000,
                    ]
            line += f"  F0 err {f0_err * 100:+5.1f} %  boundary err max {max(errs):6.1f} ms"
            line += f"  stretch {[round(r.stretch_ratio, 3) for r in report.sentences]}"
        judged, nearer = judges.line(audio, out[:, 0], rate, refs, TEXTS[clip])
        closer += nearer
        rows.append(line + judged)
    print(
        f"backend {label}: output closer to the target than to the source on {closer} of "
        f"{len(CLIPS)} clips; RTF {total_wall / total_audio:.3f} wall, "
        f"{total_cpu / total_audio:.3f} CPU, {(total_wall - total_setup) / total_audio:.3f} wall "
        f"without the per-job reference analysis ({total_setup:.2f} s), over "
        f"{total_audio:.1f} s of audio"
    )
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gpt-sovits-url", default=GptSovitsSettings().url)
    args = parser.parse_args()
    tmp = Path("/tmp/syncfarm-bench-voice")
    tmp.mkdir(exist_ok=True)
    judges = Judges()
    bench_backend(VoiceSettings(mode="vc"), args.repeat, tmp, judges)
    baseline = VoiceSettings(mode="vc", vc=VcSettings(envelope_mapping=False))
    bench_backend(baseline, args.repeat, tmp, judges, "vc without envelope mapping (before)")
    espeak = VoiceSettings(mode="tts", tts_backend="espeak")
    try:
        engine = choose_engine(espeak.espeak)
    except FarmError as exc:
        print(f"backend espeak: not measured ({exc})")
    else:
        bench_backend(espeak, args.repeat, tmp, judges, f"espeak ({engine}) + vc")
    print(
        "backend rvc: not measured (no RVC weights ship on PyPI; its tests run synthetic graphs)"
    )
    try:
        httpx.get(args.gpt_sovits_url, timeout=1.0)
    except httpx.TransportError:
        print(f"backend gpt-sovits: not measured (no server at {args.gpt_sovits_url})")
    else:
        cfg = VoiceSettings(
            mode="tts",
            tts_backend="gpt-sovits",
            gpt_sovits=GptSovitsSettings(url=args.gpt_sovits_url),
        )
        try:
            bench_backend(cfg, 1, tmp, judges)
        except FarmError as exc:
            print(f"backend gpt-sovits: failed: {exc}")


if __name__ == "__main__":
    main()
