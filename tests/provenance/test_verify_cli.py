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

from cli.provenance import (
    EXIT_ERROR,
    EXIT_LABELLED,
    EXIT_TAMPERED,
    EXIT_UNLABELLED,
    consent_app,
    keys_app,
    verify,
)
from farm.provenance.audio_watermark import embed_audio_watermark
from farm.provenance.audit import AuditError, AuditLog
from farm.provenance.consent import create_consent, write_consent
from farm.provenance.keys import PUB_FILE, Operator, init_keys, load_trust
from farm.provenance.manifest import read_manifest, sign_output
from farm.provenance.payload import watermark_payload
from farm.provenance.verify import Verdict, verify_file
from farm.provenance.video_watermark import VideoWatermarker
from tests.conftest import media_path
from tests.provenance.clips import panned_frames, write_av

JOB_ID = "job-2026-0001"
CONSENT_ID = "c0ffee"


def make_app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(keys_app, name="keys")
    app.add_typer(consent_app, name="consent")
    app.command("verify")(verify)
    return app


@pytest.fixture
def rendered(tmp_path: Path, operator: Operator) -> tuple[Path, Path]:
    """A farm output before signing (both watermarks) and after (plus manifest and tags)."""
    payload = watermark_payload(JOB_ID, operator.key_id)
    marker = VideoWatermarker(payload)
    frames = [marker.embed(f) for f in panned_frames(150, 640, 360, seed=5)]
    mix = media_path("mix/speech_over_music_mix_12s.wav")
    speech, rate = soundfile.read(str(mix), dtype="float32")
    audio = embed_audio_watermark(speech[: 6 * rate], rate, payload)
    unsigned = tmp_path / "render.mp4"
    write_av(unsigned, frames, audio, rate)
    signed = tmp_path / "out.mp4"
    sign_output(unsigned, signed, operator, JOB_ID, CONSENT_ID, {"input.mp4": "ab" * 32})
    return unsigned, signed


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
    assert len({EXIT_LABELLED, EXIT_UNLABELLED, EXIT_TAMPERED, EXIT_ERROR}) == 4


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
