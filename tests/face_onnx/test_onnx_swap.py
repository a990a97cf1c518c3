"""The neural face stage end to end: the ``onnx-swap`` processor on real frames, and a real job.

The swappers are graphs with the exact signatures of simswap_unofficial_512 and inswapper_128
whose output is their input crop (``identity=True``), the recogniser one with w600k_r50's.
Through detection, tracking, alignment, swapping, masking, colour matching and paste-back, every
frame must then come back as it was: bit-identical outside the face, and inside it within 45 dB
PSNR at SimSwap's 512 crop. That holds only if the paste-back is the exact inverse of the crop's
warp, the output is de-normalised the way the input was normalised, and the mask stays on the
face. (Templates, channel order and the emap are checked by hand computation in
test_detect_recognise and test_swap_models, where an identity graph could not tell.)
inswapper's 128 crop is smaller than these faces (about 100x145 px): the frame -> crop -> frame
round trip alone costs detail there, so it is held to 36 dB (it measures about 38).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from farm.devices import WorkerResources
from farm.face.catalogue import full_face_manifest
from farm.face.identity import load_identity
from farm.face.onnx.processor import OnnxSwapProcessor
from farm.face.processor import shard_context
from farm.face.settings import FaceSettings, SwapperName
from farm.fsutil import sha256_file
from farm.media.ffmpeg import ffmpeg_binary, run_ffmpeg
from farm.spec import JobSpec
from tests.conftest import media_path
from tests.face.conftest import decode
from tests.face_onnx.models import identity_models_dir
from tests.jobs import run_local

CLIP = "video/grid_hardcuts_4_speakers_12s.mp4"
FRAMES = 20


@pytest.fixture(scope="module")
def identity_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return identity_models_dir(tmp_path_factory.mktemp("models"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize(("swapper", "min_psnr"), [("simswap_512", 45.0), ("inswapper_128", 36.0)])
def test_an_identity_swapper_returns_every_frame_unchanged(
    identity_models: Path, identity_pack: Path, swapper: SwapperName, min_psnr: float
) -> None:
    from farm.face.yunet import YuNetDetector

    settings = FaceSettings(
        identity=identity_pack, backend="onnx", swapper=swapper, detector="yunet"
    )
    manifest = full_face_manifest(identity_models)
    processor = OnnxSwapProcessor(
        settings, load_identity(identity_pack), manifest, WorkerResources(), preference="cpu"
    )
    frames = decode(CLIP, 0, FRAMES)
    height, width = frames[0].shape[:2]
    processor.prepare(shard_context(0, FRAMES, width, height))
    out = processor.process(frames, list(range(FRAMES)))
    assert processor.notes() == [f"onnx-swap: {swapper} on CPU"]
    # The faces, found by a detector of their own (not the processor's tracks).
    judge = YuNetDetector(manifest)
    swapped = 0
    for source, rendered in zip(frames, out, strict=True):
        if rendered is source:
            continue
        swapped += 1
        found = judge.detect(source)
        assert found, "a frame came back changed where no face is"
        inside = np.zeros(source.shape[:2], bool)
        for detection in found:
            x0, y0, x1, y1 = detection.box
            w, h = x1 - x0, y1 - y0
            # The swap's crop reaches past the detector's box (forehead, chin, cheeks).
            inside[
                max(0, int(y0 - 0.6 * h)) : int(y1 + 0.6 * h),
                max(0, int(x0 - 0.6 * w)) : int(x1 + 0.6 * w),
            ] = True
        assert np.array_equal(rendered[~inside], source[~inside]), "pixels outside a face moved"
        x0, y0, x1, y1 = (int(v) for v in found[0].box)
        assert psnr(rendered[y0:y1, x0:x1], source[y0:y1, x0:x1]) >= min_psnr
    assert swapped >= FRAMES - 2, f"only {swapped} of {FRAMES} frames had a face rendered"


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clip") / "grid2s.mp4"
    run_ffmpeg(
        [ffmpeg_binary(), "-loglevel", "error", "-y", "-i", str(media_path(CLIP)),
         "-frames:v", "50", "-t", "2", "-c:v", "libx264", "-crf", "16", "-c:a", "aac", str(out)]
    )  # fmt: skip
    return out


def test_auto_runs_the_neural_stack_and_the_report_says_so(
    identity_models: Path, identity_pack: Path, short_clip: Path, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate(
        {
            "input": short_clip,
            "output": tmp_path / "out.mp4",
            "face": {"identity": identity_pack},
            "models_dir": identity_models,
        }
    )
    report = run_local(spec)
    stack = report.face_stack
    assert stack is not None
    assert (stack.backend, stack.swapper, stack.detector) == ("onnx", "inswapper_128", "yunet")
    assert stack.models == ["inswapper_128", "arcface_w600k_r50"]
    assert "auto: inswapper_128" in stack.reason
    assert stack.execution == [
        "onnx-swap: inswapper_128 on CPU",
        "onnx-swap: no GPU was given to this worker; ran on the CPU",
    ]
    assert report.frames_changed >= 45
    assert report.settings["face"]["backend"] == "onnx", "the job hashes the resolved stack"
    assert (tmp_path / "out.mp4").is_file()


def test_a_pack_made_with_arcface_present_stores_its_embeddings(
    identity_models: Path, session_farm_home: Path, tmp_path: Path
) -> None:
    import datetime as dt

    from farm.face.identity import create_identity
    from farm.face.onnx.arcface import ArcFaceRecogniser
    from farm.face.onnx.processor import identity_embedding
    from farm.face.onnx.runtime import SessionFactory
    from farm.face.stack_choice import RECOGNISER, pack_embedder
    from farm.models import face_manifest
    from farm.provenance.consent import create_consent, write_consent
    from farm.provenance.keys import load_operator

    photo = media_path("faces/grid_talker_swiz3n_frontal.png")
    consent = tmp_path / "consent.yaml"
    write_consent(
        create_consent(
            subject="GRID talker swiz3n",
            scope=["face"],
            purpose="tests",
            expires=dt.date(2099, 1, 1),
            face_files=[photo],
            voice_files=[],
            operator=load_operator(session_farm_home),
        ),
        consent,
    )
    embedder = pack_embedder(identity_models)
    assert embedder is not None and pack_embedder(None) is None
    pack = create_identity(
        [photo], consent, tmp_path / "pack", face_manifest(None), embedder=embedder
    ).pack
    arcface_sha = sha256_file(identity_models / "arcface.onnx")
    assert pack.manifest.models[RECOGNISER] == arcface_sha, "the signed manifest names the model"
    stored = pack.manifest.faces[0].arcface
    assert stored is not None and len(stored) == 512

    def not_needed() -> ArcFaceRecogniser:
        raise AssertionError("the stored embedding should have been used")

    from_pack = identity_embedding(pack, not_needed, arcface_sha)
    recogniser = ArcFaceRecogniser(identity_models / "arcface.onnx", SessionFactory("cpu"))
    computed = identity_embedding(pack, lambda: recogniser, "another model file")
    assert np.allclose(from_pack, computed, atol=1e-5)
    with pytest.raises(AssertionError, match="stored embedding"):
        identity_embedding(pack, not_needed, "0" * 64)
