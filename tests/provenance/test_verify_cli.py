"""C2PA signing, `farm verify`, the audit log and the `farm keys` / `farm consent` commands."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile
import typer
from typer.testing import CliRunner

from cli.errors import EXIT_ERROR
from cli.provenance import (
    EXIT_LABELLED,
    EXIT_NOT_MEDIA,
    EXIT_TAMPERED,
    EXIT_UNLABELLED,
    consent_app,
    keys_app,
    verify,
)
from farm.provenance.audio_watermark import embed_audio_watermark
from farm.provenance.audit import AuditError, AuditLog
from farm.provenance.consent import create_consent, write_consent
from farm.provenance.keys import PUB_FILE, Operator, init_keys, load_operator, load_trust
from farm.provenance.manifest import read_manifest, sign_output
from farm.provenance.payload import watermark_payload
from farm.provenance.verify import Verdict, verify_file
from farm.provenance.video_watermark import VideoWatermarker
from tests.conftest import farm_cli, media_path
from tests.provenance.clips import ffmpeg, panned_frames, write_av

JOB_ID = "job-2026-0001"
CONSENT_ID = "c0ffee"


def make_app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(keys_app, name="keys")
    app.add_typer(consent_app, name="consent")
    app.command("verify")(verify)
    return app


def render(root: Path, operator: Operator) -> tuple[Path, Path]:
    """A farm output before signing (both watermarks) and after (plus manifest and tags)."""
    payload = watermark_payload(JOB_ID, operator.key_id)
    marker = VideoWatermarker(payload)
    frames = [marker.embed(f) for f in panned_frames(150, 640, 360, seed=5)]
    mix = media_path("mix/speech_over_music_mix_12s.wav")
    speech, rate = soundfile.read(str(mix), dtype="float32")
    audio = embed_audio_watermark(speech[: 6 * rate], rate, payload)
    unsigned = root / "render.mp4"
    write_av(unsigned, frames, audio, rate)
    signed = root / "out.mp4"
    sign_output(unsigned, signed, operator, JOB_ID, CONSENT_ID, {"input.mp4": "ab" * 32})
    return unsigned, signed


def flip_one_byte(source: Path, target: Path, *, at: int | None = None) -> Path:
    data = bytearray(source.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def strip_metadata(source: Path, target: Path) -> Path:
    """Remux with every container tag dropped: the C2PA manifest box goes with them."""
    ffmpeg("-i", str(source), "-map", "0", "-map_metadata", "-1", "-c", "copy", str(target))
    return target


@pytest.fixture
def rendered(tmp_path: Path, operator: Operator) -> tuple[Path, Path]:
    return render(tmp_path, operator)


def test_signed_output_is_labelled_with_everything(
    rendered: tuple[Path, Path], operator: Operator
) -> None:
    _, signed = rendered
    report = verify_file(signed, operator.trust)
    assert report.verdict is Verdict.LABELLED
    assert report.manifest.valid and report.manifest.trusted and not report.manifest.tampered
    assert report.job_id == JOB_ID and report.manifest.consent_id == CONSENT_ID
    assert report.manifest.input_sha256 == {"input.mp4": "ab" * 32}
    payload = watermark_payload(JOB_ID, operator.key_id)
    assert report.video is not None and report.video.found and report.video.payload == payload
    assert report.audio is not None and report.audio.found and report.audio.payload == payload
    assert report.video.bit_accuracy == 1.0 and report.audio.bit_accuracy == 1.0


def test_container_tags_label_the_file(rendered: tuple[Path, Path]) -> None:
    import av

    with av.open(str(rendered[1])) as container:
        tags = dict(container.metadata)
        kinds = sorted(s.type for s in container.streams)
    assert tags["syncfarm_job_id"] == JOB_ID
    assert tags["ai_generated"] == "true"
    assert "AI-generated" in tags["comment"]
    assert kinds == ["audio", "video"]


def test_untrusted_signer_is_valid_but_not_trusted(
    rendered: tuple[Path, Path], tmp_path: Path
) -> None:
    stranger = init_keys(tmp_path / "stranger")
    reading = read_manifest(rendered[1], stranger.trust)
    assert reading.present and reading.valid and not reading.trusted and not reading.tampered


def test_one_flipped_byte_is_reported_as_tampering(
    rendered: tuple[Path, Path], operator: Operator, tmp_path: Path
) -> None:
    data = bytearray(rendered[1].read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    report = verify_file(tampered, operator.trust)
    assert report.verdict is Verdict.TAMPERED
    assert report.manifest.tampered and not report.manifest.valid
    assert any("mismatch" in code for code in report.manifest.failures)


def test_unsigned_watermarked_render_is_still_labelled(
    rendered: tuple[Path, Path], operator: Operator
) -> None:
    report = verify_file(rendered[0], operator.trust)
    assert not report.manifest.present
    assert report.verdict is Verdict.LABELLED
    assert report.video is not None and report.video.found


def test_plain_media_is_unlabelled(operator: Operator) -> None:
    report = verify_file(media_path("video/grid_jumpcut_same_speaker_6s.mp4"), operator.trust)
    assert report.verdict is Verdict.UNLABELLED
    assert not report.manifest.present
    assert report.video is not None and not report.video.found
    assert report.audio is not None and not report.audio.found


def test_cli_verify_exit_codes_and_json(
    rendered: tuple[Path, Path], operator: Operator, tmp_path: Path
) -> None:
    runner = CliRunner()
    app = make_app()
    labelled = runner.invoke(app, ["verify", str(rendered[1]), "--json"])
    assert labelled.exit_code == EXIT_LABELLED, labelled.output
    data = json.loads(labelled.stdout)
    assert data["verdict"] == "labelled" and data["job_id"] == JOB_ID
    assert data["manifest"]["trusted"] is True
    assert data["video_watermark"]["found"] and data["audio_watermark"]["found"]
    plain = media_path("video/grid_jumpcut_same_speaker_6s.mp4")
    assert runner.invoke(app, ["verify", str(plain)]).exit_code == EXIT_UNLABELLED
    data_bytes = bytearray(rendered[1].read_bytes())
    data_bytes[len(data_bytes) // 3] ^= 0x80
    tampered = tmp_path / "t.mp4"
    tampered.write_bytes(bytes(data_bytes))
    result = runner.invoke(app, ["verify", str(tampered)])
    assert result.exit_code == EXIT_TAMPERED, result.output
    assert "tampered" in result.stdout
    missing = runner.invoke(app, ["verify", str(tmp_path / "nope.mp4")])
    assert missing.exit_code == EXIT_ERROR
    assert missing.stderr.strip() == f"farm: error: {tmp_path / 'nope.mp4'} does not exist"
    codes = {EXIT_LABELLED, EXIT_UNLABELLED, EXIT_TAMPERED, EXIT_NOT_MEDIA, EXIT_ERROR}
    assert len(codes) == 5


def test_cli_keys_and_consent_round_trip(farm_home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    app = make_app()
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    assert (farm_home / PUB_FILE).is_file()
    again = runner.invoke(app, ["keys", "init"])
    assert again.exit_code == EXIT_ERROR and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    face = media_path("faces/grid_talker_swiz3n_frontal.png")
    voice = media_path("audio/grid_swiz3n.wav")
    record = tmp_path / "consent.yaml"
    created = runner.invoke(
        app,
        [
            "consent", "create", "--subject", "Alex Doe", "--scope", "face,voice",
            "--purpose", "trailer", "--expires", "2099-01-01", "--face", str(face),
            "--voice", str(voice), "-o", str(record),
        ],
    )
    assert created.exit_code == 0, created.output
    ok = runner.invoke(app, ["consent", "verify", str(record), "--scope", "face,voice"])
    assert ok.exit_code == 0 and "valid" in ok.stdout
    # Another farm's record is refused until its key is trusted.
    other_home = tmp_path / "other"
    other = init_keys(other_home)
    foreign = tmp_path / "foreign.yaml"
    write_consent(
        create_consent(
            subject="B", scope=["face"], purpose="p", expires=dt.date(2099, 1, 1),
            face_files=[face], operator=other,
        ),
        foreign,
    )
    refused = runner.invoke(app, ["consent", "verify", str(foreign)])
    assert refused.exit_code == EXIT_ERROR and "untrusted key" in refused.stderr
    trusted = runner.invoke(app, ["keys", "trust", str(other_home / PUB_FILE), "--name", "B"])
    assert trusted.exit_code == 0, trusted.output
    assert other.key_id in {k.key_id for k in load_trust().keys}
    assert runner.invoke(app, ["consent", "verify", str(foreign)]).exit_code == 0


def test_audit_log_is_append_only_and_chained(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        first = log.append(
            job_id="j1", identity="alex", consent_id="c1", operator_key_id="k",
            input_sha256={"in.mp4": "1" * 64}, output_sha256={"out.mp4": "2" * 64},
        )
        second = log.append(
            job_id="j2", identity="alex", consent_id="c1", operator_key_id="k",
            input_sha256={}, output_sha256={"out.mp4": "3" * 64},
        )
        assert second.prev_hash == first.entry_hash
        assert [e.job_id for e in log.entries()] == ["j1", "j2"]
        log.verify_chain()
    db = sqlite3.connect(str(path))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE jobs SET identity = 'mallory' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM jobs WHERE seq = 1")
    # Someone bypasses the triggers: the hash chain still shows it.
    db.execute("DROP TRIGGER jobs_no_update")
    db.execute("UPDATE jobs SET identity = 'mallory' WHERE seq = 1")
    db.commit()
    db.close()
    with AuditLog(path) as log, pytest.raises(AuditError, match="broken at entry 1"):
        log.verify_chain()


def test_silent_video_frames_do_not_break_verify(tmp_path: Path, operator: Operator) -> None:
    frames = [np.zeros((360, 640, 3), np.uint8)] * 30
    audio = np.zeros(48_000, np.float32)
    path = tmp_path / "black.mp4"
    write_av(path, frames, audio, 48_000)
    assert verify_file(path, operator.trust).verdict is Verdict.UNLABELLED


# -- every case `farm verify` tells apart, through the real command line -----------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory, session_farm_home: Path) -> dict[str, Path]:
    """One file per verdict, signed with the session operator (the `farm` subprocesses' key)."""
    root = tmp_path_factory.mktemp("verify-samples")
    unsigned, signed = render(root, load_operator(session_farm_home))
    plain = media_path("video/grid_jumpcut_same_speaker_6s.mp4")
    folder = root / "a folder"
    folder.mkdir()
    (root / "notes.txt").write_text("these are notes, not frames\n" * 20)
    (root / "notes.mp4").write_text("these are notes, not frames\n" * 20)
    (root / "notes.nfo").write_text("FFmpeg draws .nfo files as ANSI art\n" * 20)
    (root / "config.yaml").write_text("video:\n  crf: 18\n  preset: veryfast\n")
    (root / "empty.mp4").write_bytes(b"")
    noise = np.random.default_rng(0).bytes(64_000)
    (root / "random.bin").write_bytes(noise)  # FFmpeg opens it as "binary text" art
    (root / "random.mp4").write_bytes(noise)
    cut = unsigned.read_bytes()
    (root / "cut.mp4").write_bytes(cut[: len(cut) // 3])
    signed_bytes = signed.read_bytes()
    (root / "signed-cut.mp4").write_bytes(signed_bytes[: len(signed_bytes) // 3])
    return {
        "labelled": signed,
        "watermarked, unsigned": unsigned,
        "tampered": flip_one_byte(signed, root / "tampered.mp4"),
        "signed, cut short": root / "signed-cut.mp4",
        "unlabelled": plain,
        "labelled, metadata stripped": strip_metadata(signed, root / "stripped.mp4"),
        "unlabelled, metadata stripped": strip_metadata(plain, root / "plain-stripped.mp4"),
        "text": root / "notes.txt",
        "text named .mp4": root / "notes.mp4",
        "text FFmpeg draws": root / "notes.nfo",
        "yaml": root / "config.yaml",
        "empty": root / "empty.mp4",
        "random bytes": root / "random.bin",
        "random bytes named .mp4": root / "random.mp4",
        "directory": folder,
        "unsigned, cut short": root / "cut.mp4",
        "missing": root / "nope.mp4",
    }


VERIFY_CASES = {
    # case: (exit code, verdict line, words of the explanation; {} is the path)
    "labelled": (EXIT_LABELLED, "labelled", "signed by a trusted operator verifies"),
    "watermarked, unsigned": (EXIT_LABELLED, "labelled", "video and audio watermarks were found"),
    "tampered": (EXIT_TAMPERED, "tampered", "C2PA manifest no longer verifies"),
    "signed, cut short": (EXIT_TAMPERED, "tampered", "C2PA manifest no longer verifies"),
    "unlabelled": (EXIT_UNLABELLED, "unlabelled", "no C2PA manifest and no SyncFarm watermark"),
    "labelled, metadata stripped": (
        EXIT_LABELLED, "labelled", "no C2PA manifest, but the SyncFarm video and audio watermarks"
    ),
    "unlabelled, metadata stripped": (EXIT_UNLABELLED, "unlabelled", "no C2PA manifest and no"),
    "text": (EXIT_NOT_MEDIA, "not media", "{} is not a video or audio file"),
    "text named .mp4": (EXIT_NOT_MEDIA, "not media", "{} is not a video or audio file"),
    "text FFmpeg draws": (EXIT_NOT_MEDIA, "not media", "{} is not a video or audio file"),
    "yaml": (EXIT_NOT_MEDIA, "not media", "{} is not a video or audio file"),
    "empty": (EXIT_NOT_MEDIA, "not media", "{} is empty, not a video or audio file"),
    "random bytes": (EXIT_NOT_MEDIA, "not media", "{} is not a video or audio file"),
    "random bytes named .mp4": (EXIT_NOT_MEDIA, "not media", "{} is not a video or audio file"),
    "directory": (EXIT_NOT_MEDIA, "not media", "{} is a directory, not a media file"),
}
VERIFY_ERRORS = {
    "missing": "{} does not exist",
    "unsigned, cut short": "{} looks like an MP4 but FFmpeg cannot read it: damaged or",
}


@pytest.mark.parametrize("case", list(VERIFY_CASES))
def test_farm_verify_tells_the_cases_apart(samples: dict[str, Path], case: str) -> None:
    code, verdict, explanation = VERIFY_CASES[case]
    path = samples[case]
    result = farm_cli("verify", str(path))
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: {verdict}"
    assert explanation.format(path) in lines[1], lines[1]
    assert "Traceback" not in result.stderr and "error" not in result.stderr, result.stderr
    if verdict == "not media":
        assert len(lines) == 2, result.stdout  # no watermark or manifest details to report


@pytest.mark.parametrize("case", list(VERIFY_ERRORS))
def test_farm_verify_errors_are_one_line(samples: dict[str, Path], case: str) -> None:
    path = samples[case]
    result = farm_cli("verify", str(path))
    assert result.returncode == EXIT_ERROR
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"farm: error: {VERIFY_ERRORS[case].format(path)}"), lines[0]


def test_verify_json_names_not_media(samples: dict[str, Path]) -> None:
    result = farm_cli("verify", str(samples["yaml"]), "--json")
    assert result.returncode == EXIT_NOT_MEDIA
    data = json.loads(result.stdout)
    assert data["verdict"] == "not_media"
    assert data["explanation"] == f"{samples['yaml']} is not a video or audio file"
    assert data["video_watermark"] is None and data["audio_watermark"] is None


def test_stripped_metadata_drops_the_manifest_not_the_watermarks(
    samples: dict[str, Path], session_farm_home: Path
) -> None:
    """A remux without metadata loses the C2PA box; the watermarks in the frames and the audio
    survive the stream copy, so the file is still (truthfully) labelled, not tampered."""
    trust = load_trust(session_farm_home, env={})
    operator = load_operator(session_farm_home)
    stripped = verify_file(samples["labelled, metadata stripped"], trust)
    assert not stripped.manifest.present and not stripped.manifest.tampered
    payload = watermark_payload(JOB_ID, operator.key_id)
    assert stripped.video is not None and stripped.video.found
    assert stripped.audio is not None and stripped.audio.found
    assert stripped.video.payload == payload and stripped.audio.payload == payload
    assert stripped.verdict is Verdict.LABELLED and stripped.job_id is None
    plain = verify_file(samples["unlabelled, metadata stripped"], trust)
    assert plain.verdict is Verdict.UNLABELLED and not plain.manifest.present


def test_not_media_mentioning_c2pa_is_not_tampered(tmp_path: Path, operator: Operator) -> None:
    """Text about C2PA (its box names and label) holds no manifest store: not media."""
    notes = tmp_path / "c2pa-notes.txt"
    notes.write_bytes(b"a C2PA store is a jumb box labelled c2pa in a uuid box\n" * 10)
    report = verify_file(notes, operator.trust)
    assert report.verdict is Verdict.NOT_MEDIA and not report.manifest.present


def test_a_damaged_manifest_box_is_still_tampering(
    rendered: tuple[Path, Path], operator: Operator, tmp_path: Path
) -> None:
    """One flipped byte in the manifest store's header: C2PA cannot parse it, but it was there."""
    signed = rendered[1]
    data = signed.read_bytes()
    at = data.index(b"jumd") + 4  # inside the store's description box
    damaged = flip_one_byte(signed, tmp_path / "damaged.mp4", at=at)
    report = verify_file(damaged, operator.trust)
    assert report.verdict is Verdict.TAMPERED, report.manifest
    assert "no longer parses" in report.explanation
