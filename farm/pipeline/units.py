"""Units of work and the worker that runs them, the same in-process and in a Ray actor.

A unit is a shard (`ShardTask`, rendered by `farm.render.render_shard`) or a sentence
(`SentenceTask`, voiced by `farm.pipeline.voice.run_sentence`). A `UnitWorker` is what one
worker keeps between units: the processors of the job it served last and every model it has
loaded. Given a unit of a job with other settings it rebuilds its processors (models stay
loaded), so one worker serves many jobs one after the other without restarting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from farm.chaos import inject
from farm.devices import WorkerResources
from farm.errors import Cancelled
from farm.pipeline.voice import SentenceResult, SentenceTask, run_sentence
from farm.plan.shards import schedule_order
from farm.processing import FrameProcessor, build_processors
from farm.render import ShardResult, ShardTask, render_shard
from farm.spec import JobSpec

if TYPE_CHECKING:
    from farm.voice.synth import VoiceSynth

Unit = ShardTask | SentenceTask
UnitResult = ShardResult | SentenceResult

FramesCallback = Callable[[str, int], None]
"""(shard name, frames done so far in that shard)."""


@dataclass(frozen=True)
class WorkerStats:
    units: int
    processor_builds: int
    model_loads: int


class UnitWorker:
    """Runs units for any job; holds the processors of the last job and the loaded models."""

    def __init__(self, resources: WorkerResources | None = None, *, where: str = "") -> None:
        self.resources = resources or WorkerResources()
        self.where = where
        """Recorded in each result (a node id under Ray; empty in-process)."""
        self._spec_key: str | None = None
        self._processors: list[FrameProcessor] = []
        self._synth_key: tuple[object, ...] | None = None
        self._synth: VoiceSynth | None = None
        self._units = 0
        self._builds = 0

    def _processors_for(self, spec: JobSpec) -> list[FrameProcessor]:
        key = spec.worker_key()
        if key != self._spec_key:
            for processor in self._processors:
                processor.close()
            self._processors = build_processors(spec, self.resources)
            self._spec_key = key
            self._builds += 1
        return self._processors

    def _synth_for(self, task: SentenceTask) -> VoiceSynth | None:
        """The voice backend for this sentence's job, kept while the job's voice stays the same
        (a neural backend's sessions, a server pool's health and loaded weights)."""
        from farm.voice.synth import create_synth

        name = task.settings.backend_name()
        if name == "keep":
            return None
        key = (name, task.settings.model_dump_json(), task.voice_refs, task.target)
        if key != self._synth_key:
            self._close_synth()
            self._synth = create_synth(
                name, task.settings, task.voice_refs, task.target, self.resources
            )
            self._synth_key = key
        return self._synth

    def _close_synth(self) -> None:
        if self._synth is not None:
            self._synth.close()
        self._synth = None
        self._synth_key = None

    def run(
        self,
        spec: JobSpec,
        unit: Unit,
        on_frames: FramesCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> UnitResult:
        """Run one unit of ``spec``'s job; raises the unit's error (a `FarmError` or a bug).

        ``should_stop`` is asked before the unit and after every batch of frames: when it says
        yes the unit ends with `Cancelled` (its partial file is removed) within one batch.
        """

        if spec.remote is not None:
            # Object storage: the unit runs on this node's copies, and its file is in the
            # remote work dir before the job hears that it is done.
            from farm.pipeline.remote import deliver_unit, stage_unit

            staged = stage_unit(spec, unit)
            result = self._run(spec, staged, on_frames, should_stop)
            return deliver_unit(spec, unit, staged, result)
        return self._run(spec, unit, on_frames, should_stop)

    def _run(
        self,
        spec: JobSpec,
        unit: Unit,
        on_frames: FramesCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> UnitResult:
        def check_stop() -> None:
            if should_stop is not None and should_stop():
                raise Cancelled(f"{unit.key}: cancelled")

        check_stop()
        if isinstance(unit, SentenceTask):
            voiced = run_sentence(unit, chaos=spec.chaos, synth=self._synth_for(unit))
            self._units += 1
            return replace(voiced, worker=self.where)
        processors = self._processors_for(spec)
        done = 0

        def frames(count: int) -> None:
            nonlocal done
            done += count
            if on_frames is not None:
                on_frames(unit.shard.name, done)
            inject(spec.chaos, unit.key, done)
            check_stop()

        rendered = render_shard(unit, processors, on_frames=frames)
        self._units += 1
        return replace(rendered, worker=self.where)

    def stats(self) -> WorkerStats:
        return WorkerStats(self._units, self._builds, self.resources.models.loads)

    def close(self) -> None:
        for processor in self._processors:
            processor.close()
        self._processors = []
        self._spec_key = None
        self._close_synth()


def schedule_units(shards: Sequence[ShardTask], sentences: Sequence[SentenceTask]) -> list[Unit]:
    """The order units are handed to workers.

    The first sentence goes first, so a voice backend that cannot work fails the job within
    seconds instead of after the whole video; then shards longest first (the shortest tail);
    then the remaining sentences, short units that fill the tail.
    """
    order = {s.name: i for i, s in enumerate(schedule_order([t.shard for t in shards]))}
    video = sorted(shards, key=lambda t: order[t.shard.name])
    return [*sentences[:1], *video, *sentences[1:]]


def decode_threads(cpus_per_worker: float) -> int:
    """Decoder threads for a worker's CPU share (decoding is exact at any thread count)."""
    return max(1, min(int(cpus_per_worker), os.cpu_count() or 1))
