"""Identity packs: the consenting source person, as a directory made once and read by every worker.

::

    DIR/
      identity.json          signed manifest: every file's sha256, faces (landmarks, descriptor,
                             the consented source photo's sha256), voices, consent, models, how
                             the crops were made; Ed25519 signature of the operator
      faces/face_00.png      aligned source face crops (FFHQ alignment, lossless)
      voices/voice_00.wav    voice references, copied as given
      consent/<name>         the consent record, copied as given

`create_identity` builds a pack and signs its manifest with the operator's key; `load_identity`
reads one back and refuses it, naming the file, unless the signature verifies with a trusted key,
every file has its recorded sha256 and no file was added. The job's consent check compares the
record against the consented-media hashes in that signed manifest, so a pack cannot vouch for a
photo its operator never signed for.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from farm.errors import ConsentError, MediaError, SpecError
from farm.face.dlib_stack import DlibFaceStack
from farm.face.geometry import Landmarks, alignment_matrix, box_width, transform_points
from farm.models import DLIB_DESCRIPTOR, DLIB_HOG, DLIB_LANDMARKS_68, ModelManifest, sha256_file

if TYPE_CHECKING:
    from farm.provenance.keys import Operator, TrustList

logger = logging.getLogger(__name__)

PACK_MANIFEST = "identity.json"
PACK_FORMAT = 2
"""2: the manifest is signed. Format 1 packs (unsigned) are refused: re-create them."""
CROP_SIZE = 384
"""Side of the stored aligned face crop, in pixels."""
MIN_FACE_PX = 40
"""Smallest usable source face width; smaller faces carry too little identity to swap."""


class PackFace(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    sha256: str
    source_name: str
    source_sha256: str
    face_width_px: float = Field(description="detected face width in the source image")
    landmarks: list[tuple[float, float]] = Field(description="68 points in the aligned crop")
    descriptor: list[float] = Field(description="128-D dlib descriptor of the source face")
    arcface: list[float] | None = Field(
        default=None,
        description="raw 512-D ArcFace embedding of the aligned crop, when the recogniser was in "
        "the models directory at creation (its sha256 is in `models`)",
    )


class PackFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    sha256: str
    source_name: str


class PackVoiceModel(BaseModel):
    """A voice model trained on the person (an RVC v2 generator), covered by their consent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["rvc"] = "rvc"
    file: str
    sha256: str
    source_name: str
    sample_rate: int | None = Field(
        default=None, description="output rate it was trained at (None: read from its metadata)"
    )


class PackDerivation(BaseModel):
    """How the stored crops were made from the consented photos."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: str = DLIB_HOG
    landmarks: str = DLIB_LANDMARKS_68
    descriptor: str = DLIB_DESCRIPTOR
    alignment: str = "similarity transform of the 68 landmarks onto the FFHQ template"
    crop_size: int = CROP_SIZE
    interpolation: str = "bicubic, border replicated"


class PackManifest(BaseModel):
    """The schema of ``identity.json``; its signature covers every other field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[2] = 2
    created: str = Field(description="UTC time the pack was made (ISO 8601)")
    faces: list[PackFace] = Field(min_length=1)
    voices: list[PackFile] = []
    voice_models: list[PackVoiceModel] = []
    consent: PackFile
    models: dict[str, str] = Field(description="model name → sha256 used to build the pack")
    derivation: PackDerivation = PackDerivation()
    warnings: list[str] = []
    signer_key_id: str | None = None
    signature: str | None = Field(default=None, description="base64 Ed25519 signature")

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (everything but the signature)."""
        return self.model_copy(update={"signature": None}).model_dump_json().encode()

    def signed_by(self, operator: Operator) -> PackManifest:
        unsigned = self.model_copy(update={"signer_key_id": operator.key_id, "signature": None})
        signature = operator.sign(unsigned.signed_bytes())
        return unsigned.model_copy(update={"signature": base64.b64encode(signature).decode()})

    def listed_files(self) -> set[str]:
        return (
            {f.file for f in self.faces}
            | {v.file for v in self.voices}
            | {m.file for m in self.voice_models}
            | {self.consent.file}
        )


@dataclass(frozen=True)
class SourceFace:
    """One aligned source face, ready to be warped onto targets."""

    image: np.ndarray
    """BGR uint8 aligned crop, ``CROP_SIZE``²."""
    landmarks: Landmarks
    """(68, 2) float32 points in the crop."""
    descriptor: np.ndarray
    """(128,) float32 identity descriptor."""


@dataclass(frozen=True)
class ConsentRecord:
    """Where the pack's consent record is and what it hashed to when the pack was made."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class IdentityPack:
    """A loaded, verified identity pack."""

    root: Path
    manifest: PackManifest
    faces: tuple[SourceFace, ...]
    voice_refs: tuple[Path, ...]
    consent: ConsentRecord
    voice_models: tuple[tuple[Path, PackVoiceModel], ...] = ()
    """Verified voice models trained on the person (path, entry), e.g. their RVC generator."""

    def voice_model(self, backend: str) -> tuple[Path, PackVoiceModel] | None:
        """The pack's first voice model for `backend`, if it has one."""
        return next((m for m in self.voice_models if m[1].backend == backend), None)

    @property
    def descriptor(self) -> np.ndarray:
        """The identity's descriptor: the mean over its source faces."""
        return np.mean([f.descriptor for f in self.faces], axis=0).astype(np.float32)

    def stored_embeddings(self, model: str, sha256: str | None) -> list[np.ndarray] | None:
        """The faces' embeddings by ``model`` as stored at creation, if every face has one and
        they were made by the file with this ``sha256``; None otherwise (compute them anew)."""
        made_by = self.manifest.models.get(model)
        if sha256 is None or made_by != sha256:
            return None
        stored = [face.arcface for face in self.manifest.faces]
        if any(vector is None for vector in stored):
            return None
        return [np.asarray(vector, dtype=np.float32) for vector in stored if vector is not None]


class FaceEmbedder(Protocol):
    """A recogniser an identity pack can store embeddings of (ArcFace, when present)."""

    @property
    def model(self) -> str:
        """Its catalogue name (the key in the pack's ``models``)."""
        ...

    @property
    def sha256(self) -> str:
        """Of the model file that makes the embeddings."""
        ...

    def embed_crop(self, crop: np.ndarray, landmarks: Landmarks) -> np.ndarray:
        """The raw embedding of an aligned pack crop with its 68 points."""
        ...


@dataclass(frozen=True)
class CreatedIdentity:
    pack: IdentityPack
    warnings: tuple[str, ...]


def read_image(path: Path) -> np.ndarray:
    """A BGR uint8 image; `MediaError` when missing or unreadable."""
    if not path.is_file():
        raise MediaError(f"identity image {path} does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise MediaError(
            f"identity image {path} cannot be read: not a PNG/JPEG/... image or corrupt"
        )
    return image


def analyse_source_face(
    stack: DlibFaceStack, image: np.ndarray, name: str
) -> tuple[SourceFace, float, list[str]]:
    """Find the face in a source image and align it; returns the face, its width and warnings."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    boxes = []
    for upsample in (0, 1, 2):
        boxes = stack.detect(gray, upsample=upsample)
        if boxes or max(gray.shape) * (2**upsample) > 4000:
            break
    if not boxes:
        raise MediaError(
            f"no face found in identity image {name}: use a well-lit, roughly frontal photo "
            f"with one face at least {MIN_FACE_PX} px wide"
        )
    warnings: list[str] = []
    if len(boxes) > 1:
        warnings.append(
            f"{len(boxes)} faces found in identity image {name}; using the largest "
            f"({box_width(boxes[0]):.0f} px wide). Crop the image to one face to silence this."
        )
    box = boxes[0]
    width = box_width(box)
    if width < MIN_FACE_PX:
        raise MediaError(
            f"the face in identity image {name} is {width:.0f} px wide, under the {MIN_FACE_PX} px "
            "minimum: use a larger or closer photo"
        )
    landmarks = stack.landmarks(gray, box)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    descriptor = stack.descriptor(rgb, landmarks)
    matrix = alignment_matrix(landmarks, CROP_SIZE)
    crop = cv2.warpAffine(
        image,
        matrix,
        (CROP_SIZE, CROP_SIZE),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    face = SourceFace(
        image=crop, landmarks=transform_points(landmarks, matrix), descriptor=descriptor
    )
    return face, width, warnings


def create_identity(
    faces: list[Path],
    consent: Path,
    output: Path,
    manifest: ModelManifest,
    *,
    voices: list[Path] | None = None,
    operator: Operator | None = None,
    embedder: FaceEmbedder | None = None,
    rvc_models: list[tuple[Path, int | None]] | None = None,
) -> CreatedIdentity:
    """Build an identity pack in ``output`` (which must not exist, or be empty), signed by
    ``operator`` (default: this farm's operator key). With an ``embedder`` (ArcFace, when the
    models directory has it) each face's embedding is stored too, so jobs need not recompute it.

    Raises:
        SpecError: no face image given, or ``output`` is a non-empty directory.
        MediaError: an image or voice file is missing, unreadable, faceless or too small, or the
            voice clips are too short or hold no voiced speech.
        ConsentError: the consent record is missing or empty.
    """
    from farm.provenance.keys import load_operator

    operator = operator or load_operator()
    voices = voices or []
    if not faces:
        raise SpecError("an identity needs at least one --face image")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise SpecError(f"identity output {output} already exists and is not empty; pick a new one")
    if not consent.is_file():
        raise ConsentError(f"consent record {consent} does not exist; an identity needs one")
    if consent.stat().st_size == 0:
        raise ConsentError(f"consent record {consent} is empty")
    for voice in voices:
        _check_wav(voice)
    if voices:
        check_voice_references(voices)

    stack = DlibFaceStack(manifest)
    analysed = []
    warnings: list[str] = []
    for path in faces:
        face, width, face_warnings = analyse_source_face(stack, read_image(path), path.name)
        analysed.append((path, face, width))
        warnings.extend(face_warnings)
    for warning in warnings:
        logger.warning("%s", warning)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for sub in ("faces", "voices", "consent"):
            (staging / sub).mkdir()
        pack_faces = []
        for k, (path, face, width) in enumerate(analysed):
            rel = f"faces/face_{k:02d}.png"
            if not cv2.imwrite(str(staging / rel), face.image):
                raise MediaError(f"cannot write {staging / rel}")
            pack_faces.append(
                PackFace(
                    file=rel,
                    sha256=sha256_file(staging / rel),
                    source_name=path.name,
                    source_sha256=sha256_file(path),
                    face_width_px=round(width, 1),
                    landmarks=[(round(float(x), 3), round(float(y), 3)) for x, y in face.landmarks],
                    descriptor=[float(v) for v in face.descriptor],
                    arcface=None
                    if embedder is None
                    else [float(v) for v in embedder.embed_crop(face.image, face.landmarks)],
                )
            )
        pack_voices = []
        for k, path in enumerate(voices):
            rel = f"voices/voice_{k:02d}.wav"
            shutil.copyfile(path, staging / rel)
            pack_voices.append(
                PackFile(file=rel, sha256=sha256_file(staging / rel), source_name=path.name)
            )
        pack_models = []
        for k, (path, rate) in enumerate(rvc_models or []):
            if not path.is_file():
                raise MediaError(f"RVC model {path} does not exist; give the exported .onnx")
            rel = f"voices/rvc_{k:02d}.onnx"
            shutil.copyfile(path, staging / rel)
            pack_models.append(
                PackVoiceModel(
                    file=rel,
                    sha256=sha256_file(staging / rel),
                    source_name=path.name,
                    sample_rate=rate,
                )
            )
        consent_rel = f"consent/{consent.name}"
        shutil.copyfile(consent, staging / consent_rel)
        pack = PackManifest(
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            faces=pack_faces,
            voices=pack_voices,
            voice_models=pack_models,
            consent=PackFile(
                file=consent_rel,
                sha256=sha256_file(staging / consent_rel),
                source_name=consent.name,
            ),
            models={
                name: manifest.entry(name).sha256 or ""
                for name in (DLIB_LANDMARKS_68, DLIB_DESCRIPTOR)
            }
            | ({} if embedder is None else {embedder.model: embedder.sha256}),
            warnings=warnings,
        ).signed_by(operator)
        (staging / PACK_MANIFEST).write_text(
            pack.model_dump_json(indent=2) + "\n", encoding="utf-8"
        )
        if output.exists():
            output.rmdir()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CreatedIdentity(
        pack=load_identity(output, trust=operator.trust), warnings=tuple(warnings)
    )


def check_voice_references(voices: list[Path]) -> None:
    """Refuse clips too short, silent or unvoiced for a voice profile (before any pack or job)."""
    from farm.voice.settings import VcSettings
    from farm.voice.stage import PROFILE_MIN_S
    from farm.voice.world import profile_from_references

    profile_from_references(voices, VcSettings(), PROFILE_MIN_S)


def _read_manifest(root: Path) -> PackManifest:
    path = root / PACK_MANIFEST
    if not root.is_dir():
        raise MediaError(
            f"identity pack {root} does not exist; make one with `farm identity create`"
        )
    if not path.is_file():
        raise MediaError(
            f"{root} is not an identity pack ({PACK_MANIFEST} is missing); "
            "make one with `farm identity create`"
        )
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConsentError(f"{path} is not a readable pack manifest; re-create the pack") from None
    if isinstance(data, dict) and data.get("format") == 1:
        raise ConsentError(
            f"identity pack {root} was made before packs were signed; re-create it with "
            "`farm identity create`"
        )
    try:
        return PackManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConsentError(f"{path}: invalid field {field}: {first['msg']}") from None


def _check_signature(root: Path, manifest: PackManifest, trust: TrustList) -> None:
    from farm.provenance.keys import signature_problem

    path = root / PACK_MANIFEST
    problem = signature_problem(
        manifest.signer_key_id, manifest.signature, manifest.signed_bytes(), trust
    )
    if problem == "unsigned":
        raise ConsentError(f"{path} is not signed; re-create the pack with `farm identity create`")
    if problem == "untrusted":
        raise ConsentError(
            f"identity pack {root} is signed by key {manifest.signer_key_id}, which this farm "
            "does not trust; `farm keys trust` that operator's key, or re-create the pack here"
        )
    if problem == "bad":
        raise ConsentError(
            f"{path} was edited after the pack was signed (its signature does not verify); "
            "re-create the pack with `farm identity create`"
        )


def load_identity(root: Path, *, trust: TrustList | None = None) -> IdentityPack:
    """Read and verify an identity pack (``trust``: the farm's trust list, loaded if None).

    Raises:
        MediaError: the pack directory or its manifest is missing, or a face crop is unreadable.
        ConsentError: the manifest is unsigned, signed by an untrusted key or edited since; a
            file is missing, altered, or not listed in the signed manifest.
    """
    from farm.provenance.keys import load_trust

    manifest = _read_manifest(root)
    _check_signature(root, manifest, trust if trust is not None else load_trust())
    path = root / PACK_MANIFEST
    listed = manifest.listed_files() | {PACK_MANIFEST}
    for file in sorted(p for p in root.rglob("*") if not p.is_dir()):
        rel = file.relative_to(root).as_posix()
        if rel not in listed:
            raise ConsentError(
                f"identity pack file {file} is not in the pack's signed manifest; remove it "
                "or re-create the pack"
            )
    faces = []
    for entry in manifest.faces:
        file = _verified(root, entry.file, entry.sha256)
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise MediaError(f"identity face {file} cannot be read")
        landmarks = np.asarray(entry.landmarks, dtype=np.float32)
        descriptor = np.asarray(entry.descriptor, dtype=np.float32)
        if landmarks.shape != (68, 2) or descriptor.shape != (128,):
            raise MediaError(f"{path}: face {entry.file} needs 68 landmarks and a 128-D descriptor")
        faces.append(SourceFace(image=image, landmarks=landmarks, descriptor=descriptor))
    voices = tuple(_verified(root, v.file, v.sha256) for v in manifest.voices)
    models = tuple((_verified(root, m.file, m.sha256), m) for m in manifest.voice_models)
    consent_path = _verified(root, manifest.consent.file, manifest.consent.sha256)
    return IdentityPack(
        root=root,
        manifest=manifest,
        faces=tuple(faces),
        voice_refs=voices,
        consent=ConsentRecord(path=consent_path, sha256=manifest.consent.sha256),
        voice_models=models,
    )


def _verified(root: Path, rel: str, sha256: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise ConsentError(f"identity pack file {path} is missing; re-create the pack")
    found = sha256_file(path)
    if found != sha256:
        raise ConsentError(
            f"identity pack file {path} was altered since the pack was signed (sha256 "
            f"{found[:12]}…, signed {sha256[:12]}…); re-create the pack"
        )
    return path


def _check_wav(path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"voice reference {path} does not exist")
    with path.open("rb") as handle:
        header = handle.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise MediaError(f"voice reference {path} is not a WAV file (no RIFF/WAVE header)")


def create_consented_identity(
    faces: list[Path],
    consent: Path,
    output: Path,
    *,
    voices: list[Path] | None = None,
    models_dir: Path | None = None,
    rvc_model: Path | None = None,
    rvc_sample_rate: int | None = None,
) -> CreatedIdentity:
    """`farm identity create` and ``POST /v1/identities``: refuse unless the consent record is
    signed, trusted, current, in scope and covers exactly these photos, voice clips and voice
    model, then build the pack (with ArcFace embeddings when ``models_dir`` has ArcFace).

    A voice model trained on the person is their voice too, so the consent must list it.
    """
    from farm.face.stack_choice import pack_embedder
    from farm.models import face_manifest
    from farm.provenance.consent import check_consent
    from farm.provenance.keys import load_trust

    voices = list(voices or [])
    voice_files = [*voices, *([rvc_model] if rvc_model is not None else [])]
    if rvc_sample_rate is not None and rvc_sample_rate not in (32000, 40000, 48000):
        raise SpecError(f"--rvc-sample-rate {rvc_sample_rate}: use 32000, 40000 or 48000")
    check_consent(
        consent,
        scope={"face", "voice"} if voice_files else {"face"},
        face_files=list(faces),
        voice_files=voice_files,
        trust=load_trust(),
    )
    return create_identity(
        list(faces),
        consent,
        output,
        face_manifest(models_dir),
        voices=voices,
        embedder=pack_embedder(models_dir),
        rvc_models=[] if rvc_model is None else [(rvc_model, rvc_sample_rate)],
    )
