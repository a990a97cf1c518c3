"""Identity packs: what a pack holds, how it is verified, and how bad inputs are reported."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.identity import identity_app
from farm.errors import ConsentError, MediaError, SpecError
from farm.face.dlib_stack import descriptor_distance
from farm.face.identity import CROP_SIZE, IdentityPack, create_identity, load_identity
from farm.models import ModelManifest, sha256_file
from tests.conftest import media_path
from tests.face.conftest import SOURCE_FACE, decode


def test_pack_holds_faces_voices_and_consent(pack: IdentityPack, consent_file: Path) -> None:
    assert len(pack.faces) == 1
    face = pack.faces[0]
    assert face.image.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert face.landmarks.shape == (68, 2) and face.descriptor.shape == (128,)
    assert ((face.landmarks >= 0) & (face.landmarks < CROP_SIZE)).all()
    assert [p.name for p in pack.voice_refs] == ["voice_00.wav"]
    assert sha256_file(pack.voice_refs[0]) == sha256_file(media_path("audio/grid_swiz3n.wav"))
    assert pack.consent.path.read_bytes() == consent_file.read_bytes()
    assert pack.consent.sha256 == sha256_file(consent_file)
    assert pack.manifest.faces[0].source_sha256 == sha256_file(media_path(SOURCE_FACE))


def test_pack_descriptor_recognises_the_same_talker_in_video(
    pack: IdentityPack, stack: object
) -> None:
    from farm.face.dlib_stack import DlibFaceStack

    assert isinstance(stack, DlibFaceStack)
    # swiz3n talks at 6-9 s of the hard-cuts clip; the bbaf2n talker opens it.
    distances = []
    for frame in (
        decode("video/grid_hardcuts_4_speakers_12s.mp4", 160, 161)[0],
        decode("video/grid_hardcuts_4_speakers_12s.mp4", 10, 11)[0],
    ):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        box = stack.detect(gray)[0]
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        distances.append(
            descriptor_distance(stack.descriptor(rgb, stack.landmarks(gray, box)), pack.descriptor)
        )
    assert distances[0] < 0.5 < distances[1]


def _copy(pack_dir: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "pack"
    shutil.copytree(pack_dir, copy)
    return copy


def _edit_manifest(pack: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = pack / "identity.json"
    data = json.loads(manifest.read_text())
    edit(data)
    manifest.write_text(json.dumps(data, indent=2))


def test_a_swapped_face_with_its_hash_updated_is_refused(pack_dir: Path, tmp_path: Path) -> None:
    """The consent bypass: another person's crop, its sha256 written into the manifest."""
    copy = _copy(pack_dir, tmp_path)
    other = cv2.imread(str(media_path("faces/astronaut_eileen_collins_nasa.png")))
    face = copy / "faces" / "face_00.png"
    cv2.imwrite(str(face), cv2.resize(other, (CROP_SIZE, CROP_SIZE)))
    _edit_manifest(copy, lambda m: m["faces"][0].update(sha256=sha256_file(face)))
    with pytest.raises(ConsentError, match=r"identity\.json was edited after the pack was signed"):
        load_identity(copy)


def test_edited_landmarks_are_refused(pack_dir: Path, tmp_path: Path) -> None:
    copy = _copy(pack_dir, tmp_path)
    _edit_manifest(copy, lambda m: m["faces"][0]["landmarks"][30].__setitem__(0, 1.0))
    with pytest.raises(ConsentError, match=r"identity\.json was edited"):
        load_identity(copy)


def test_a_replaced_or_missing_file_is_refused_by_name(pack_dir: Path, tmp_path: Path) -> None:
    copy = _copy(pack_dir, tmp_path)
    consent = next((copy / "consent").iterdir())
    consent.write_text("something else")
    with pytest.raises(ConsentError, match=rf"{consent.name} was altered since the pack was"):
        load_identity(copy)
    consent.unlink()
    with pytest.raises(ConsentError, match=rf"{consent.name} is missing"):
        load_identity(copy)
    (copy / "faces" / "face_00.png").write_bytes(b"x")
    with pytest.raises(ConsentError, match=r"face_00\.png was altered"):
        load_identity(copy)
    with pytest.raises(MediaError, match="not an identity pack"):
        load_identity(tmp_path)


def test_an_added_file_is_refused(pack_dir: Path, tmp_path: Path) -> None:
    copy = _copy(pack_dir, tmp_path)
    (copy / "faces" / "face_01.png").write_bytes((copy / "faces" / "face_00.png").read_bytes())
    with pytest.raises(ConsentError, match=r"face_01\.png is not in the pack's signed manifest"):
        load_identity(copy)


def test_a_pack_signed_by_an_untrusted_key_is_refused(
    pack_dir: Path, tmp_path: Path, manifest: ModelManifest, consent_file: Path
) -> None:
    from farm.provenance.keys import init_keys, load_trust

    stranger = init_keys(tmp_path / "stranger")
    pack = create_identity(
        [media_path(SOURCE_FACE)], consent_file, tmp_path / "theirs", manifest, operator=stranger
    ).pack
    assert pack.manifest.signer_key_id == stranger.key_id
    with pytest.raises(ConsentError, match=rf"signed by key {stranger.key_id}, which this farm"):
        load_identity(tmp_path / "theirs", trust=load_trust())


def test_an_unsigned_format_1_pack_is_refused(pack_dir: Path, tmp_path: Path) -> None:
    copy = _copy(pack_dir, tmp_path)
    _edit_manifest(copy, lambda m: m.update(format=1))
    with pytest.raises(ConsentError, match="made before packs were signed"):
        load_identity(copy)
    _edit_manifest(copy, lambda m: m.update(format=2, signature=None))
    with pytest.raises(ConsentError, match="is not signed"):
        load_identity(copy)


def _image(tmp_path: Path, name: str, image: np.ndarray) -> Path:
    path = tmp_path / name
    cv2.imwrite(str(path), image)
    return path


def test_image_without_a_face_is_an_error(
    tmp_path: Path, manifest: ModelManifest, consent_file: Path
) -> None:
    blank = _image(tmp_path, "wall.png", np.full((300, 300, 3), 128, np.uint8))
    with pytest.raises(MediaError, match=r"no face found in identity image wall\.png"):
        create_identity([blank], consent_file, tmp_path / "out", manifest)
    assert not (tmp_path / "out").exists()


def test_image_with_several_faces_uses_the_largest_and_warns(
    tmp_path: Path, manifest: ModelManifest, consent_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    two = decode("video/grid_two_faces_turn_taking_6s.mp4", 0, 1)[0]
    path = _image(tmp_path, "two.png", two)
    with caplog.at_level(logging.WARNING):
        created = create_identity([path], consent_file, tmp_path / "out", manifest)
    assert len(created.warnings) == 1 and "2 faces found" in created.warnings[0]
    assert "using the largest" in caplog.text
    assert created.pack.manifest.warnings == list(created.warnings)


def test_face_under_40_px_is_an_error(
    tmp_path: Path, manifest: ModelManifest, consent_file: Path
) -> None:
    small = cv2.resize(cv2.imread(str(media_path(SOURCE_FACE))), None, fx=0.3, fy=0.3)
    path = _image(tmp_path, "small.png", small)
    with pytest.raises(MediaError, match=r"px wide, under the 40 px minimum"):
        create_identity([path], consent_file, tmp_path / "out", manifest)


def test_unreadable_missing_and_bad_inputs(
    tmp_path: Path, manifest: ModelManifest, consent_file: Path
) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG but not really")
    face = media_path(SOURCE_FACE)
    with pytest.raises(MediaError, match=r"garbage\.png cannot be read"):
        create_identity([garbage], consent_file, tmp_path / "a", manifest)
    with pytest.raises(MediaError, match="does not exist"):
        create_identity([tmp_path / "nope.png"], consent_file, tmp_path / "b", manifest)
    with pytest.raises(ConsentError, match="does not exist"):
        create_identity([face], tmp_path / "no-consent.txt", tmp_path / "c", manifest)
    with pytest.raises(MediaError, match="not a WAV"):
        create_identity([face], consent_file, tmp_path / "d", manifest, voices=[consent_file])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SpecError, match="not empty"):
        create_identity([face], consent_file, tmp_path / "full", manifest)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("short", r"hold 0\.50 s of audio, need at least 2\.0 s"),
        ("silence", "voiced speech"),
        ("noise", "voiced speech"),
    ],
)
def test_voice_references_that_cannot_make_a_voice_are_refused_at_creation(
    kind: str, message: str, tmp_path: Path, manifest: ModelManifest, consent_file: Path
) -> None:
    import soundfile as sf

    rate = 16000
    if kind == "short":
        voice, voice_rate = sf.read(str(media_path("audio/grid_swiz3n.wav")), dtype="float32")
        audio, rate = voice[: int(0.5 * voice_rate)], voice_rate
    elif kind == "silence":
        audio = np.zeros(4 * rate, np.float32)
    else:
        audio = np.random.default_rng(0).normal(0, 0.2, 4 * rate).astype(np.float32)
    clip = tmp_path / f"{kind}.wav"
    sf.write(str(clip), audio, rate)
    with pytest.raises(MediaError, match=message):
        create_identity(
            [media_path(SOURCE_FACE)], consent_file, tmp_path / "out", manifest, voices=[clip]
        )
    assert not (tmp_path / "out").exists()


def test_cli_creates_a_pack_and_reports_errors_on_one_stderr_line(
    tmp_path: Path, consent_file: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "pack"
    ok = runner.invoke(
        identity_app,
        [
            "create",
            "--face",
            str(media_path(SOURCE_FACE)),
            "--consent",
            str(consent_file),
            "-o",
            str(out),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert load_identity(out).consent.sha256 == sha256_file(consent_file)
    blank = _image(tmp_path, "wall.png", np.full((200, 200, 3), 90, np.uint8))
    bad = runner.invoke(
        identity_app,
        ["create", "--face", str(blank), "--consent", str(consent_file), "-o", str(tmp_path / "x")],
    )
    assert bad.exit_code == 1
    # The wall photo is not covered by the consent record: refused before any face work.
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("farm: error: consent")
    assert "does not cover reference face wall.png" in bad.stderr
    assert bad.stdout == ""
