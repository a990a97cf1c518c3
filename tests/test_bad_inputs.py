"""Bad inputs through the real command line, as a hostile tester or a new user types them.

Each one (run in-process through the CLI's own `main`, see `tests.conftest.farm_cli`) must give
exactly one stderr line (`farm: error: ...`, no traceback, no pydantic or errno
wording) and a non-zero exit, write nothing at the output path, leave nothing in the way of the
next run, and leave an earlier good output there untouched. Nearly all are refused before a
cluster starts; the few that fail inside a job are followed by a good run to the same output.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from farm.spec import JobSpec
from tests.clips import ClipRecipe, make_clip
from tests.conftest import farm_cli, media_path
from tests.jobs import run_local


@dataclass
class World:
    """Files the cases point at."""

    root: Path
    clip: Path
    good: Path
    good_sha: str
    pack: Path
    tampered_pack: Path
    untrusted_pack: Path
    silent_pack: Path
    no_face: Path
    two_faces: Path
    busy_port: int


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, identity_pack: Path) -> Iterator[World]:
    from farm.face.identity import create_identity
    from farm.models import face_manifest
    from farm.provenance.keys import init_keys
    from tests.face.conftest import decode

    root = tmp_path_factory.mktemp("bad-inputs")
    clip = make_clip(ClipRecipe("good", seconds=1.0, size="160x120"), root)
    good = root / "good-out.mp4"
    run_local(JobSpec.model_validate({"input": clip, "output": good, "passthrough": True}))
    tampered = root / "tampered"
    shutil.copytree(identity_pack, tampered)
    cv2.imwrite(str(tampered / "faces" / "face_00.png"), np.zeros((384, 384, 3), np.uint8))
    stranger = init_keys(root / "stranger-home")
    consent = next((identity_pack / "consent").iterdir())
    face = media_path("faces/grid_talker_swiz3n_frontal.png")
    untrusted = create_identity(
        [face], consent, root / "untrusted", face_manifest(None), operator=stranger
    ).pack.root
    silent = root / "silent-pack"
    create_identity([face], consent, silent, face_manifest(None))  # no voice clips
    no_face = root / "wall.png"
    cv2.imwrite(str(no_face), np.full((240, 320, 3), 120, np.uint8))
    two = root / "two.png"
    cv2.imwrite(str(two), decode("video/grid_two_faces_turn_taking_6s.mp4", 0, 1)[0])
    _make_inputs(root, clip)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield World(
            root,
            clip,
            good,
            _sha(good),
            identity_pack,
            tampered,
            untrusted,
            silent,
            no_face,
            two,
            int(sock.getsockname()[1]),
        )


def _make_inputs(root: Path, clip: Path) -> None:
    """The broken files the cases point at, made once."""
    from farm.media.ffmpeg import run_ffmpeg, select_ffmpeg

    (root / "notes.mp4").write_bytes(b"not frames\n" * 50)
    (root / "empty.mp4").write_bytes(b"")
    (root / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    data = clip.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    shutil.copyfile(media_path("audio/grid_swiz3n.wav"), root / "speech.wav")
    run_ffmpeg(
        [select_ffmpeg({"libx264"}).path, "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "color=size=16x16:duration=0.2", "-c:v", "libx264", str(root / "tiny.mp4")]
    )  # fmt: skip
    (root / "dir.mp4").mkdir()
    (root / "not-a-work-dir").mkdir()
    (root / "lines.txt").write_text("set white in z three now\n")


RUN = "run {clip} -o {good}"
PASS = f"{RUN} --passthrough"
SWAP = f"{RUN} --identity {{pack}}"

CASES: dict[str, tuple[str, str]] = {
    # the input
    "missing input": ("run {root}/nope.mp4 -o {good} --passthrough", "does not exist"),
    "input is a directory": ("run {root} -o {good} --passthrough", "is not a file"),
    "text named .mp4": ("run {root}/notes.mp4 -o {good} --passthrough", "not a readable video"),
    "empty input": ("run {root}/empty.mp4 -o {good} --passthrough", "is empty"),
    "random bytes": ("run {root}/noise.mp4 -o {good} --passthrough", "not a readable video"),
    "truncated mp4": ("run {root}/truncated.mp4 -o {good} --passthrough", "truncated.mp4"),
    "audio only": ("run {root}/speech.wav -o {good} --passthrough", "has no video stream"),
    "16x16 video": ("run {root}/tiny.mp4 -o {good} --passthrough", "at least 64x36 pixels"),
    # the output
    "output dir missing": ("run {clip} -o {root}/no/o.mp4 --passthrough", "does not exist"),
    "output not writable": ("run {clip} -o /proc/farm-out.mp4 --passthrough", "not writable"),
    "output is a directory": ("run {clip} -o {root}/dir.mp4 --passthrough", "is a directory"),
    "output .avi": ("run {clip} -o {root}/o.avi --passthrough", "must end in .mp4 or .mov"),
    "output is the input": ("run {clip} -o {clip} --passthrough", "must not overwrite the input"),
    # the identity
    "identity missing": (f"{RUN} --identity {{root}}/nobody", "does not exist"),
    "identity is a file": (f"{RUN} --identity {{clip}}", "does not exist"),
    "identity without manifest": (f"{RUN} --identity {{root}}", "is not an identity pack"),
    "identity tampered": (f"{RUN} --identity {{tampered_pack}}", "face_00.png was altered"),
    "identity untrusted": (f"{RUN} --identity {{untrusted_pack}}", "this farm does not trust"),
    "identity and passthrough": (f"{SWAP} --passthrough", "exclude each other"),
    "nothing to do": (RUN, "--identity DIR"),
    "voice without identity": (f"{PASS} --voice vc", "give --identity DIR"),
    "voice without clips": (f"{RUN} --identity {{silent_pack}} --voice vc", "no voice clips"),
    "voice unknown": (f"{SWAP} --voice sing", "--voice must be"),
    "faces unknown": (f"{SWAP} --faces some", "--faces must be"),
    "faces reference without image": (f"{SWAP} --faces reference", "--reference IMG"),
    "reference missing": (f"{SWAP} --reference {{root}}/who.png", "does not exist"),
    "reference without a face": (f"{SWAP} --reference {{no_face}}", "shows no face"),
    "reference with two faces": (f"{SWAP} --reference {{two_faces}}", "shows 2 faces"),
    "reference with faces largest": (
        f"{SWAP} --faces largest --reference {{no_face}}",
        "--faces reference",
    ),
    "reference without identity": (f"{PASS} --reference {{no_face}}", "give --identity"),
    "transcript missing": (
        f"{SWAP} --voice tts --transcript {{root}}/lines.srt",
        "--transcript",
    ),
    "gpt-sovits not running": (
        f"{SWAP} --voice tts --tts-backend gpt-sovits --transcript {{root}}/lines.txt",
        "no GPT-SoVITS server",
    ),
    # settings
    "intermediate unknown": (f"{PASS} --intermediate best", "--intermediate must be"),
    "codec unknown": (f"{PASS} --codec vp9", "--codec must be"),
    "crf too high": (f"{PASS} --crf 99", "--crf must be <= 51"),
    "crf negative": (f"{PASS} --crf -1", "--crf must be >= 0"),
    "zero shard length": (f"{PASS} --max-shard-seconds 0", "--max-shard-seconds must be > 0"),
    "min above max": (
        f"{PASS} --min-shard-seconds 5 --max-shard-seconds 2",
        "--min-shard-seconds (5.0) must be below --max-shard-seconds",
    ),
    "zero workers": (f"{PASS} --workers 0", "--workers must be"),
    "negative gpus": (f"{PASS} --gpus-per-worker -1", "--gpus-per-worker must be >= 0"),
    "device unknown": (f"{PASS} --device tpu", "--device must be"),
    "cpu with gpus": (f"{PASS} --device cpu --gpus-per-worker 1", "drop --gpus-per-worker"),
    "zero shard timeout": (f"{PASS} --shard-timeout 0", "--shard-timeout must be > 0"),
    "metrics port taken": (f"{PASS} --metrics-port {{busy_port}}", "is already in use"),
    "metrics port out of range": (f"{PASS} --metrics-port 70000", "--metrics-port must be <="),
    # the cluster
    "address not listening": (
        f"{PASS} --address 127.0.0.1:1 --connect-timeout 2",
        "cannot reach the Ray cluster at 127.0.0.1:1",
    ),
    "detach without a cluster": (f"{PASS} --detach", "--detach leaves the job"),
    # other commands
    "resume without ledger": ("resume {root}/not-a-work-dir", "ledger.json"),
    "resume a file": ("resume {clip}", "is a file, not the work directory of a job"),
    "resume missing": ("resume {root}/gone", "does not exist"),
    "batch manifest missing": ("batch {root}/jobs.yaml", "does not exist"),
    "verify missing": ("verify {root}/nope.mp4", "does not exist"),
}
ENV = {"FARM_HOME is a file": (SWAP, "is a file")}
"""Cases whose FARM_HOME points at the (regular) input file."""


@pytest.mark.parametrize("case", sorted([*CASES, *ENV]))
def test_bad_input_is_one_clear_line_and_leaves_nothing(case: str, world: World) -> None:
    template, needle = CASES.get(case) or ENV[case]
    env = {"FARM_HOME": str(world.clip)} if case in ENV else {}
    fields = {name: getattr(world, name) for name in World.__dataclass_fields__}
    result = farm_cli(*shlex.split(template.format(**fields)), env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode not in (0, None), result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("farm: error: "), lines[0]
    for word in ("Traceback", "ValidationError", "Errno", "Value error"):
        assert word not in result.stderr, result.stderr
    assert needle in lines[0], lines[0]
    # The earlier good output is untouched, nothing half-written sits beside it, nothing blocks.
    assert _sha(world.good) == world.good_sha
    left = [p.name for p in world.root.iterdir() if ".partial" in p.name or "farm-work" in p.name]
    assert not left, left
