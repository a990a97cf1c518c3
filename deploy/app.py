"""The HTTP API: a FastAPI application over `deploy.service.FarmService`.

Routes only parse, stage uploads and stream; every rule lives in the service. Served by Ray
Serve (`deploy.serve`), or by any ASGI server for a single machine. ``python -m deploy.app``
prints the OpenAPI schema that is checked in as ``deploy/openapi.json``.
"""

import contextlib
import hashlib
import json
import logging
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deploy.errors import ApiRefused, TooManyRequests
from deploy.launcher import ClusterUnavailable
from deploy.service import (
    Caller,
    FarmService,
    IdentityView,
    JobPage,
    JobRequest,
    JobView,
    Reconciler,
    identity_view,
    job_view,
    request_hash,
)
from deploy.uploads import BodyLimitMiddleware, MediaKind, check_upload, safe_filename
from farm.errors import (
    ConsentError,
    FarmError,
    MediaError,
    SpecError,
    StorageError,
    record_unexpected,
)
from farm.pipeline.progress import TERMINAL_EVENTS, JobState

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
MAX_PAGE = 200
EVENT_POLL_S = 10.0
COPY_CHUNK = 1 << 20


class ErrorBody(BaseModel):
    detail: str


class ReadyBody(BaseModel):
    ready: bool
    checks: dict[str, str]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "the body is not well-formed (multipart or JSON that cannot be parsed)"),
        (401, "missing or invalid bearer token"),
        (403, "the token lacks the scope, or the input is outside the allowed roots"),
        (404, "no such record for this token"),
        (409, "conflicts with a stored record"),
        (413, "request body over the upload limit"),
        (415, "an upload is not what its part must be"),
        (422, "a setting or part is invalid (the message names it)"),
        (429, "rate limit or active-job quota reached (see Retry-After)"),
        (503, "the cluster, the records or the storage do not answer"),
    )
}


def _status_of(exc: FarmError) -> int:
    if isinstance(exc, ApiRefused):
        return exc.status
    if isinstance(exc, StorageError | ClusterUnavailable):
        return 503
    if isinstance(exc, SpecError | MediaError | ConsentError):
        return 422
    return 500


def known_query_parameters(request: Request) -> None:
    """Refuse a query parameter the route does not take (422): a typo such as ``?stat=``
    would otherwise be ignored and answer as if no filter were given."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        known |= {p.alias for p in dependant.query_params}
        pending += dependant.dependencies
    for name in request.query_params:
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise ApiRefused(
                f"query parameter {name[:40]!r} is unknown here (this route takes: {takes})",
                status=422,
            )


def _stage_upload(
    upload: UploadFile, folder: Path, *, kind: MediaKind, field: str, default: str
) -> tuple[Path, str]:
    """Copy one upload into the request's staging folder, sniff it; return (path, sha256)."""
    name = safe_filename(upload.filename, default=default)
    path = folder / name
    stem, suffix, n = path.stem, path.suffix, 1
    while path.exists():  # two parts with one name keep both
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    digest = hashlib.sha256()
    with path.open("xb") as out:
        while chunk := upload.file.read(COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    check_upload(path, kind, field=field, filename=name)
    return path, digest.hexdigest()


@contextlib.contextmanager
def _staging(service: FarmService) -> Iterator[Path]:
    """A folder for one request's uploads, removed unless the request moved it away."""
    folder = service.settings.staging_dir / f"req-{secrets.token_hex(8)}"
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _parse_settings(text: str) -> JobRequest:
    try:
        return JobRequest.model_validate_json(text or "{}")
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        raise ApiRefused(
            f"settings.{where}: {error['msg']}"
            if where != "settings"
            else f"settings: {error['msg']} (a JSON object of the job's settings)",
            status=422,
        ) from None


def create_app(service: FarmService, *, reconcile: bool = True) -> FastAPI:
    """The API over ``service``; with ``reconcile``, a `Reconciler` runs while it serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reconciler = Reconciler(service) if reconcile else None
        if reconciler is not None:
            reconciler.start()
        try:
            yield
        finally:
            if reconciler is not None:
                reconciler.stop()

    app = FastAPI(
        title="SyncFarm API",
        version=API_VERSION,
        description="Consented audio-video doubles: identities, jobs, their outputs.",
        lifespan=lifespan,
        dependencies=[Depends(known_query_parameters)],
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=service.settings.max_upload_bytes)
    if service.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(service.settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        )
    bearer = HTTPBearer(auto_error=False, description="`farm tokens create` prints one")
    generated_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = multipart_parts_not_null(generated_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path only; the
            # path's GET and DELETE are separate routes here.
            headers["Allow"] = ", ".join(
                sorted(
                    method
                    for route in app.routes
                    if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
                    for method in route.methods or ()
                )
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(FarmError)
    async def farm_error(request: Request, exc: FarmError) -> JSONResponse:
        status = _status_of(exc)
        if status == 500:
            from farm.provenance.keys import farm_home

            exc = record_unexpected(exc, farm_home() / "logs", what=str(request.url.path))
        headers = {}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(max(1, int(exc.retry_after_s + 0.999)))
        elif status == 503:
            headers["Retry-After"] = "5"
        return JSONResponse({"detail": exc.one_line()}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in error.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {error.get('msg')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        from farm.provenance.keys import farm_home

        error = record_unexpected(exc, farm_home() / "logs", what=str(request.url.path))
        return JSONResponse({"detail": error.one_line()}, status_code=500)

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
        return service.authenticate(header)

    Authed = Annotated[Caller, Depends(caller)]

    # -- health -----------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["health"], response_model=ReadyBody, responses={503: {"model": ReadyBody}}
    )
    def readyz() -> JSONResponse:
        """Readiness: the database, the cluster and the storage answer."""
        checks = service.ready()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            ReadyBody(ready=ready, checks=checks).model_dump(), status_code=200 if ready else 503
        )

    # -- identities -------------------------------------------------------------------------

    @app.post(
        "/v1/identities",
        status_code=201,
        response_model=IdentityView,
        tags=["identities"],
        responses=ERRORS,
    )
    def create_identity(
        who: Authed,
        faces: Annotated[list[UploadFile], File(description="photos of the person", min_length=1)],
        consent: Annotated[UploadFile, File(description="the signed consent record (YAML)")],
        voices: Annotated[
            list[UploadFile] | None, File(description="WAV references of the voice")
        ] = None,
    ) -> IdentityView:
        """An identity pack from photos, voice clips and the person's signed consent."""
        service.require(who, "submit")
        with _staging(service) as folder:
            (folder / "faces").mkdir()
            (folder / "voices").mkdir()
            face_paths = [
                _stage_upload(f, folder / "faces", kind="image", field="faces", default="face.png")[
                    0
                ]
                for f in faces
            ]
            voice_paths = [
                _stage_upload(
                    v, folder / "voices", kind="audio", field="voices", default="voice.wav"
                )[0]
                for v in voices or []
            ]
            consent_path, _ = _stage_upload(
                consent, folder, kind="consent", field="consent", default="consent.yaml"
            )
            record = service.create_identity(who, face_paths, voice_paths, consent_path)
        return identity_view(record)

    @app.get(
        "/v1/identities/{identity_id}",
        response_model=IdentityView,
        tags=["identities"],
        responses=ERRORS,
    )
    def get_identity(who: Authed, identity_id: str) -> IdentityView:
        return identity_view(service.identity(who, identity_id))

    @app.delete(
        "/v1/identities/{identity_id}", status_code=204, tags=["identities"], responses=ERRORS
    )
    def delete_identity(who: Authed, identity_id: str) -> None:
        """Delete the pack; refused (409) while jobs that use it are active."""
        service.delete_identity(who, identity_id)

    # -- jobs -------------------------------------------------------------------------------

    @app.post(
        "/v1/jobs",
        status_code=202,
        response_model=JobView,
        tags=["jobs"],
        responses={
            **ERRORS,
            200: {"model": JobView, "description": "the job this Idempotency-Key made before"},
        },
    )
    def submit_job(
        who: Authed,
        settings: Annotated[
            str,
            Form(description="JSON object of the job's settings (JobRequest)"),
        ] = "{}",
        video: Annotated[UploadFile | None, File(description="the source video")] = None,
        transcript: Annotated[
            UploadFile | None, File(description="SRT/VTT/ASS subtitles or text of the speech")
        ] = None,
        reference: Annotated[
            UploadFile | None, File(description="image of the one person to swap")
        ] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> JSONResponse:
        """Submit a job (202): the video as an upload or as an allow-listed input_uri."""
        service.require(who, "submit")
        request = _parse_settings(settings)
        with _staging(service) as folder:
            parts = [("settings", hashlib.sha256(settings.encode()).hexdigest())]
            staged: dict[str, Path | None] = {"video": None, "transcript": None, "reference": None}
            if video is not None:
                staged["video"], digest = _stage_upload(
                    video, folder, kind="video", field="video", default="input.mp4"
                )
                parts.append(("video", digest))
            if transcript is not None:
                staged["transcript"], digest = _stage_text(transcript, folder, "transcript.srt")
                parts.append(("transcript", digest))
            if reference is not None:
                staged["reference"], digest = _stage_upload(
                    reference, folder, kind="image", field="reference", default="reference.png"
                )
                parts.append(("reference", digest))
            record, created = service.submit_job(
                who,
                request,
                staged=folder,
                upload=staged["video"],
                transcript=staged["transcript"],
                reference=staged["reference"],
                idempotency_key=idempotency_key,
                request_sha256=request_hash(parts),
            )
        view = job_view(record)
        return JSONResponse(
            view.model_dump(mode="json"),
            status_code=202 if created else 200,
            headers={"Location": view.urls.job},
        )

    @app.get("/v1/jobs", response_model=JobPage, tags=["jobs"], responses=ERRORS)
    def list_jobs(
        who: Authed,
        state: Annotated[JobState | None, Query(description="only jobs in this state")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        after: Annotated[str | None, Query(max_length=200)] = None,
    ) -> JobPage:
        """The token's jobs, newest first (admin: everyone's)."""
        return service.list_jobs(who, state=state, limit=limit, after=after)

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=ERRORS)
    def get_job(who: Authed, job_id: str) -> JobView:
        """State and progress per stage: frames and shards done, sentences done, ETA."""
        return service.live_view(service.job(who, job_id))

    @app.delete(
        "/v1/jobs/{job_id}",
        response_model=JobView,
        status_code=202,
        tags=["jobs"],
        responses=ERRORS,
    )
    def cancel_job(who: Authed, job_id: str) -> JobView:
        """Cancel the job (finished shards stay in its work dir); a finished one is unchanged."""
        return job_view(service.cancel_job(who, job_id))

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    )
    def job_events(
        who: Authed,
        job_id: str,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """Server-sent events of the job's progress until it ends."""
        record = service.job(who, job_id)
        after = 0
        if last_event_id and last_event_id.partition(":")[0] == record.run_id:
            with contextlib.suppress(ValueError):
                after = max(0, int(last_event_id.partition(":")[2]))
        return StreamingResponse(
            _event_stream(service, record.job_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _file(who: Caller, job_id: str, which: str, media_type: str) -> FileResponse:
        path = service.job_file(who, job_id, which)
        return FileResponse(
            path,
            media_type=media_type,
            filename=f"{job_id}-{which}" if which != "output" else f"{job_id}{path.suffix}",
        )

    @app.get(
        "/v1/jobs/{job_id}/output",
        tags=["jobs"],
        responses={**ERRORS, 200: {"content": {"video/mp4": {}}}, 206: {"description": "a range"}},
    )
    def job_output(who: Authed, job_id: str) -> FileResponse:
        """The labelled, signed output (HTTP Range supported, so a player can seek)."""
        return _file(who, job_id, "output", "video/mp4")

    @app.get(
        "/v1/jobs/{job_id}/report.json",
        tags=["jobs"],
        responses={**ERRORS, 200: {"content": {"application/json": {}}}},
    )
    def job_report_json(who: Authed, job_id: str) -> FileResponse:
        return _file(who, job_id, "report.json", "application/json")

    @app.get(
        "/v1/jobs/{job_id}/report.html",
        tags=["jobs"],
        responses={**ERRORS, 200: {"content": {"text/html": {}}}},
    )
    def job_report_html(who: Authed, job_id: str) -> FileResponse:
        return _file(who, job_id, "report.html", "text/html")

    @app.get(
        "/v1/jobs/{job_id}/transcript.srt",
        tags=["jobs"],
        responses={**ERRORS, 200: {"content": {"application/x-subrip": {}}}},
    )
    def job_transcript(who: Authed, job_id: str) -> FileResponse:
        return _file(who, job_id, "transcript.srt", "application/x-subrip")

    return app


def _stage_text(upload: UploadFile, folder: Path, default: str) -> tuple[Path, str]:
    """A transcript: UTF-8 text under 1 MB (its format is parsed when the job plans)."""
    name = safe_filename(upload.filename, default=default)
    data = upload.file.read((1 << 20) + 1)
    if len(data) > 1 << 20 or b"\0" in data or not data.strip():
        raise ApiRefused(f"transcript: {name} is not a subtitle or text file", status=415)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiRefused(f"transcript: {name} is not UTF-8 text", status=415) from None
    path = folder / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _event_stream(service: FarmService, job_id: str, after: int) -> Iterator[str]:
    """The job actor's events as SSE, then the final record; survives a resume (new run)."""
    run_id: str | None = None
    gone_since: float | None = None
    while True:
        record = service.store.get_job(job_id)
        if record is None:
            return
        if record.run_id != run_id:
            if run_id is not None:
                after = 0  # a resumed job's new run numbers its events afresh
            run_id = record.run_id
        if record.state not in ("queued", "planning", "running", "reducing") or run_id is None:
            # A late watcher gets what the job actor still holds, then the final record.
            with contextlib.suppress(ClusterUnavailable):
                for event in (
                    service.launcher.events(run_id, after, 0.0) if run_id else None
                ) or []:
                    yield _sse(str(event.get("event")), event, f"{run_id}:{event.get('seq')}")
            yield _sse("job", job_view(record).model_dump(mode="json"))
            return
        try:
            events = service.launcher.events(run_id, after, EVENT_POLL_S)
        except ClusterUnavailable:
            events = []
        if events is None:
            # The actor is gone: the reconciler records the end (or resumes); wait for it.
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > 120:
                yield _sse("job", service.live_view(record).model_dump(mode="json"))
                return
            yield ": waiting for the job record\n\n"
            time.sleep(1.0)
            continue
        gone_since = None
        if not events:
            yield ": keep-alive\n\n"
        for event in events:
            after = max(after, int(event.get("seq", after)))
            yield _sse(str(event.get("event")), event, f"{run_id}:{event.get('seq')}")
        if any(e.get("event") in TERMINAL_EVENTS for e in events):
            # The record catches up within a reconcile interval; send it as the last event.
            deadline = time.monotonic() + 10 * service.settings.reconcile_interval_s
            while time.monotonic() < deadline:
                record = service.store.get_job(job_id) or record
                if record.state not in ("queued", "planning", "running", "reducing"):
                    break
                time.sleep(service.settings.reconcile_interval_s / 2)
            yield _sse("job", service.live_view(record).model_dump(mode="json"))
            return


def multipart_parts_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Optional file parts without FastAPI's ``anyOf [file, null]``: a multipart body has no
    null, an optional part is simply left out (a client sending the text "null" is wrong)."""
    bodies = schema.get("components", {}).get("schemas", {})
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            content = operation.get("requestBody", {}).get("content", {})
            ref = content.get("multipart/form-data", {}).get("schema", {}).get("$ref", "")
            body = bodies.get(ref.rpartition("/")[2], {})
            for name, part in body.get("properties", {}).items():
                kinds = part.get("anyOf", [])
                others = [k for k in kinds if k != {"type": "null"}]
                if len(others) == 1 and len(kinds) == 2:
                    rest = {k: v for k, v in part.items() if k != "anyOf"}
                    body["properties"][name] = {**others[0], **rest}
    return schema


def openapi_schema() -> dict[str, Any]:
    """The schema of the routes (no store, launcher or settings are touched)."""
    app = create_app(_SchemaOnly(), reconcile=False)  # type: ignore[arg-type]
    return app.openapi()


class _SchemaOnly:
    """Enough of a service for FastAPI to build the schema."""

    class settings:
        max_upload_bytes = 1
        cors_origins = ()


def main() -> None:
    print(json.dumps(openapi_schema(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
