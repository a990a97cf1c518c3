"""The person's RVC model travels in their identity pack, pinned by sha256 and by their consent,
and a `--voice rvc` job uses it (synthetic graphs of the real signatures stand in for weights)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from farm.face.identity import load_identity
from farm.media.ffmpeg import select_ffmpeg
from farm.models import file_entry, write_manifest
from farm.spec import JobSpec
from tests.conftest import SWIZ3N_FACE, SWIZ3N_VOICE, farm_cli, media_path, swiz3n_consent
from tests.jobs import run_local
from tests.voice import rvc_graphs as graphs


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return graphs.generator_graph(
        tmp_path_factory.mktemp("rvc") / "swiz3n_rvc.onnx", sample_rate=40000
    )


def _create(pack: Path, consent: Path, generator: Path) -> subprocess.CompletedProcess[str]:
    return farm_cli(
        "identity", "create", "--face", str(media_path(SWIZ3N_FACE)), "--voice",
        str(media_path(SWIZ3N_VOICE)), "--consent", str(consent), "--rvc-model", str(generator),
        "--rvc-sample-rate", "40000", "-o", str(pack),
    )  # fmt: skip


def test_a_voice_model_the_consent_does_not_list_is_refused(
    tmp_path: Path, session_farm_home: Path, generator: Path
) -> None:
    consent = swiz3n_consent(tmp_path / "c.yaml", session_farm_home, [media_path(SWIZ3N_VOICE)])
    result = _create(tmp_path / "pack", consent, generator)
    assert result.returncode != 0
    assert "does not cover reference voice swiz3n_rvc.onnx" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pack").exists()


def test_a_rvc_job_uses_the_generator_in_the_pack(
    tmp_path: Path, session_farm_home: Path, generator: Path
) -> None:
    voices = [media_path(SWIZ3N_VOICE), generator]
    consent = swiz3n_consent(tmp_path / "c.yaml", session_farm_home, voices)
    pack_dir = tmp_path / "pack"
    result = _create(pack_dir, consent, generator)
    assert result.returncode == 0, result.stderr
    pack = load_identity(pack_dir)
    model = pack.voice_model("rvc")
    assert (
        model is not None
        and model[1].sample_rate == 40000
        and model[1].source_name == ("swiz3n_rvc.onnx")
    )

    models = tmp_path / "models"
    models.mkdir()
    graphs.encoder_graph(models / "vec-768-layer-12.onnx")
    write_manifest(
        models,
        [file_entry(models, "contentvec", "vec-768-layer-12.onnx", kind="content-encoder",
                    licence="MIT", source="synthetic test graph")],
    )  # fmt: skip
    clip = tmp_path / "talk.mp4"
    subprocess.run(
        [select_ffmpeg({"libx264", "aac"}).path, "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10", "-i", str(media_path(SWIZ3N_VOICE)),
         "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(clip)],
        check=True,
    )  # fmt: skip
    spec = JobSpec.model_validate(
        {
            "input": clip,
            "output": tmp_path / "out.mp4",
            "face": {"identity": pack_dir},
            "voice": {"mode": "rvc", "rvc": {"models_dir": models}},
        }
    )
    report = run_local(spec)
    voice = report.voice
    assert voice is not None and voice.backend == "rvc" and voice.sentences
    for sentence in voice.sentences:
        assert sentence.stretch_ratio == 1.0 and sentence.in_band, "rvc keeps the timing"
    assert report.audio is not None and report.audio.samples == voice.total_samples
    assert spec.voice.rvc.generator is None, "so the generator can only be the pack's"
