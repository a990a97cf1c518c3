"""``farm models``: which face models this machine has, whether they are the right files, and
what they can run on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import EXIT_ERROR, fail
from farm.errors import FarmError

models_app = typer.Typer(help="Face models: present, verified, usable on this machine.")

MODELS_DIR_OPTION = typer.Option(
    "--models-dir",
    help="the models directory (default: $FARM_MODELS)",
    envvar="FARM_MODELS",
)


@models_app.callback()
def models() -> None:
    """Face models: present, verified, usable on this machine."""


def _runtime_line() -> tuple[str, tuple[str, ...]]:
    from farm.face.onnx.runtime import available_providers, check_single_runtime, installed_runtimes

    installed = installed_runtimes()
    try:
        check_single_runtime(installed)
    except FarmError as exc:
        return f"onnxruntime: {exc.one_line()}", ()
    providers = available_providers()
    names = ", ".join(p.removesuffix("ExecutionProvider") for p in providers)
    return f"onnxruntime ({', '.join(installed) or 'not installed'}): {names}", providers


@models_app.command("list")
def list_models(
    models_dir: Annotated[Path | None, MODELS_DIR_OPTION] = None,
) -> None:
    """List every face model: role, file, present and verified, where it runs, licence."""
    from rich.console import Console
    from rich.table import Table

    from farm.face.catalogue import model_statuses, neural_manifest
    from farm.models import builtin_face_manifest

    runtime, providers = _runtime_line()
    try:
        manifest = neural_manifest(models_dir)
        builtin = builtin_face_manifest()
    except FarmError as exc:
        fail(exc)
    table = Table(title=f"models in {models_dir or '(no models directory: set $FARM_MODELS)'}")
    for column in ("model", "role", "status", "runs on", "licence"):
        table.add_column(column, overflow="fold")
    for status in model_statuses(builtin, providers) + model_statuses(manifest, providers):
        shown = {
            "present": "[green]verified[/green]",
            "unpinned": "[yellow]present (no sha256)[/yellow]",
            "missing": "missing",
            "mismatch": "[red]sha256 mismatch[/red]",
        }[status.presence]
        where = ", ".join(p.removesuffix("ExecutionProvider") for p in status.providers) or "-"
        table.add_row(status.name, status.role, shown, where, status.licence)
    console = Console(width=160)
    console.print(runtime)
    console.print(table)


@models_app.command("verify")
def verify_models(
    names: Annotated[
        list[str] | None, typer.Argument(help="models to check (default: every present one)")
    ] = None,
    models_dir: Annotated[Path | None, MODELS_DIR_OPTION] = None,
) -> None:
    """Hash the model files against their pinned sha256; exit 1 if one is missing or differs.

    Without names every model whose file is present is checked, and every file the models
    directory's manifest.json lists must be present."""
    from farm.face.catalogue import model_status, neural_manifest
    from farm.models import MANIFEST_NAME, load_manifest

    _, providers = _runtime_line()
    try:
        manifest = neural_manifest(models_dir)
        listed: set[str] = set()
        if models_dir is not None and (models_dir / MANIFEST_NAME).is_file():
            listed = {entry.name for entry in load_manifest(models_dir).models}
        wanted = list(names) if names else [entry.name for entry in manifest.models]
        statuses = [model_status(manifest, name, providers) for name in wanted]
    except FarmError as exc:
        fail(exc)
    failed = 0
    for status in statuses:
        required = bool(names) or status.name in listed
        if status.presence == "missing" and not required:
            continue
        ok = status.presence in ("present", "unpinned")
        failed += not ok
        typer.echo(f"{'ok' if ok else 'FAIL'} {status.line()}", err=not ok)
    if not statuses or (all(s.presence == "missing" for s in statuses) and not failed):
        typer.echo(f"no model files in {models_dir or '(no models directory)'}")
    if failed:
        raise typer.Exit(code=EXIT_ERROR)
