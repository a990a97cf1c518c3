"""The voice stage: re-voice a video's speech sentence by sentence with sample-exact timing.

Public API (plain functions over float32 (samples, channels) numpy arrays; integer sample offsets):
`decide_voice_stage`, `plan_voice`, `prepare_target`, `synthesize_sentence`, `fit_sentence`,
`assemble_timeline`, `revoice`, `sentence_seed`. Ray-free: `actors/` wraps these.
"""

from farm.voice.fit import assemble_timeline, fit_sentence
from farm.voice.model import (
    FittedSentence,
    Sentence,
    SentenceAudio,
    SentenceReport,
    StageDecision,
    VoicePlan,
    VoiceProfile,
    VoiceReport,
)
from farm.voice.settings import VoiceSettings
from farm.voice.stage import (
    decide_voice_stage,
    plan_voice,
    prepare_target,
    revoice,
    sentence_seed,
    synthesize_sentence,
)
from farm.voice.synth import SYNTH_BACKENDS, VoiceSynth, create_synth

__all__ = [
    "SYNTH_BACKENDS",
    "FittedSentence",
    "Sentence",
    "SentenceAudio",
    "SentenceReport",
    "StageDecision",
    "VoicePlan",
    "VoiceProfile",
    "VoiceReport",
    "VoiceSettings",
    "VoiceSynth",
    "assemble_timeline",
    "create_synth",
    "decide_voice_stage",
    "fit_sentence",
    "plan_voice",
    "prepare_target",
    "revoice",
    "sentence_seed",
    "synthesize_sentence",
]
