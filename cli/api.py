"""`farm serve` (the HTTP API on Ray Serve) and `farm tokens` (its bearer tokens)."""

from __future__ import annotations

import json
import threading
from typing import Annotated

import typer

from farm.errors import SpecError

tokens_app = typer.Typer(help="Bearer tokens of the HTTP API (stored hashed).")


def _store():  # type: ignore[no-untyped-def]
    from deploy.db.store import RecordStore
    from deploy.settings import load_settings

    return RecordStore(load_settings().records_url)


@tokens_app.callback()
def tokens() -> None:
    """Bearer tokens of the HTTP API (stored hashed)."""


@tokens_app.command("create")
def create_token(
    name: Annotated[str, typer.Option("--name", help="who or what uses it")],
    scopes: Annotated[
        str, typer.Option("--scopes", help="comma-separated: submit, read, admin")
    ] = "submit,read",
) -> None:
    """Create a token; its text and webhook secret are printed once and never stored."""
    from deploy.auth import create_token as new_token
    from deploy.auth import load_pepper
    from farm.provenance.keys import farm_home

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    made = new_token(name, wanted, load_pepper(farm_home()))
    store = _store()
    try:
        store.add_token(made.record)
    finally:
        store.close()
    typer.echo(made.token)
    typer.echo(
        f"token {made.record.token_id} ({name}: {', '.join(made.record.scopes)}); webhook "
        f"signing secret {made.webhook_secret}; keep both: neither is shown again",
        err=True,
    )


@tokens_app.command("list")
def list_tokens(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The tokens (ids, names, scopes; never secrets)."""
    store = _store()
    try:
        records = store.list_tokens()
    finally:
        store.close()
    if as_json:
        typer.echo(
            json.dumps(
                [r.model_dump(mode="json", exclude={"secret_hash"}) for r in records], indent=2
            )
        )
        return
    for r in records:
        revoked = f" revoked {r.revoked_at:%Y-%m-%d}" if r.revoked_at else ""
        typer.echo(f"{r.token_id}  {r.name}  {','.join(r.scopes)}{revoked}")


@tokens_app.command("revoke")
def revoke_token(token_id: Annotated[str, typer.Argument(help="the token's id")]) -> None:
    """Revoke a token: every request with it is refused from now on."""
    store = _store()
    try:
        if not store.revoke_token(token_id):
            raise SpecError(f"no token {token_id}; `farm tokens list` shows them")
    finally:
        store.close()
    typer.echo(f"revoked {token_id}", err=True)


def serve_api(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    address: Annotated[
        str | None, typer.Option(help="deploy on this Ray cluster instead of an embedded one")
    ] = None,
) -> None:
    """Run the HTTP API on Ray Serve until Ctrl-C (settings: the FARM_API_* variables)."""
    from deploy.serve import serve_locally
    from deploy.settings import load_settings

    if not 1 <= port <= 65535:
        raise SpecError(f"--port {port}: use 1-65535")
    settings = load_settings()  # bad settings fail before Ray starts
    ready = threading.Event()

    def announce() -> None:
        ready.wait()
        typer.echo(
            f"SyncFarm API on http://{host}:{port} (docs at /docs; records "
            f"{settings.records_url.split('@')[-1]})",
            err=True,
        )

    threading.Thread(target=announce, daemon=True).start()
    serve_locally(host=host, port=port, address=address, args={}, ready=ready)
