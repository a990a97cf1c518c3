"""What the HTTP API does, without HTTP: tokens, identities, jobs and their records.

The FastAPI routes (`deploy.app`) parse requests and call this; the Serve replica runs
`Reconciler` beside them. Nothing here runs a pipeline step: jobs go to a `JobLauncher`.
Every record lives in the `RecordStore`, so any replica (or a restarted one) answers the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deploy.auth import RateLimiter, parse_bearer, secret_matches, webhook_secret
from deploy.db.store import RecordStore
from deploy.errors import ApiRefused, IdempotencyConflict, QuotaExceeded
from deploy.launcher import ClusterUnavailable, JobLauncher
from deploy.records import (
    ACTIVE_STATES,
    IdentityRecord,
    JobRecord,
    Scope,
    TokenRecord,
    utc_now,
)
from deploy.settings import ApiSettings
from deploy.uploads import resolve_input_uri
from deploy.webhooks import WebhookPolicy, check_webhook_url, post_webhook
from farm.errors import FarmError, SpecError
from farm.pipeline.plan import report_path
from farm.pipeline.progress import TERMINAL_STATES, JobStatus
from farm.pipeline.runner import new_run_id
from farm.spec import JobSpec, parse_spec

log = logging.getLogger(__name__)

SERVER_SETTINGS = frozenset(
    {
        "face.identity",
        "face.reference",
        "voice.transcript",
        "voice.background_stem",
        "voice.rvc.models_dir",
        "voice.rvc.generator",
        "voice.mdx.models_dir",
        "voice.asr.model_dir",
        "voice.espeak.binary",
        "voice.gpt_sovits.url",
        "voice.gpt_sovits.urls",
        "voice.gpt_sovits.reference_dir",
        "cluster.address",
        "cluster.connect_timeout_s",
    }
)
"""Settings that name files or servers: the server fills them (a client names an identity by
id and uploads a transcript), so a request cannot point a job at the server's own files."""


class JobRequest(BaseModel):
    """The ``settings`` part of ``POST /v1/jobs``: the CLI's job settings, by section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: str | None = Field(default=None, description="identity id (POST /v1/identities)")
    input_uri: str | None = Field(
        default=None,
        description="file:///… under an operator-allowed root, instead of uploading the video",
        max_length=4096,
    )
    webhook_url: str | None = Field(
        default=None, description="receives the final job record (signed POST)", max_length=2048
    )
    passthrough: bool = Field(default=False, description="copy frames unchanged (no swap)")
    strict: bool = False
    face: dict[str, Any] = Field(default_factory=dict, description="JobSpec.face, but identity")
    voice: dict[str, Any] = Field(default_factory=dict, description="JobSpec.voice")
    video: dict[str, Any] = Field(default_factory=dict, description="JobSpec.video")
    report: dict[str, Any] = Field(default_factory=dict, description="JobSpec.report")
    cluster: dict[str, Any] = Field(
        default_factory=dict, description="JobSpec.cluster: workers, device, timeouts"
    )


class JobUrls(BaseModel):
    job: str
    events: str
    output: str
    report_html: str
    report_json: str
    transcript_srt: str


class JobProgress(BaseModel):
    """Per stage: frames and shards rendered, sentences voiced, and the time left."""

    frames_total: int = 0
    frames_done: int = 0
    shards_total: int = 0
    shards_done: int = 0
    sentences_total: int = 0
    sentences_done: int = 0
    retries: int = 0
    eta_s: float | None = None


class JobView(BaseModel):
    """A job as the API returns it."""

    job_id: str
    state: str
    identity_id: str | None = None
    run_id: str | None = None
    pipeline_job_id: str | None = Field(
        default=None, description="the pipeline's job id (watermark payload, audit log)"
    )
    progress: JobProgress
    error: str | None = None
    resumes: int = 0
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None = None
    urls: JobUrls


class JobPage(BaseModel):
    jobs: list[JobView]
    next: str | None = Field(default=None, description="pass as ?after= for the next page")


class IdentityView(BaseModel):
    identity_id: str
    subject: str
    consent_id: str
    consent_sha256: str
    faces: int
    voice_refs: int
    created_at: dt.datetime


@dataclass(frozen=True)
class Caller:
    """The authenticated token behind a request."""

    token: TokenRecord

    @property
    def admin(self) -> bool:
        return "admin" in self.token.scopes

    def owns(self, owner: str) -> bool:
        return self.admin or owner == self.token.token_id


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def request_hash(parts: Sequence[tuple[str, str]]) -> str:
    """What an Idempotency-Key promises: the same settings and the same files, given as
    (part name, sha256 of its content) pairs in any order."""
    return hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest()


def _leaf_paths(section: str, data: dict[str, Any]) -> list[str]:
    paths = []
    for key, value in data.items():
        path = f"{section}.{key}"
        paths.append(path)
        if isinstance(value, dict):
            paths += _leaf_paths(path, value)
    return paths


def job_view(record: JobRecord, status: JobStatus | None = None) -> JobView:
    base = f"/v1/jobs/{record.job_id}"
    current = status.model_dump(mode="json") if status is not None else (record.status or {})
    progress = JobProgress.model_validate(
        {k: current[k] for k in JobProgress.model_fields if k in current}
    )
    state = record.state
    if status is not None and record.state in ACTIVE_STATES:
        state = status.state
    return JobView(
        job_id=record.job_id,
        state=state,
        identity_id=record.identity_id,
        run_id=record.run_id,
        pipeline_job_id=current.get("job_id"),
        progress=progress,
        error=record.error or (status.error if status is not None else None),
        resumes=record.resumes,
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
        urls=JobUrls(
            job=base,
            events=f"{base}/events",
            output=f"{base}/output",
            report_html=f"{base}/report.html",
            report_json=f"{base}/report.json",
            transcript_srt=f"{base}/transcript.srt",
        ),
    )


def identity_view(record: IdentityRecord) -> IdentityView:
    return IdentityView.model_validate(record.model_dump(exclude={"owner", "pack_dir"}))


class FarmService:
    """The API's operations over the record store and a job launcher."""

    def __init__(
        self,
        settings: ApiSettings,
        store: RecordStore,
        launcher: JobLauncher,
        *,
        pepper: bytes,
    ) -> None:
        self.settings = settings
        self.store = store
        self.launcher = launcher
        self.pepper = pepper
        self.limiter = RateLimiter(settings.rate_limit_per_minute)

    # -- who is asking --------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller of a request, or 401; rate limited per token (429)."""
        parsed = parse_bearer(authorization)
        if parsed is None:
            raise ApiRefused(
                "missing or malformed bearer token: send `Authorization: Bearer farm_…` "
                "(create one with `farm tokens create`)",
                status=401,
            )
        token_id, secret = parsed
        record = self.store.get_token(token_id)
        if record is None or record.revoked_at is not None:
            # The same answer for unknown and revoked: no way to tell which ids exist.
            secret_matches(_DUMMY_TOKEN, secret, self.pepper)  # the same work either way
            raise ApiRefused("invalid bearer token", status=401)
        if not secret_matches(record, secret, self.pepper):
            raise ApiRefused("invalid bearer token", status=401)
        self.limiter.check(token_id)
        return Caller(record)

    @staticmethod
    def require(caller: Caller, scope: Scope) -> None:
        if scope not in caller.token.scopes and not caller.admin:
            raise ApiRefused(
                f"token {caller.token.name} lacks the {scope!r} scope (it has "
                f"{', '.join(caller.token.scopes)}); create one with --scopes {scope}",
                status=403,
            )

    # -- identities -------------------------------------------------------------------------

    def create_identity(
        self, caller: Caller, faces: list[Path], voices: list[Path], consent: Path
    ) -> IdentityRecord:
        """Build a pack from staged uploads (consent checked exactly as `farm identity create`)."""
        from farm.face.identity import create_consented_identity
        from farm.provenance.consent import read_consent

        self.require(caller, "submit")
        identity_id = _id("idn")
        final = self.settings.identities_dir / identity_id
        building = self.settings.staging_dir / f"{identity_id}.pack"
        created = create_consented_identity(
            faces, consent, building / "pack", voices=voices, models_dir=self.settings.models_dir
        )
        final.parent.mkdir(parents=True, exist_ok=True)
        # The pack was signed where it was built; its manifest holds relative paths only.
        building.rename(final)
        pack = created.pack
        consent_record = read_consent(final / "pack" / pack.consent.path.relative_to(pack.root))
        record = IdentityRecord(
            identity_id=identity_id,
            owner=caller.token.token_id,
            pack_dir=str(final / "pack"),
            subject=consent_record.subject,
            consent_id=consent_record.consent_id,
            consent_sha256=pack.consent.sha256,
            faces=len(pack.faces),
            voice_refs=len(pack.voice_refs),
            created_at=utc_now(),
        )
        try:
            self.store.add_identity(record)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        return record

    def identity(self, caller: Caller, identity_id: str) -> IdentityRecord:
        self.require(caller, "read")
        return self._owned_identity(caller, identity_id)

    def _owned_identity(self, caller: Caller, identity_id: str) -> IdentityRecord:
        record = self.store.get_identity(identity_id)
        if record is None or not caller.owns(record.owner):
            raise ApiRefused(f"no identity {identity_id[:40]}", status=404)
        return record

    def delete_identity(self, caller: Caller, identity_id: str) -> None:
        self.require(caller, "submit")
        self._owned_identity(caller, identity_id)
        deleted = self.store.delete_identity(identity_id)  # IdentityInUse while jobs use it
        if deleted is not None:
            shutil.rmtree(Path(deleted.pack_dir).parent, ignore_errors=True)

    # -- jobs -------------------------------------------------------------------------------

    def build_spec(
        self,
        request: JobRequest,
        *,
        job_dir: Path,
        input_path: Path,
        pack: Path | None,
        transcript: Path | None,
        reference: Path | None,
    ) -> JobSpec:
        """The JobSpec of a request: the client's settings, the server's paths."""
        for section in ("face", "voice", "video", "report", "cluster"):
            for path in _leaf_paths(section, getattr(request, section)):
                if path in SERVER_SETTINGS:
                    raise ApiRefused(
                        f"settings.{path}: set by the server, not a request (name an identity "
                        "by `identity`, upload a transcript or reference as a file part)",
                        status=422,
                    )
        if pack is None and request.face:
            raise ApiRefused("settings.face: give `identity` (an identity id) too", status=422)
        voice: dict[str, Any] = dict(request.voice)
        if transcript is not None:
            voice["transcript"] = str(transcript)
        if self.settings.models_dir is not None:
            for backend in ("rvc", "mdx"):
                voice[backend] = {
                    **voice.get(backend, {}),
                    "models_dir": str(self.settings.models_dir),
                }
        if self.settings.gpt_sovits_urls:
            voice["gpt_sovits"] = {
                **voice.get("gpt_sovits", {}),
                "urls": list(self.settings.gpt_sovits_urls),
            }
        data: dict[str, Any] = {
            "input": str(input_path),
            "output": str(job_dir / "output.mp4"),
            "work_dir": str(job_dir / "work"),
            "models_dir": str(self.settings.models_dir) if self.settings.models_dir else None,
            "passthrough": request.passthrough,
            "strict": request.strict,
            "voice": voice,
            "video": dict(request.video),
            "report": dict(request.report),
            "cluster": dict(request.cluster),
        }
        if pack is not None:
            face = dict(request.face)
            face.setdefault("faces", "reference" if reference is not None else "all")
            data["face"] = {
                **face,
                "identity": str(pack),
                "reference": str(reference) if reference else None,
            }
        try:
            return parse_spec(data)
        except SpecError as exc:
            raise ApiRefused(f"settings.{exc.one_line()}", status=422) from None

    def submit_job(
        self,
        caller: Caller,
        request: JobRequest,
        *,
        staged: Path,
        upload: Path | None,
        transcript: Path | None,
        reference: Path | None,
        idempotency_key: str | None,
        request_sha256: str,
    ) -> tuple[JobRecord, bool]:
        """Check, record and launch a job; (record, False) for a repeated Idempotency-Key.

        ``staged`` is this request's staging folder holding the uploads; it becomes the job's
        folder, or is removed when the job is refused.
        """
        from farm.pipeline.preflight import preflight

        self.require(caller, "submit")
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 200 or not idempotency_key.isprintable():
                raise ApiRefused("Idempotency-Key: 1 to 200 printable characters", status=422)
            existing = self.store.find_idempotent(caller.token.token_id, idempotency_key)
            if existing is not None:
                return self._repeat(existing, idempotency_key, request_sha256)
        if (upload is None) == (request.input_uri is None):
            raise ApiRefused(
                "give the video either as the `video` file part or as settings.input_uri",
                status=422,
            )
        if request.webhook_url is not None:
            check_webhook_url(
                request.webhook_url, allow_private=self.settings.webhook_allow_private
            )
        pack: Path | None = None
        if request.identity is not None:
            identity = self.store.get_identity(request.identity)
            if identity is None or not caller.owns(identity.owner):
                raise ApiRefused(
                    f"settings.identity: no identity {request.identity[:40]}", status=422
                )
            pack = Path(identity.pack_dir)
        # Refused early, before preflight reads the input; `add_job` checks again under lock.
        if self.store.count_active_jobs(caller.token.token_id) >= self.settings.max_active_jobs:
            raise QuotaExceeded(
                f"token {caller.token.name} already has {self.settings.max_active_jobs} active "
                "jobs (the quota); wait for one to end or cancel one",
                retry_after_s=10,
            )
        input_path = (
            upload
            if upload is not None
            else resolve_input_uri(request.input_uri or "", self.settings.input_roots)
        )
        job_id = _id("job")
        job_dir = self.settings.jobs_dir / job_id
        if upload is not None:
            input_path = job_dir / upload.relative_to(staged)
        spec = self.build_spec(
            request,
            job_dir=job_dir,
            input_path=input_path,
            pack=pack,
            transcript=None if transcript is None else job_dir / transcript.relative_to(staged),
            reference=None if reference is None else job_dir / reference.relative_to(staged),
        )
        job_dir.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(job_dir)
        try:
            preflight(spec)  # bad input fails here, before a record exists
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        now = utc_now()
        run_id = new_run_id()
        record = JobRecord(
            job_id=job_id,
            owner=caller.token.token_id,
            run_id=run_id,
            identity_id=request.identity,
            spec=spec.model_dump(mode="json"),
            request_sha256=request_sha256,
            input_path=str(input_path),
            output_path=str(spec.output),
            work_dir=str(spec.work_dir),
            webhook_url=request.webhook_url,
            created_at=now,
            updated_at=now,
        )
        try:
            record, created = self.store.add_job(
                record,
                idempotency_key=idempotency_key,
                max_active=self.settings.max_active_jobs,
            )
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        if not created:  # a racing request with the same key won
            shutil.rmtree(job_dir, ignore_errors=True)
            return self._repeat(record, idempotency_key or "", request_sha256)
        try:
            self.launcher.launch(spec, run_id)
        except FarmError as exc:
            self.store.update_job(job_id, state="failed", error=f"not started: {exc.one_line()}")
            raise
        return record, True

    def _repeat(self, record: JobRecord, key: str, request_sha256: str) -> tuple[JobRecord, bool]:
        if record.request_sha256 != request_sha256:
            raise IdempotencyConflict(
                f"Idempotency-Key {key[:40]!r} was used for job {record.job_id} with a "
                "different request; use a new key for a new job"
            )
        return record, False

    def job(self, caller: Caller, job_id: str) -> JobRecord:
        self.require(caller, "read")
        return self._owned_job(caller, job_id)

    def live_view(self, record: JobRecord) -> JobView:
        """The record, with the job actor's newest status while the job is active."""
        status = None
        if record.state in ACTIVE_STATES and record.run_id is not None:
            try:
                status = self.launcher.status(record.run_id)
            except ClusterUnavailable:
                status = None  # the record's last status stands
        return job_view(record, status)

    def list_jobs(
        self, caller: Caller, *, state: str | None, limit: int, after: str | None
    ) -> JobPage:
        self.require(caller, "read")
        owner = None if caller.admin else caller.token.token_id
        records, following = self.store.list_jobs(owner, state=state, limit=limit, after=after)
        return JobPage(jobs=[job_view(r) for r in records], next=following)

    def cancel_job(self, caller: Caller, job_id: str) -> JobRecord:
        self.require(caller, "submit")
        record = self._owned_job(caller, job_id)
        active = record.state in ACTIVE_STATES and record.run_id is not None
        if active and not self.launcher.cancel(record.run_id or ""):
            updated = self.store.update_job(
                job_id, state="cancelled", error="cancelled (its job actor was gone)"
            )
            record = updated or record
        return record

    def _owned_job(self, caller: Caller, job_id: str) -> JobRecord:
        record = self.store.get_job(job_id)
        if record is None or not caller.owns(record.owner):
            raise ApiRefused(f"no job {job_id[:40]}", status=404)
        return record

    def job_file(self, caller: Caller, job_id: str, which: str) -> Path:
        """The finished output, or one of its reports, of a job."""
        record = self.job(caller, job_id)
        output = Path(record.output_path)
        path = {
            "output": output,
            "report.json": report_path(output),
            "report.html": output.with_name(f"{output.name}.report.html"),
            "transcript.srt": output.with_suffix(".srt"),
        }[which]
        state = self.live_view(record).state  # the record may trail its actor by a step
        if state != "succeeded":
            raise ApiRefused(
                f"job {job_id} is {state}: its {which} exists once it has succeeded",
                status=409 if state in ACTIVE_STATES else 404,
            )
        if not path.is_file():
            raise ApiRefused(f"job {job_id} has no {which} (not written for it)", status=404)
        return path

    def ready(self) -> dict[str, str]:
        """What /readyz checks: the records, the cluster and the storage."""
        checks: dict[str, str] = {}
        for name, check in (
            ("database", self.store.ping),
            ("cluster", self.launcher.ping),
            ("storage", self._storage_writable),
        ):
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = " ".join(str(exc).split())[:300] or type(exc).__name__
        return checks

    def _storage_writable(self) -> None:
        self.settings.staging_dir.mkdir(parents=True, exist_ok=True)
        probe = self.settings.staging_dir / f".ready-{secrets.token_hex(4)}"
        probe.write_bytes(b"ok")
        probe.unlink()


_DUMMY_TOKEN = TokenRecord(
    token_id="0" * 12,
    name="none",
    scopes=("read",),
    secret_hash="0" * 64,
    created_at=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc),
)


# -- following jobs: the reconciler -----------------------------------------------------------

LAUNCH_GRACE_S = 180.0
"""How long a queued job may have no actor before it counts as lost: a launch waits up to two
minutes for its actor to start (`deploy.ray_launcher.START_TIMEOUT_S`)."""


class Reconciler:
    """Follows every active job record to its job actor, in the background of a replica.

    Each replica claims the records it follows with a lease in the store, so several replicas
    (or a restarted one) never double-follow a job. A job whose actor is gone is finished from
    its output when it had committed, resumed from its ledger when it had not (up to
    ``max_resumes``), else marked failed with the reason. A job reaching its end enqueues its
    webhook; deliveries are retried with backoff and every attempt is recorded.
    """

    def __init__(
        self,
        service: FarmService,
        *,
        worker: str | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.service = service
        self.worker = worker or _id("replica")
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        settings = service.settings
        self.policy = WebhookPolicy(
            max_attempts=settings.webhook_max_attempts, base_delay_s=settings.webhook_base_delay_s
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="farm-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        try:
            self.service.store.release_jobs(self.worker)
        except Exception:  # shutting down: another replica takes the leases when they expire
            log.warning("could not release job leases of %s", self.worker, exc_info=True)

    def _loop(self) -> None:
        import httpx

        with httpx.Client(follow_redirects=False) as client:
            while not self._stop.is_set():
                try:
                    self.step(client)
                except Exception:
                    log.exception("reconciling job records failed; trying again")
                self._stop.wait(self.service.settings.reconcile_interval_s)

    def step(self, client: Any) -> None:
        """Follow each claimed job once, then send the webhooks that are due."""
        store = self.service.store
        for record in store.claim_jobs(self.worker, lease_s=self.service.settings.lease_s):
            self.follow(record)
        for delivery in store.claim_deliveries(self.worker, lease_s=60.0):
            job = store.get_job(delivery.job_id)
            token = store.get_token(job.owner) if job is not None else None
            if token is None:
                store.record_attempt(
                    delivery.delivery_id,
                    status_code=None,
                    error="the job's token no longer exists",
                    delivered=False,
                    next_attempt_at=None,
                )
                continue
            result = post_webhook(
                client,
                delivery,
                webhook_secret(token, self.service.pepper),
                now=time.time(),
                policy=self.policy,
            )
            attempt = delivery.attempts + 1
            retry = result.retry and attempt < self.policy.max_attempts
            store.record_attempt(
                delivery.delivery_id,
                status_code=result.status_code,
                error=result.error,
                delivered=result.delivered,
                next_attempt_at=(
                    self.clock() + dt.timedelta(seconds=self.policy.delay_after(attempt))
                    if retry
                    else None
                ),
            )

    def follow(self, record: JobRecord) -> None:
        service, store = self.service, self.service.store
        if record.run_id is None:
            return
        try:
            status = service.launcher.status(record.run_id)
        except ClusterUnavailable:
            return  # not known now; the next step asks again
        if status is not None:
            changes: dict[str, Any] = {"status": status.model_dump(mode="json")}
            if status.state in TERMINAL_STATES:
                changes.update(state=status.state, error=status.error)
                self._finish(record, **changes)
            elif status.state != record.state or status.model_dump(mode="json") != record.status:
                store.update_job(record.job_id, state=status.state, status=changes["status"])
            return
        self._actor_gone(record)

    def _actor_gone(self, record: JobRecord) -> None:
        """The job actor is not there: not started yet, committed, resumable, or lost."""
        from farm.pipeline.report import JobReport
        from farm.plan.ledger import Ledger

        # The record is written before its actor is launched (so no job runs unrecorded): a
        # queued job no actor has reported on yet may still be starting.
        starting = record.state == "queued" and record.status is None
        if starting and self.clock() - record.updated_at < dt.timedelta(seconds=LAUNCH_GRACE_S):
            return

        output = Path(record.output_path)
        report = report_path(output)
        if output.is_file() and report.is_file():
            try:
                finished = JobReport.model_validate_json(report.read_text())
                error = None
            except ValueError:
                finished, error = None, "its report is unreadable"
            if finished is not None:
                self._finish(record, state="succeeded", error=error)
                return
        if record.resumes < self.service.settings.max_resumes and Ledger.exists(
            Path(record.work_dir)
        ):
            run_id = new_run_id()
            try:
                self.service.launcher.launch(JobSpec.model_validate(record.spec), run_id)
            except FarmError as exc:
                self._finish(record, state="failed", error=f"resume failed: {exc.one_line()}")
                return
            self.service.store.update_job(
                record.job_id, run_id=run_id, resumes=record.resumes + 1, state="queued"
            )
            log.warning("job %s lost its actor; resumed as run %s", record.job_id, run_id)
            return
        self._finish(
            record,
            state="failed",
            error=(
                f"its job actor (run {record.run_id}) is gone (its node or the cluster was "
                f"lost) and it was resumed {record.resumes} time(s) already"
                if record.resumes
                else f"its job actor (run {record.run_id}) is gone (its node or the cluster "
                "was lost) before it had planned; submit it again"
            ),
        )

    def _finish(self, record: JobRecord, **changes: Any) -> None:
        """Record the job's end exactly once, and enqueue its webhook."""
        finished = self.service.store.update_job(record.job_id, **changes)
        if finished is not None and finished.webhook_url:
            body = json.dumps(
                {
                    "event": f"job.{finished.state}",
                    "job": job_view(finished).model_dump(mode="json"),
                },
                sort_keys=True,
            ).encode()
            self.service.store.add_delivery(finished.job_id, finished.webhook_url, body)
