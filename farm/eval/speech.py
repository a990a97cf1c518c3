"""Sentence spans found by silence, for outputs that come without a job's voice report.

The voice stage's own slicer (`farm.voice.slicer.plan_slices`, openvpi slicer2 plus the merge and
split pass) cuts the audio at pauses of 300 ms or more. Its silence threshold is set relative to
the clip's loudest 40 ms (30 dB below it, kept within -60 to -25 dBFS) instead of the stage's
fixed -34 dBFS, so a quiet recording or a noisy one (GRID's MP2 floor sits at -40 to -55 dBFS)
still splits at its pauses. Each span is then trimmed to the speech inside it, plus 50 ms.
"""

from __future__ import annotations

import numpy as np

from farm.eval.base import SentenceSpan
from farm.voice.settings import SlicerSettings
from farm.voice.signal import frame_rms, gain_to_db, speech_bounds
from farm.voice.slicer import plan_slices

RELATIVE_THRESHOLD_DB = 30.0
"""Silence is this far below the loudest 40 ms of the clip."""
THRESHOLD_RANGE_DBFS = (-60.0, -25.0)
PAD_S = 0.05
"""Silence kept on each side of a trimmed span."""
MIN_SENTENCE_MS = 800
MAX_SENTENCE_MS = 15000


def silence_threshold_db(audio: np.ndarray, sample_rate: int) -> float | None:
    """The slicer threshold for this clip (dBFS); None when it is silent throughout."""
    hop = max(1, round(sample_rate * 0.010))
    rms = frame_rms(np.asarray(audio, dtype=np.float32), 4 * hop, hop)
    if rms.size == 0 or float(rms.max()) <= 1e-6:
        return None
    low, high = THRESHOLD_RANGE_DBFS
    return float(np.clip(gain_to_db(float(rms.max())) - RELATIVE_THRESHOLD_DB, low, high))


def sentences_from_silence(audio: np.ndarray, sample_rate: int) -> tuple[SentenceSpan, ...]:
    """Speech spans of mono audio, split at pauses; empty when there is no speech."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    threshold = silence_threshold_db(x, sample_rate)
    if threshold is None:
        return ()
    settings = SlicerSettings(
        threshold_db=threshold,
        min_length_ms=1000,
        min_interval_ms=300,
        hop_size_ms=10,
        max_sil_kept_ms=150,
        max_sentence_ms=MAX_SENTENCE_MS,
        min_sentence_ms=MIN_SENTENCE_MS,
    )
    pad = round(PAD_S * sample_rate)
    spans: list[SentenceSpan] = []
    for start, stop in plan_slices(x, sample_rate, settings):
        bounds = speech_bounds(x[start:stop], sample_rate, 60.0, threshold)
        if bounds is None:
            continue
        lo = max(0, start + bounds[0] - pad)
        hi = min(x.size, start + bounds[1] + pad)
        spans.append(
            SentenceSpan(index=len(spans), start_s=lo / sample_rate, end_s=hi / sample_rate)
        )
    return tuple(spans)
