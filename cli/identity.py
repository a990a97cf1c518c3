"""``farm identity``: make identity packs (a consenting person's faces, voice and consent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail
from farm.errors import FarmError, SpecError

identity_app = typer.Typer(help="Identity packs: who may be put into a video, with their consent.")


@identity_app.callback()
def identity() -> None:
    """Identity packs: who may be put into a video, with their consent."""


@identity_app.command("create")
def create(
    face: Annotated[
        list[Path],
        typer.Option("--face", help="photo of the person (repeat for more poses)"),
    ],
    consent: Annotated[
        Path, typer.Option("--consent", help="the person's consent record (stored with its sha256)")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="new pack directory")],
    voice: Annotated[
        list[Path] | None,
        typer.Option("--voice", help="WAV reference of the person's voice (repeatable)"),
    ] = None,
    models_dir: Annotated[
        Path | None,
        typer.Option(
            "--models-dir",
            help="models directory: with ArcFace (w600k_r50) there, its embeddings are stored",
            envvar="FARM_MODELS",
        ),
    ] = None,
    rvc_model: Annotated[
        Path | None,
        typer.Option(
            "--rvc-model",
            help="the person's RVC v2 generator (.onnx, for --voice rvc); the consent must list it",
        ),
    ] = None,
    rvc_sample_rate: Annotated[
        int | None,
        typer.Option("--rvc-sample-rate", help="the rate it was trained at (else its metadata)"),
    ] = None,
) -> None:
    """Write an identity pack: aligned faces, landmarks, descriptors, voice references, consent."""
    from farm.face.identity import create_consented_identity

    try:
        # Refused before anything is written: signed, trusted, current, in scope, covering
        # exactly these photos, voice clips and voice model.
        created = create_consented_identity(
            list(face),
            consent,
            output,
            voices=list(voice or []),
            models_dir=models_dir,
            rvc_model=rvc_model,
            rvc_sample_rate=rvc_sample_rate,
        )
    except FarmError as exc:
        fail(exc)
    for warning in created.warnings:
        typer.echo(f"warning: {warning}", err=True)
    pack = created.pack
    embedded = " with ArcFace embeddings" if pack.manifest.faces[0].arcface is not None else ""
    typer.echo(
        f"identity pack {output}: {len(pack.faces)} face(s){embedded}, {len(pack.voice_refs)} "
        f"voice reference(s){', an RVC voice model' if pack.voice_models else ''}, consent "
        f"sha256 {pack.consent.sha256[:16]}…"
    )


@identity_app.command("voice-dataset")
def voice_dataset(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="PACK_OR_CLIPS...",
            help="an identity pack directory, or WAV/FLAC recordings (with --consent)",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="new dataset directory")],
    consent: Annotated[
        Path | None,
        typer.Option("--consent", help="consent record covering every clip (voice scope)"),
    ] = None,
    speaker: Annotated[
        str | None,
        typer.Option("--speaker", help="speaker name in the list (default: pack or DIR name)"),
    ] = None,
    language: Annotated[
        str, typer.Option("--language", help="spoken language: en, zh, ja, ko or yue")
    ] = "en",
    separator: Annotated[
        str, typer.Option("--separator", help="voice separation before slicing (none: off)")
    ] = "none",
    min_clip_s: Annotated[
        float, typer.Option("--min-clip-s", help="drop shorter clips (seconds)")
    ] = 1.0,
    max_clip_s: Annotated[
        float, typer.Option("--max-clip-s", help="split longer clips (seconds)")
    ] = 15.0,
    asr_model_dir: Annotated[
        Path | None,
        typer.Option(
            "--asr-model-dir",
            help="CTranslate2 Whisper model folder (default: the packaged tiny.en, English)",
        ),
    ] = None,
    asr_device: Annotated[
        str, typer.Option("--asr-device", help="cpu or cuda (first visible GPU)")
    ] = "cpu",
    compute_type: Annotated[
        str, typer.Option("--compute-type", help="CTranslate2 compute type")
    ] = "int8",
    threads: Annotated[
        int, typer.Option("--threads", help="ASR CPU threads (0: CTranslate2's default)")
    ] = 0,
    models_dir: Annotated[
        Path | None,
        typer.Option(
            "--models-dir", help="where a separation model is found (mdx)", envvar="FARM_MODELS"
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace a non-empty DIR")] = False,
) -> None:
    """GPT-SoVITS training data from consented recordings: 32 kHz clips, a .list, a summary."""
    from pydantic import ValidationError

    from farm.provenance.keys import load_trust
    from farm.voice.asr import create_segment_transcriber
    from farm.voice.dataset import (
        DatasetSettings,
        build_voice_dataset,
        check_output_dir,
        voices_from_clips,
        voices_from_pack,
    )
    from farm.voice.separate import create_separator
    from farm.voice.settings import AsrSettings, VoiceSettings

    try:
        pack = len(inputs) == 1 and inputs[0].is_dir()
        if pack and consent is not None:
            raise SpecError(
                f"{inputs[0]} is an identity pack, which carries its own consent; drop --consent"
            )
        if not pack and any(path.is_dir() for path in inputs):
            raise SpecError("give one identity pack directory, or only WAV/FLAC files")
        if not pack and consent is None:
            raise SpecError(
                "recordings need --consent FILE: a consent record (voice scope) covering each one"
            )
        try:
            settings = DatasetSettings(
                speaker=speaker or (inputs[0] if pack else output).resolve().name,
                language=language,
                separator=separator,  # type: ignore[arg-type]  # validated here
                min_clip_s=min_clip_s,
                max_clip_s=max_clip_s,
            )
            asr = AsrSettings(
                backend="auto",
                model_dir=asr_model_dir,
                device=asr_device,  # type: ignore[arg-type]  # validated here
                compute_type=compute_type,
                cpu_threads=threads,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "settings"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise SpecError(f"voice-dataset {field}: {message}") from None
        # Refused before anything is written: consent for every recording, then the output.
        trust = load_trust()
        if pack:
            voices = voices_from_pack(inputs[0], trust)
        else:
            assert consent is not None
            voices = voices_from_clips(list(inputs), consent, trust)
        check_output_dir(output, force=force)
        split = None
        if settings.separator != "none":
            voice: dict[str, object] = {"separator": settings.separator}
            if models_dir is not None and settings.separator == "mdx":
                voice["mdx"] = {"models_dir": models_dir}
            try:
                split = create_separator(VoiceSettings.model_validate(voice))
            except ValidationError as exc:
                message = exc.errors()[0]["msg"]
                raise SpecError(f"--separator {settings.separator}: {message}") from None
        transcriber = create_segment_transcriber(asr)
        assert transcriber is not None  # backend auto
        transcriber.check_language(settings.language)
        summary = build_voice_dataset(
            voices, output, settings, transcriber, separator=split, force=force
        )
    except FarmError as exc:
        fail(exc)
    dropped = ", ".join(f"{n} {reason}" for reason, n in summary.dropped_by_reason.items())
    typer.echo(
        f"voice dataset {output}: {summary.kept_clips} clip(s), {summary.kept_seconds / 60:.1f} "
        f"min kept; {summary.dropped_clips} dropped{f' ({dropped})' if dropped else ''}; list "
        f"{output / summary.list_file}"
    )
