"""Voice worker actor: runs one sentence task per call with `farm.voice.tasks`."""

from __future__ import annotations

from farm.voice.model import FittedSentence
from farm.voice.tasks import SentenceTask, run_sentence_task


class VoiceWorker:
    """Stateless between calls: every setting travels with the task."""

    def synthesize(self, task: SentenceTask) -> FittedSentence:
        return run_sentence_task(task)
