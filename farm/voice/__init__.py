"""The voice stage: re-voice a video's speech sentence by sentence with sample-exact timing.

Modules (import them directly; this package stays light because `farm.spec` imports its
settings, and the DSP modules pull in SciPy):

- `farm.voice.settings`   `VoiceSettings`, the voice part of a `JobSpec`
- `farm.voice.stage`      `decide_voice_stage`, `plan_voice`, `prepare_target`,
                          `synthesize_sentence`, `finish_voice`, `sentence_seed`
- `farm.voice.fit`        `fit_sentence`, `assemble_timeline` (integer sample offsets)
- `farm.voice.synth`      the `VoiceSynth` registry (`vc`, `gpt-sovits`, `espeak`)
- `farm.voice.model`      value objects: `Sentence`, `VoicePlan`, `VoiceReport`, ...

Plain functions over float32 (samples, channels) numpy arrays; Ray-free: `farm.pipeline.voice`
cuts them into the units a runner executes.
"""
