"""Face-stack throughput at 720p, and what the independent judges say of the result.

    python -m bench.faces [--media ../shared/media] [--frames 150] [--workers 2]
    python -m bench.faces --synthetic-inswapper [--frames 24]    # the neural path's cost

For each clip (GRID hard cuts, Tears of Steel) a 720p copy is made first (untimed). Then:

- **plain loop**: one process decodes, runs the classic-swap processor in batches and encodes;
- **sharded**: the frames are cut into ``--workers`` contiguous shards, each run in its own process
  (decode its range, process, encode its own file), as the farm's video workers do; every worker
  pins its codecs and OpenCV to one thread. Model loading is reported apart (actors load once).

It prints frames per second, the sharded/plain ratio and milliseconds per frame for each stage
(decode, detect, landmarks, descriptor, align, swap, mask, blend, encode).

``--synthetic-inswapper`` runs the neural stage (``onnx-swap``) instead, with a stand-in graph
of inswapper_128's signature and cost (`bench.synthetic_models`: no real weights ship on PyPI),
and also prints the share of the workers' wall time spent inside the swapper's inference (the
anchors keep their GPUs under 10 % busy; the goal is 85 % and more). The judges are skipped
there: the stand-in does not swap anyone in. Then the plain loop's output is
judged against its input by `farm.eval` (YuNet + SFace, SSIM, jitter: models the swap never
uses), so a change to the swap shows its effect on quality next to its effect on speed. A
benchmark, never a test: speeds depend on the machine and on whatever else runs on it; the
quality numbers do not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import av
import cv2
import numpy as np

from bench.common import make_identity, use_bench_operator
from farm.face.processor import FaceSwapProcessor, build_from_settings, shard_context
from farm.face.settings import FaceSettings
from farm.face.timing import StageTimer

CLIPS = ("video/grid_hardcuts_4_speakers_12s.mp4", "video/tears_of_steel_10s_cuts_noaudio.mp4")
SOURCE_FACE = "faces/grid_talker_swiz3n_frontal.png"
STAGES = (
    "decode", "detect", "landmarks", "descriptor", "align", "swap", "mask", "blend", "encode"
)  # fmt: skip
HEIGHT = 720
FPS = 25


@dataclass
class RunResult:
    frames: int
    seconds: float
    swapped: int
    load_seconds: float
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def make_720p(source: Path, target: Path, frames: int) -> tuple[int, int]:
    """Re-encode the first ``frames`` frames at 720 lines (near-lossless, 1 s GOP)."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream = inp.streams.video[0]
        width = round(stream.codec_context.width * HEIGHT / stream.codec_context.height / 2) * 2
        enc = out.add_stream("libx264", rate=FPS)
        enc.width, enc.height, enc.pix_fmt = width, HEIGHT, "yuv420p"
        enc.options = {"crf": "12", "preset": "ultrafast", "g": str(FPS)}
        for index, frame in enumerate(inp.decode(video=0)):
            if index >= frames:
                break
            image = np.ascontiguousarray(
                cv2.resize(
                    frame.to_ndarray(format="bgr24"), (width, HEIGHT), interpolation=cv2.INTER_CUBIC
                ),
                dtype=np.uint8,
            )
            for packet in enc.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in enc.encode():
            out.mux(packet)
    return width, HEIGHT


def build_processor(pack: Path, models: Path | None, threads: int) -> FaceSwapProcessor:
    """The classic stage, or with a models directory the neural one (its stand-in swapper)."""
    if models is None:
        return build_from_settings(FaceSettings(identity=pack))
    from farm.devices import WorkerResources
    from farm.face.catalogue import full_face_manifest
    from farm.face.identity import load_identity
    from farm.face.onnx.processor import OnnxSwapProcessor

    settings = FaceSettings(
        identity=pack, backend="onnx", swapper="inswapper_128", detector="yunet"
    )
    return OnnxSwapProcessor(
        settings,
        load_identity(pack),
        full_face_manifest(models),
        WorkerResources(threads=threads),
        preference="cpu",
    )


def run_range(
    clip: Path,
    output: Path,
    pack: Path,
    start: int,
    stop: int,
    batch: int,
    single_thread: bool,
    models: Path | None = None,
) -> RunResult:
    """Decode ``[start, stop)``, swap faces, encode: one shard (or the whole clip)."""
    if single_thread:
        cv2.setNumThreads(1)
    began = time.perf_counter()
    processor = build_processor(pack, models, 1 if single_thread else 2)
    load = time.perf_counter() - began
    timer = StageTimer()
    swapped = 0
    t0 = time.perf_counter()
    with av.open(str(clip)) as inp, av.open(str(output), "w") as out:
        stream = inp.streams.video[0]
        if single_thread:
            stream.codec_context.thread_count = 1
        width, height = stream.codec_context.width, stream.codec_context.height
        enc = out.add_stream("libx264", rate=FPS)
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        options: dict[str, object] = {"crf": "18", "preset": "veryfast"}
        if single_thread:
            options["threads"] = "1"
        enc.options = options
        processor.prepare(shard_context(start, stop, width, height, fps=Fraction(FPS)))
        time_base = stream.time_base
        if start > 0 and time_base is not None:
            inp.seek(int(Fraction(start, FPS) / time_base), stream=stream, backward=True)
        frames: list[np.ndarray] = []
        indices: list[int] = []

        def flush() -> None:
            nonlocal swapped
            outputs = processor.process(frames, indices)
            swapped += sum(o is not f for o, f in zip(outputs, frames, strict=True))
            with timer("encode"):
                for image in outputs:
                    for packet in enc.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                        out.mux(packet)
            frames.clear()
            indices.clear()

        decoder = inp.decode(video=0)
        while True:
            with timer("decode"):
                frame = next(decoder, None)
                if frame is None:
                    break
                assert frame.pts is not None and time_base is not None
                index = round(frame.pts * time_base * FPS)
                image = frame.to_ndarray(format="bgr24") if start <= index < stop else None
            if index >= stop:
                break
            if image is None:
                continue
            frames.append(image)
            indices.append(index)
            if len(frames) == batch:
                flush()
        if frames:
            flush()
        with timer("encode"):
            for packet in enc.encode():
                out.mux(packet)
    seconds = time.perf_counter() - t0
    timer.merge(processor.timer)
    processor.close()
    return RunResult(stop - start, seconds, swapped, load, dict(timer.seconds))


def sharded(
    clip: Path,
    work: Path,
    pack: Path,
    frames: int,
    workers: int,
    batch: int,
    models: Path | None = None,
) -> RunResult:
    bounds = np.linspace(0, frames, workers + 1).round().astype(int)
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(
                run_range,
                clip,
                work / f"shard_{k:03d}.mp4",
                pack,
                int(a),
                int(b),
                batch,
                True,
                models,
            )
            for k, (a, b) in enumerate(itertools.pairwise(bounds))
        ]
        results = [f.result() for f in futures]
    wall = time.perf_counter() - began
    load = max(r.load_seconds for r in results)
    stages: dict[str, float] = {}
    for result in results:
        for stage, seconds in result.stages.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    # Workers start together; the farm keeps its actors (and loaded models) between shards.
    steady = max(r.seconds for r in results)
    return RunResult(frames, steady, sum(r.swapped for r in results), load, stages | {"wall": wall})


def judged(source: Path, output: Path, pack: Path) -> dict[str, float | None]:
    """The independent judges' headline numbers for one output against its source."""
    from farm.eval.evaluate import EvalRequest, EvalSettings, evaluate

    found = evaluate(
        EvalRequest(
            input=source,
            output=output,
            identity=pack,
            settings=EvalSettings(judges=("identity", "coverage", "fidelity", "temporal")),
        )
    ).report
    identity, coverage = found.identity_similarity, found.coverage
    fidelity, temporal = found.fidelity, found.temporal
    return {
        "sface_to_identity": identity.mean_to_identity if identity else None,
        "sface_to_original": identity.mean_to_original if identity else None,
        "closer_to_identity": identity.closer_to_identity if identity else None,
        "faces_changed": coverage.share_changed if coverage else None,
        "ssim_source_output": fidelity.ssim_source_output if fidelity else None,
        "ssim_identity_output": fidelity.ssim_identity_output if fidelity else None,
        "ssim_outside_face": fidelity.ssim_outside_face if fidelity else None,
        "jitter_ratio": temporal.jitter_ratio if temporal else None,
        "flicker_ratio": temporal.flicker_ratio if temporal else None,
    }


def report(
    name: str,
    size: tuple[int, int],
    plain: RunResult,
    farm: RunResult,
    workers: int,
    quality: dict[str, float | None],
) -> dict[str, object]:
    def per_frame(result: RunResult) -> dict[str, float]:
        return {s: 1000 * result.stages.get(s, 0.0) / result.frames for s in STAGES}

    ratio = farm.fps / plain.fps if plain.fps else 0.0
    print(
        f"\n{name}  {size[0]}x{size[1]}  {plain.frames} frames  (faces swapped in "
        f"{plain.swapped} plain / {farm.swapped} sharded)"
    )
    print(f"  plain loop      {plain.fps:6.1f} fps   (model load {plain.load_seconds:.2f} s)")
    print(
        f"  sharded x{workers}      {farm.fps:6.1f} fps   (wall incl. process start and model "
        f"load {farm.stages['wall']:.1f} s)"
    )
    print(f"  ratio sharded/plain  {ratio:.2f}")
    print("  ms per frame   " + " ".join(f"{s:>10}" for s in STAGES))
    for label, result in (("plain", plain), ("sharded*", farm)):
        values = per_frame(result)
        print(f"  {label:<14} " + " ".join(f"{values[s]:10.2f}" for s in STAGES))
    print("  (*sharded: CPU ms summed over workers, per frame)")
    inference = farm.stages.get("swap", 0.0) / (workers * farm.seconds) if farm.seconds else 0.0
    print(f"  share of the workers' wall time inside the swapper: {100 * inference:.1f} %")
    row: dict[str, object] = {
        "clip": name,
        "size": size,
        "frames": plain.frames,
        "plain_fps": plain.fps,
        "sharded_fps": farm.fps,
        "ratio": ratio,
        "inference_share": inference,
        "plain_ms": per_frame(plain),
        "sharded_ms": per_frame(farm),
    }
    if quality:  # the neural stand-in swaps no one in: nothing to judge
        print("  judges (plain output vs its input):")
        for key, value in quality.items():
            print(f"    {key:<22} {'-' if value is None else f'{value:.3f}'}")
        row["quality"] = quality
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--media", type=Path, default=here.parent / "shared" / "media")
    parser.add_argument("--frames", type=int, default=150, help="frames per clip")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--synthetic-inswapper",
        action="store_true",
        help="the neural stage with a stand-in of inswapper_128's signature and cost",
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
        work = Path(tmp)
        use_bench_operator(work / "farm-home")
        pack = make_identity(work, args.media / SOURCE_FACE)
        models = None
        if args.synthetic_inswapper:
            from bench.synthetic_models import synthetic_models_dir

            models, macs = synthetic_models_dir(work / "models")
            print(f"stand-in inswapper_128: {macs / 1e9:.1f} G multiply-accumulates per face")
        for relative in CLIPS:
            clip = work / (Path(relative).stem + "_720p.mp4")
            size = make_720p(args.media / relative, clip, args.frames)
            plain = run_range(
                clip, work / "plain.mp4", pack, 0, args.frames, args.batch, False, models
            )
            farm = sharded(clip, work, pack, args.frames, args.workers, args.batch, models)
            quality = {} if models is not None else judged(clip, work / "plain.mp4", pack)
            rows.append(report(Path(relative).name, size, plain, farm, args.workers, quality))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print("\ngoal: >= 15 fps at 720p on 2 cores")


if __name__ == "__main__":
    main()
