"""`farm keys`, `farm consent` and `farm verify` refuse bad input in the user's words.

Every case runs the command line's own `main` (in-process: `tests.conftest.farm_cli`): exit code
1, exactly one line on stderr, ``farm: error: ...``, naming the flag or the setting that was
wrong, with no traceback, pydantic wording or errno number.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from farm.provenance.keys import (
    ENV_C2PA_CERT,
    ENV_C2PA_KEY,
    ENV_HOME,
    ENV_OPERATOR_KEY,
    ENV_TRUST,
    PUB_FILE,
)
from tests.conftest import farm_cli, media_path

FORBIDDEN = (
    "Traceback",
    "ValidationError",
    "validation error",
    "Errno",
    "Value error,",
    "String should have at least",
)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("farm: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    for words in FORBIDDEN:
        assert words not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def no_cluster_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and trust come from FARM_HOME (the session operator), not from the environment."""
    for variable in (ENV_OPERATOR_KEY, ENV_C2PA_CERT, ENV_C2PA_KEY, ENV_TRUST):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-messages")
    face = root / "face.png"
    shutil.copy(media_path("faces/grid_talker_swiz3n_frontal.png"), face)
    voice = root / "voice.wav"
    shutil.copy(media_path("audio/grid_swiz3n.wav"), voice)
    home_file = root / "farm-home.txt"
    home_file.write_text("not a folder\n")
    folder = root / "folder"
    folder.mkdir()
    return {
        "root": root,
        "face": face,
        "voice": voice,
        "home file": home_file,
        "folder": folder,
        "out": root / "consent.yaml",
    }


def consent_create(inputs: dict[str, Path], **flags: str) -> list[str]:
    """`farm consent create` argv: a valid command, with `flags` replacing or adding values."""
    values = {
        "subject": "Alex Doe",
        "scope": "face,voice",
        "purpose": "dubbed trailer",
        "expires": "2099-01-01",
        "face": str(inputs["face"]),
        "voice": str(inputs["voice"]),
        "output": str(inputs["out"]),
        **flags,
    }
    argv = ["consent", "create"]
    for name, value in values.items():
        argv += [f"--{name}", value]
    return argv


CREATE_CASES: dict[str, tuple[dict[str, str], str]] = {
    "empty subject": ({"subject": ""}, "--subject must not be empty"),
    "blank subject": ({"subject": "  "}, "--subject must not be empty"),
    "empty purpose": ({"purpose": ""}, "--purpose must not be empty"),
    "unknown scope": ({"scope": "face,body"}, "--scope 'body' is not a consent scope"),
    "scope of commas": ({"scope": ","}, "--scope must name face, voice or face,voice"),
    "empty scope": ({"scope": ""}, "--scope must name face, voice or face,voice"),
    "empty authorised": ({"authorised": ""}, "--authorised must not be empty"),
    "missing face": ({"face": "/nonexistent/face.png"}, "--face /nonexistent/face.png does not"),
    "missing voice": ({"voice": "/nonexistent/v.wav"}, "--voice /nonexistent/v.wav does not exist"),
    "expired": (
        {"expires": "2020-01-01"},
        "consent expires 2020-01-01, which has passed; give a future --expires",
    ),
    "not a date": ({"expires": "next year"}, "--expires must be a date, YYYY-MM-DD"),
    "output folder missing": (
        {"output": "/nonexistent/dir/consent.yaml"},
        "cannot write consent record /nonexistent/dir/consent.yaml: No such file or directory",
    ),
}


@pytest.mark.parametrize("case", list(CREATE_CASES))
def test_consent_create_names_the_flag(inputs: dict[str, Path], case: str) -> None:
    flags, message = CREATE_CASES[case]
    inputs["out"].unlink(missing_ok=True)
    assert_one_line_error(farm_cli(*consent_create(inputs, **flags)), f"farm: error: {message}")
    assert not inputs["out"].exists()


def test_consent_create_refuses_a_folder_as_face(inputs: dict[str, Path]) -> None:
    folder = inputs["folder"]
    assert_one_line_error(
        farm_cli(*consent_create(inputs, face=str(folder))), f"--face {folder} is a directory"
    )


def test_consent_create_writes_a_valid_record(inputs: dict[str, Path]) -> None:
    """The baseline the cases above change one flag of."""
    result = farm_cli(*consent_create(inputs))
    assert result.returncode == 0, result.stderr
    assert farm_cli("consent", "verify", str(inputs["out"])).returncode == 0


def test_consent_verify_refuses_a_folder(inputs: dict[str, Path]) -> None:
    assert_one_line_error(
        farm_cli("consent", "verify", str(inputs["folder"])), "is a directory, not a consent file"
    )


MALFORMED_RECORDS = {
    "a YAML file that is no record": (
        "video:\n  crf: 18\n", "consent_id is missing; subject is missing"
    ),
    "plain text": ("these are notes\n", "it does not hold a consent record"),
    "broken YAML": ("subject: [\n", "it is not YAML or JSON"),
    "an empty subject": (None, "subject must not be empty"),
}


@pytest.mark.parametrize("case", list(MALFORMED_RECORDS))
def test_consent_verify_names_what_is_malformed(
    inputs: dict[str, Path], tmp_path: Path, case: str
) -> None:
    text, message = MALFORMED_RECORDS[case]
    record = tmp_path / "record.yaml"
    if text is None:  # a real record, edited
        out = tmp_path / "made.yaml"
        assert farm_cli(*consent_create(inputs, output=str(out))).returncode == 0
        text = out.read_text().replace("subject: Alex Doe", "subject: ''")
    record.write_text(text)
    assert_one_line_error(
        farm_cli("consent", "verify", str(record)),
        f"consent record {record} is unreadable or malformed: {message}",
    )


def test_verify_a_missing_file(inputs: dict[str, Path]) -> None:
    missing = inputs["root"] / "nope.mp4"
    line = assert_one_line_error(farm_cli("verify", str(missing)))
    assert line == f"farm: error: {missing} does not exist"


def home_file_commands(inputs: dict[str, Path], session_home: Path) -> dict[str, list[str]]:
    return {
        "keys init": ["keys", "init"],
        "keys show": ["keys", "show"],
        "keys trust": ["keys", "trust", str(session_home / PUB_FILE)],
        "consent create": consent_create(inputs),
        "consent verify": ["consent", "verify", str(inputs["out"])],
        "verify": ["verify", str(media_path("video/grid_jumpcut_same_speaker_6s.mp4"))],
    }


@pytest.mark.parametrize(
    "command",
    ["keys init", "keys show", "keys trust", "consent create", "consent verify", "verify"],
)
def test_farm_home_that_is_a_file(
    inputs: dict[str, Path], session_farm_home: Path, command: str
) -> None:
    home = inputs["home file"]
    argv = home_file_commands(inputs, session_farm_home)[command]
    line = assert_one_line_error(farm_cli(*argv, env={ENV_HOME: str(home)}))
    assert line == (
        f"farm: error: FARM_HOME={home} is a file, not a directory; point it at a folder"
    )
    assert home.read_text() == "not a folder\n"


def test_farm_home_inside_a_file(inputs: dict[str, Path]) -> None:
    home = inputs["home file"] / "farm"
    assert_one_line_error(
        farm_cli("keys", "init", env={ENV_HOME: str(home)}),
        f"FARM_HOME={home} is inside {inputs['home file']}, which is a file, not a directory",
    )


def test_keys_init_twice_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert farm_cli("keys", "init", env={ENV_HOME: str(home)}).returncode == 0
    assert_one_line_error(farm_cli("keys", "init", env={ENV_HOME: str(home)}), "already exists")


def test_keys_trust_refuses_a_folder_as_ca(
    inputs: dict[str, Path], session_farm_home: Path
) -> None:
    folder = inputs["folder"]
    assert_one_line_error(
        farm_cli("keys", "trust", str(session_farm_home / PUB_FILE), "--ca", str(folder)),
        f"--ca {folder} is a directory",
    )
