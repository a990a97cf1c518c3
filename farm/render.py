"""Render one shard: decode its frames from the source, run the frame processors, encode.

A shard is a pure function of (spec, source, shard range): its output path is deterministic and it
appears only when complete (tmp name, fsync, rename), so a rerun can skip it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np

from farm.errors import Cancelled, FrameCountMismatch, MediaError, ShardFailed, plain_reason
from farm.fsutil import commit_file
from farm.media.probe import ColorTags
from farm.media.video_io import (
    EncoderSettings,
    ShardEncoder,
    bgr_to_frame,
    count_packets,
    decode_range,
    frame_to_bgr,
    map_luma,
)
from farm.plan.shards import Shard
from farm.processing import FrameProcessor, LumaMarker, ReportsNotes, ShardContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to render one shard. Small and picklable: no frames."""

    job_id: str
    source: Path
    frame_pts: tuple[int, ...]
    shard: Shard
    fps: Fraction
    color: ColorTags
    encoder: EncoderSettings
    out_path: Path
    batch_frames: int = 16
    decode_threads: int = 1

    @property
    def key(self) -> str:
        """The unit's name in logs, events, retries and fault injection."""
        return f"shard {self.shard.name}"


@dataclass
class StageClock:
    """Seconds spent per stage of one shard."""

    decode_s: float = 0.0
    convert_s: float = 0.0
    process_s: float = 0.0
    encode_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in vars(self).items()}


@dataclass(frozen=True)
class ShardResult:
    name: str
    index: int
    frames: int
    path: Path
    size_bytes: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    frames_changed: int = 0
    worker: str = ""
    """Where it ran (a node id under Ray); empty in-process."""
    notes: tuple[str, ...] = ()
    """What the processors say about how they ran (providers, fallbacks), for the report."""

    @property
    def key(self) -> str:
        return f"shard {self.name}"

    def record(self, work_dir: Path) -> dict[str, Any]:
        """The ledger entry (JSON)."""
        return {
            "frames": self.frames,
            "path": str(self.path.relative_to(work_dir)),
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 4),
            "stages": self.stages,
            "frames_changed": self.frames_changed,
            "worker": self.worker,
            "notes": list(self.notes),
        }

    @classmethod
    def from_record(cls, shard: Shard, record: dict[str, Any], work_dir: Path) -> ShardResult:
        """A finished shard read back from the ledger (a resumed job reuses it)."""
        return cls(
            name=shard.name,
            index=shard.index,
            frames=int(record["frames"]),
            path=work_dir / str(record["path"]),
            size_bytes=int(record.get("size_bytes", 0)),
            seconds=float(record.get("seconds", 0.0)),
            stages=dict(record.get("stages", {})),
            frames_changed=int(record.get("frames_changed", 0)),
            worker=str(record.get("worker", "")),
            notes=tuple(str(n) for n in record.get("notes", [])),
        )


def processor_notes(processors: Sequence[FrameProcessor]) -> tuple[str, ...]:
    """The notes of the processors that keep some (`farm.processing.ReportsNotes`)."""
    notes: list[str] = []
    for processor in processors:
        if isinstance(processor, ReportsNotes):
            notes += [n for n in processor.notes() if n not in notes]
    return tuple(notes)


def shard_output_path(work_dir: Path, shard: Shard) -> Path:
    return work_dir / "shards" / f"{shard.name}.mkv"


def render_shard(
    task: ShardTask,
    processors: Sequence[FrameProcessor],
    on_frames: Callable[[int], None] | None = None,
) -> ShardResult:
    """Render ``task.shard`` into ``task.out_path``; raise `ShardFailed` on any failure."""
    shard = task.shard
    started = time.perf_counter()
    clock = StageClock()
    task.out_path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per attempt: a zombie worker of a killed run may still be writing the
    # same shard, and two writers must never share a file. The rename is atomic; either
    # complete copy may win, and both hold the same frames.
    tmp = task.out_path.with_name(
        f".{task.out_path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.mkv"
    )
    context = ShardContext(
        job_id=task.job_id,
        shard_index=shard.index,
        context_start=shard.context_start,
        start=shard.start,
        stop=shard.stop,
        fps=task.fps,
        width=task.encoder.width,
        height=task.encoder.height,
        starts_at_scene_cut=shard.starts_at_cut,
    )
    # Luma-only stages (the watermark) run last, on the Y plane of the frame to be encoded.
    markers = [p for p in processors if isinstance(p, LumaMarker)]
    content = [p for p in processors if not isinstance(p, LumaMarker)]
    needs_pixels = any(p.needs_pixels for p in content)
    for processor in processors:
        processor.prepare(context)
    encoder = ShardEncoder(tmp, task.encoder, task.fps)
    changed = 0
    try:
        batch: list[tuple[int, av.VideoFrame]] = []

        def mark(frame: av.VideoFrame, index: int) -> av.VideoFrame:
            for marker in markers:
                marked = map_luma(frame, marker.mark_luma)
                if marked is None:  # a pixel format numpy cannot hold: take the BGR path
                    image = frame_to_bgr(frame, task.color)
                    out = cast(FrameProcessor, marker).process([image], [index])[0]
                    marked = bgr_to_frame(out, task.encoder)
                frame = marked
            return frame

        def process_pixels(frames: list[av.VideoFrame], indices: list[int]) -> list[object]:
            """Content processors over BGR images; the decoded frame where nothing changed."""
            t0 = time.perf_counter()
            images = [frame_to_bgr(f, task.color) for f in frames]
            clock.convert_s += time.perf_counter() - t0
            originals = list(images)
            t0 = time.perf_counter()
            for processor in content:
                images = processor.process(images, indices)
                if len(images) != len(indices):
                    raise ShardFailed(
                        f"shard {shard.name}: processor {processor.name} returned "
                        f"{len(images)} frames for {len(indices)}",
                        retryable=False,
                    )
            clock.process_s += time.perf_counter() - t0
            return [
                f if out is orig else out
                for f, orig, out in zip(frames, originals, images, strict=True)
            ]

        def flush() -> None:
            nonlocal changed
            if not batch:
                return
            frames = [f for _, f in batch]
            indices = [i for i, _ in batch]
            outputs: list[object] = list(frames)
            if needs_pixels:
                outputs = process_pixels(frames, indices)
            t0 = time.perf_counter()
            for index, frame, out in zip(indices, frames, outputs, strict=True):
                if index < shard.start:
                    continue  # context frame: seen by trackers, never emitted
                if out is frame:
                    final = frame
                else:
                    final = bgr_to_frame(cast(np.ndarray, out), task.encoder)
                    changed += 1
                encoder.encode(mark(final, index) if markers else final)
            clock.encode_s += time.perf_counter() - t0
            emitted = sum(1 for i in indices if i >= shard.start)
            batch.clear()
            if on_frames is not None and emitted:
                on_frames(emitted)

        t_decode = time.perf_counter()
        for index, frame in decode_range(
            task.source,
            task.frame_pts,
            shard.context_start,
            shard.stop,
            threads=task.decode_threads,
        ):
            clock.decode_s += time.perf_counter() - t_decode
            batch.append((index, frame))
            if len(batch) >= task.batch_frames:
                flush()
            t_decode = time.perf_counter()
        flush()
        t0 = time.perf_counter()
        encoder.close()
        clock.encode_s += time.perf_counter() - t0
    except (ShardFailed, Cancelled):
        encoder.abort()
        tmp.unlink(missing_ok=True)
        raise
    except MediaError as exc:
        encoder.abort()
        tmp.unlink(missing_ok=True)
        # A damaged source fails the same way every time; an unreadable one may not.
        raise ShardFailed(f"shard {shard.name}: {exc}", retryable=exc.retryable) from exc
    except OSError as exc:  # writing the shard: a full disk or a lost mount
        encoder.abort()
        tmp.unlink(missing_ok=True)
        raise ShardFailed(
            f"shard {shard.name}: writing {tmp} failed: {exc.strerror or exc}", retryable=True
        ) from exc
    except av.error.FFmpegError as exc:
        encoder.abort()
        tmp.unlink(missing_ok=True)
        raise ShardFailed(
            f"shard {shard.name}: encoding failed: {plain_reason(exc)}", retryable=False
        ) from exc
    except BaseException:  # a processor's bug: no half-written file is left behind either
        encoder.abort()
        tmp.unlink(missing_ok=True)
        raise

    written = count_packets(tmp)
    if encoder.frames_in != shard.frames or written != shard.frames:
        tmp.unlink(missing_ok=True)
        mismatch = FrameCountMismatch(
            f"shard {shard.name} [{shard.start}, {shard.stop})",
            shard.frames,
            written if encoder.frames_in == shard.frames else encoder.frames_in,
        )
        # Deterministic: the same frames decode and encode the same way on every try.
        raise ShardFailed(str(mismatch), retryable=False)
    commit_file(tmp, task.out_path)
    seconds = time.perf_counter() - started
    log.info(
        "shard %s: %d frames in %.2f s",
        shard.name,
        shard.frames,
        seconds,
        extra={"job_id": task.job_id, "shard": shard.name},
    )
    return ShardResult(
        name=shard.name,
        index=shard.index,
        frames=shard.frames,
        path=task.out_path,
        size_bytes=task.out_path.stat().st_size,
        seconds=seconds,
        stages=clock.as_dict(),
        frames_changed=changed,
        notes=processor_notes(processors),
    )
