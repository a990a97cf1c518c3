"""Consent records: signed, checked before any work, each refusal with its own message."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from farm.errors import ConsentError
from farm.provenance.consent import (
    check_consent,
    create_consent,
    read_consent,
    sha256_file,
    write_consent,
)
from farm.provenance.keys import (
    CERT_FILE,
    CERT_KEY_FILE,
    ENV_C2PA_CERT,
    ENV_C2PA_KEY,
    ENV_OPERATOR_KEY,
    ENV_TRUST,
    KEY_FILE,
    PUB_FILE,
    TRUST_FILE,
    Operator,
    OperatorKeyError,
    init_keys,
    load_operator,
    load_trust,
    trust_key,
)
from tests.conftest import media_path

TODAY = dt.date(2026, 3, 1)


@pytest.fixture
def references(tmp_path: Path) -> tuple[Path, Path]:
    face = tmp_path / "face.png"
    voice = tmp_path / "voice.wav"
    shutil.copy(media_path("faces/grid_talker_swiz3n_frontal.png"), face)
    shutil.copy(media_path("audio/grid_swiz3n.wav"), voice)
    return face, voice


@pytest.fixture
def record_path(tmp_path: Path, operator: Operator, references: tuple[Path, Path]) -> Path:
    face, voice = references
    record = create_consent(
        subject="Alex Doe",
        scope=["face", "voice"],
        purpose="dubbed trailer",
        expires=dt.date(2026, 12, 31),
        face_files=[face],
        voice_files=[voice],
        operator=operator,
    )
    path = tmp_path / "consent.yaml"
    write_consent(record, path)
    return path


def check(path: Path, operator: Operator, references: tuple[Path, Path], **overrides: object):
    face, voice = references
    arguments: dict[str, object] = {
        "scope": {"face", "voice"},
        "face_files": [face],
        "voice_files": [voice],
        "trust": operator.trust,
        "today": TODAY,
    }
    arguments.update(overrides)
    return check_consent(path, **arguments)  # type: ignore[arg-type]


def test_a_valid_record_passes(
    record_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    record = check(record_path, operator, references)
    assert record.subject == "Alex Doe"
    assert record.scope == ("face", "voice")
    assert record.signer_key_id == operator.key_id
    assert {m.sha256 for m in record.media} == {sha256_file(p) for p in references}
    assert record.authorised == (operator.key_id,)


def test_missing_record_is_refused(
    tmp_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    with pytest.raises(ConsentError, match=r"consent missing: .* does not exist"):
        check(tmp_path / "nope.yaml", operator, references)


def test_expired_record_is_refused(
    record_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    with pytest.raises(ConsentError, match=r"expired on 2026-12-31 \(today is 2027-01-01\)"):
        check(record_path, operator, references, today=dt.date(2027, 1, 1))
    check(record_path, operator, references, today=dt.date(2026, 12, 31))  # the last day is valid


def test_wrong_scope_is_refused(
    tmp_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    face, _ = references
    record = create_consent(
        subject="Alex Doe", scope=["face"], purpose="p", expires=dt.date(2026, 12, 31),
        face_files=[face], operator=operator,
    )
    path = tmp_path / "face-only.yaml"
    write_consent(record, path)
    needs_voice = "out of scope: the job needs voice but the record covers only face"
    with pytest.raises(ConsentError, match=needs_voice):
        check(path, operator, references)
    check(path, operator, references, scope={"face"}, voice_files=[])


def test_untrusted_signer_is_refused(
    record_path: Path, tmp_path: Path, references: tuple[Path, Path], operator: Operator
) -> None:
    stranger = init_keys(tmp_path / "stranger-home")
    with pytest.raises(ConsentError, match=f"signed by untrusted key {operator.key_id}"):
        check(record_path, stranger, references)


def test_media_hash_mismatch_is_refused(
    record_path: Path, operator: Operator, references: tuple[Path, Path], tmp_path: Path
) -> None:
    other_face = tmp_path / "other.png"
    shutil.copy(media_path("faces/astronaut_eileen_collins_nasa.png"), other_face)
    with pytest.raises(ConsentError, match=r"does not cover reference face other\.png"):
        check(record_path, operator, references, face_files=[other_face])
    voice = references[1]
    voice.write_bytes(voice.read_bytes() + b"\0")  # the consented clip itself was changed
    with pytest.raises(ConsentError, match=r"does not cover reference voice voice\.wav"):
        check(record_path, operator, references)


def test_unsigned_record_is_refused(
    record_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    record = read_consent(record_path).model_copy(update={"signature": None})
    write_consent(record, record_path)
    with pytest.raises(ConsentError, match="is unsigned"):
        check(record_path, operator, references)


@pytest.mark.parametrize("edit", ["expires: '2026-12-31'", "subject: Alex Doe", "purpose: dubbed"])
def test_an_edited_record_fails_its_signature(
    record_path: Path, operator: Operator, references: tuple[Path, Path], edit: str
) -> None:
    text = record_path.read_text()
    assert edit in text
    key, _, value = edit.partition(": ")
    record_path.write_text(text.replace(edit, f"{key}: {value.replace('2026', '2099')}X", 1))
    with pytest.raises(ConsentError, match=r"bad signature|malformed"):
        check(record_path, operator, references)


def test_one_flipped_byte_is_refused(
    record_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    data = bytearray(record_path.read_bytes())
    data[data.index(b"Alex") + 1] ^= 0x01  # "Alex" -> "Amex"
    record_path.write_bytes(bytes(data))
    with pytest.raises(ConsentError, match="bad signature"):
        check(record_path, operator, references)


def test_every_failure_has_its_own_message(
    tmp_path: Path, record_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    stranger = init_keys(tmp_path / "stranger")
    other = tmp_path / "other.png"
    shutil.copy(media_path("faces/astronaut_eileen_collins_nasa.png"), other)
    attempts = [
        lambda: check(tmp_path / "missing.yaml", operator, references),
        lambda: check(record_path, operator, references, today=dt.date(2030, 1, 1)),
        lambda: check(record_path, operator, references, scope={"face", "voice", "body"}),
        lambda: check(record_path, stranger, references),
        lambda: check(record_path, operator, references, face_files=[other]),
    ]
    reasons = ["consent missing", "expired on", "out of scope", "untrusted key", "does not cover"]
    for attempt, reason in zip(attempts, reasons, strict=True):
        with pytest.raises(ConsentError) as caught:
            attempt()
        message = str(caught.value)
        assert [r for r in reasons if r in message] == [reason], message


def test_create_refuses_scope_without_media(operator: Operator) -> None:
    with pytest.raises(ConsentError, match="voice scope needs at least one --voice"):
        create_consent(
            subject="A", scope=["voice"], purpose="p", expires=TODAY, operator=operator
        )


def test_keys_trust_and_env_loading(
    farm_home: Path, operator: Operator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (farm_home / KEY_FILE).stat().st_mode & 0o077 == 0
    with pytest.raises(OperatorKeyError, match="already exists"):
        init_keys(farm_home)
    other = init_keys(tmp_path / "other-farm")
    entry = trust_key(farm_home, (tmp_path / "other-farm" / PUB_FILE).read_text(), name="B")
    assert entry.key_id == other.key_id
    trust = load_trust(farm_home, env={})
    assert trust.public_key(other.key_id) is not None
    assert trust.public_key(operator.key_id) is not None
    # A cluster worker: no files, everything from environment variables (Kubernetes secrets).
    env = {
        ENV_OPERATOR_KEY: (farm_home / KEY_FILE).read_text(),
        ENV_C2PA_CERT: (farm_home / CERT_FILE).read_text(),
        ENV_C2PA_KEY: (farm_home / CERT_KEY_FILE).read_text(),
        ENV_TRUST: (farm_home / TRUST_FILE).read_text(),
    }
    loaded = load_operator(tmp_path / "empty-home", env=env)
    assert loaded.key_id == operator.key_id
    assert {k.key_id for k in loaded.trust.keys} == {operator.key_id, other.key_id}
    with pytest.raises(OperatorKeyError, match="missing"):
        load_operator(tmp_path / "empty-home", env={})
