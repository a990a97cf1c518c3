"""Consent records: signed, checked before any work, each refusal with its own message."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from farm.errors import ConsentError
from farm.provenance.consent import (
    CLOCK_SKEW,
    ConsentRecord,
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
SIGNED_AT = dt.datetime(2026, 2, 1, 9, 30, tzinfo=dt.timezone.utc)
"""When the fixtures' records were signed: before TODAY, whatever this machine's clock says."""


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
        now=SIGNED_AT,
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
        "now": dt.datetime.combine(TODAY, dt.time(12), tzinfo=dt.timezone.utc),
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
        face_files=[face], operator=operator, now=SIGNED_AT,
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
    before_signing = SIGNED_AT - dt.timedelta(days=1)
    attempts = [
        lambda: check(tmp_path / "missing.yaml", operator, references),
        lambda: check(record_path, operator, references, today=dt.date(2030, 1, 1)),
        lambda: check(record_path, operator, references, scope={"face", "voice", "body"}),
        lambda: check(record_path, stranger, references),
        lambda: check(record_path, operator, references, face_files=[other]),
        lambda: check(record_path, operator, references, now=before_signing),
    ]
    reasons = [
        "consent missing", "expired on", "out of scope", "untrusted key", "does not cover",
        "created in the future",
    ]
    for attempt, reason in zip(attempts, reasons, strict=True):
        with pytest.raises(ConsentError) as caught:
            attempt()
        message = str(caught.value)
        assert [r for r in reasons if r in message] == [reason], message


def test_create_refuses_scope_without_media(operator: Operator) -> None:
    with pytest.raises(ConsentError, match="voice scope needs at least one --voice"):
        create_consent(
            subject="A", scope=["voice"], purpose="p", expires=TODAY, operator=operator,
            now=SIGNED_AT,
        )


# -- dates: the expiry at creation, the creation time at every check ---------------------------


def test_create_refuses_an_expiry_that_has_passed(
    operator: Operator, references: tuple[Path, Path]
) -> None:
    face, _ = references
    arguments: dict[str, object] = {
        "subject": "Alex Doe", "scope": ["face"], "purpose": "p", "face_files": [face],
        "operator": operator,
    }
    passed = "consent expires 2020-01-01, which has passed; give a future --expires"
    with pytest.raises(ConsentError, match=f"^{passed}$"):
        create_consent(expires=dt.date(2020, 1, 1), **arguments)  # type: ignore[arg-type]
    # On the system clock too, and the last day itself is still valid.
    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    with pytest.raises(ConsentError, match="which has passed"):
        create_consent(expires=yesterday, **arguments)  # type: ignore[arg-type]
    at = dt.datetime(2026, 3, 1, 23, 59, tzinfo=dt.timezone.utc)
    record = create_consent(expires=TODAY, now=at, **arguments)  # type: ignore[arg-type]
    assert record.expires == TODAY


def _signed_at(
    tmp_path: Path, operator: Operator, references: tuple[Path, Path], created: dt.datetime
) -> Path:
    """A record signed by the operator, as `create_consent` signs it, with `created` as given."""
    face, voice = references
    record = create_consent(
        subject="Alex Doe", scope=["face", "voice"], purpose="p", expires=dt.date(2099, 1, 1),
        face_files=[face], voice_files=[voice], operator=operator, now=created,
    )
    assert record.created == created.replace(microsecond=0)
    path = tmp_path / f"consent-{created:%Y%m%dT%H%M%S}.yaml"
    write_consent(record, path)
    return path


def test_a_record_created_in_the_future_is_refused(
    tmp_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    """The signature is valid (the signer's clock is wrong, not the record): only the date is."""
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    path = _signed_at(tmp_path, operator, references, future)
    record = read_consent(path)
    assert record.signature and record.signer_key_id == operator.key_id
    with pytest.raises(ConsentError, match=r"was created in the future: .* more than 5 minutes"):
        check(path, operator, references, now=None, today=None)
    # Once the clock has caught up, the same file passes.
    check(path, operator, references, now=future, today=None)


def test_created_within_the_clock_skew_is_accepted(
    tmp_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert dt.timedelta(minutes=5) == CLOCK_SKEW
    ahead = _signed_at(tmp_path, operator, references, now + CLOCK_SKEW)
    check(ahead, operator, references, now=now, today=None)  # exactly the skew: accepted
    slightly_ahead = _signed_at(tmp_path, operator, references, now + dt.timedelta(minutes=3))
    check(slightly_ahead, operator, references, now=now, today=None)
    too_far = _signed_at(tmp_path, operator, references, now + CLOCK_SKEW + dt.timedelta(seconds=1))
    with pytest.raises(ConsentError, match="created in the future"):
        check(too_far, operator, references, now=now, today=None)


def test_a_naive_created_time_is_read_as_utc(
    tmp_path: Path, operator: Operator, references: tuple[Path, Path]
) -> None:
    face, voice = references
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    record = ConsentRecord(
        consent_id="naive", subject="Alex Doe", authorised=(operator.key_id,),
        scope=("face", "voice"), purpose="p", expires=dt.date(2099, 1, 1),
        created=dt.datetime(2026, 3, 1, 13, 0),  # no zone: an hour after `now` in UTC
        media=tuple(create_consent(
            subject="x", scope=["face", "voice"], purpose="p", expires=dt.date(2099, 1, 1),
            face_files=[face], voice_files=[voice], operator=operator, now=now,
        ).media),
    ).signed_by(operator)
    path = tmp_path / "naive.yaml"
    write_consent(record, path)
    with pytest.raises(ConsentError, match="created in the future"):
        check(path, operator, references, now=now, today=None)
    check(path, operator, references, now=now + dt.timedelta(hours=1), today=None)


# -- create: bad values named by their flag -----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"subject": ""}, "--subject must not be empty"),
        ({"subject": "   "}, "--subject must not be empty"),
        ({"purpose": ""}, "--purpose must not be empty"),
        ({"scope": ["face", "body"]}, "--scope 'body' is not a consent scope"),
        ({"scope": []}, "--scope must name face, voice or face,voice"),
        ({"authorised": [""]}, "--authorised must not be empty"),
        ({"face_files": [Path("/nonexistent/face.png")]}, "--face /nonexistent/face.png does"),
    ],
)
def test_create_names_the_flag(
    operator: Operator, references: tuple[Path, Path], overrides: dict[str, object], message: str
) -> None:
    face, _ = references
    arguments: dict[str, object] = {
        "subject": "Alex Doe", "scope": ["face"], "purpose": "p", "expires": dt.date(2099, 1, 1),
        "face_files": [face], "operator": operator,
    }
    arguments.update(overrides)
    with pytest.raises(ConsentError) as caught:
        create_consent(**arguments)  # type: ignore[arg-type]
    text = caught.value.one_line()
    assert text.startswith(message), text
    for pydantic_words in ("Value error", "should have at least", "validation error", "Errno"):
        assert pydantic_words not in text


def test_create_refuses_a_directory_as_reference(
    operator: Operator, tmp_path: Path
) -> None:
    with pytest.raises(ConsentError, match=r"^--face .* is a directory, not a file$"):
        create_consent(
            subject="A", scope=["face"], purpose="p", expires=dt.date(2099, 1, 1),
            face_files=[tmp_path], operator=operator,
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
