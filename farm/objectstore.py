"""Object-storage locations (``s3://bucket/key``) for a job's input, output and work directory.

For clusters without ReadWriteMany volumes a job may name its input, output and work directory by
fsspec URL instead of by path. The pipeline itself keeps working on local paths: every URL has a
*stand-in* path under the node's staging root (``$FARM_HOME/staging``), and the staging code
(`farm.pipeline.remote`) downloads into it and uploads from it::

    s3://b/clips/in.mp4      ->  STAGING/inputs/<sha256(url)[:20]>/in.mp4    (cached per node)
    s3://b/out/o.mp4         ->  STAGING/outputs/<sha256(url)[:20]>/o.mp4    (uploaded when done)
    s3://b/work/job1         ->  STAGING/work/<sha256(url)[:20]>/            (a mirror)

Credentials and the endpoint come from the environment, as botocore reads them:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), or ``AWS_PROFILE``
with ``~/.aws``; the region from ``AWS_DEFAULT_REGION``; a non-AWS endpoint (MinIO, Ceph, moto)
from ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or ``FSSPEC_S3_ENDPOINT_URL``. Nothing of it
is ever stored in a spec, a ledger or a report.

fsspec and s3fs are imported on first use (the ``[s3]`` extra): without them an ``s3://`` URL is
a one-line error saying what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from farm.errors import FarmError, SpecError, StorageError, plain_reason

URL_PATTERN = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
INSTALL_HINT = "pip install 'syncfarm[s3]'"
ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
"""Stores whose single PUT (or completed multipart upload) makes an object appear whole."""
REMOTE_FIELDS = ("input", "output", "work_dir")
VERSION_FILE_SUFFIX = ".farm-version"


class RemoteLocations(BaseModel):
    """The object-storage URLs of a job whose input, output or work dir is not a local path.

    Not part of the job's identity: the same bytes give the same job id wherever they are kept.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str | None = None
    output: str | None = None
    work_dir: str | None = None
    default_work_dir: bool = Field(
        default=False,
        description="work_dir was derived from the output URL (removed once the job is done)",
    )
    staging_root: str = Field(description="this node's staging root the stand-in paths are in")
    input_version: str | None = Field(
        default=None,
        description="the input object's ETag and size when the job staged it; a worker that "
        "finds another version refuses to render from it",
    )

    def local(self, path: Path, root: Path | None = None) -> Path:
        """``path`` (a stand-in under this spec's staging root) on this node's staging root."""
        here = (root or staging_root()).resolve()
        try:
            relative = path.resolve().relative_to(Path(self.staging_root).resolve())
        except ValueError:
            return path
        return here / relative


def staging_root(env: Mapping[str, str] | None = None) -> Path:
    """Where this node keeps staged inputs, outputs and work-dir mirrors."""
    from farm.provenance.keys import farm_home

    return farm_home(env) / "staging"


def is_url(value: object) -> bool:
    return isinstance(value, str) and URL_PATTERN.match(value) is not None


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:20]


def stand_in(kind: str, url: str, root: Path) -> Path:
    """The local path that stands in for ``url`` (``kind``: inputs, outputs or work)."""
    base = root / kind / url_key(url)
    return base if kind == "work" else base / basename(url)


def basename(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def sibling_url(url: str, name: str) -> str:
    """The URL of ``name`` in the same "folder" as ``url``."""
    return f"{url.rsplit('/', 1)[0]}/{name}"


def default_work_dir_url(output_url: str) -> str:
    """``.OUT.mp4.farm-work`` beside the output, as `farm.pipeline.plan.default_work_dir`."""
    return sibling_url(output_url, f".{basename(output_url)}.farm-work")


def join_url(base: str, relative: str) -> str:
    return f"{base.rstrip('/')}/{relative.lstrip('/')}"


def check_url(value: str, field: str) -> str:
    """``value`` if it is a URL this installation can open; `SpecError` naming ``field`` else."""
    match = URL_PATTERN.match(value)
    if match is None:
        raise SpecError(f"{field} {value!r} is not a URL")
    protocol, rest = match.group("protocol").lower(), match.group("rest")
    known = _known_protocols()
    if protocol not in known:
        raise SpecError(
            f"{field} {value}: unknown storage protocol {protocol!r}; give a local path or an "
            "object-storage URL such as s3://bucket/key"
        )
    module = str(known[protocol].get("class", "")).split(".", 1)[0]
    if module and importlib.util.find_spec(module) is None:
        raise SpecError(
            f"{field} {value}: {protocol}:// needs the {module} package: {INSTALL_HINT}"
            if protocol in {"s3", "s3a"}
            else f"{field} {value}: {protocol}:// needs the {module} package (pip install {module})"
        )
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise SpecError(f"{field} {value}: the URL names no bucket; write {protocol}://BUCKET/KEY")
    if field != "work_dir" and not key.strip("/"):
        raise SpecError(f"{field} {value}: the URL names a bucket but no object key")
    return f"{protocol}://{rest.rstrip('/')}" if field == "work_dir" else f"{protocol}://{rest}"


def _known_protocols() -> Mapping[str, Mapping[str, Any]]:
    if importlib.util.find_spec("fsspec") is None:
        # Without fsspec only the protocol the [s3] extra brings is worth naming.
        return {"s3": {"class": "s3fs.S3FileSystem"}, "s3a": {"class": "s3fs.S3FileSystem"}}
    from fsspec.registry import known_implementations

    # "file" URLs are local paths (handled before this), never a remote filesystem.
    return {k: v for k, v in known_implementations.items() if k not in {"file", "local"}}


def bind_remote(data: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """A JobSpec's raw fields with every URL moved into ``remote`` and replaced by its stand-in.

    A spec read back from a ledger (``remote`` set, stand-ins from another node) gets this node's
    stand-ins, so a job means the same on every node whatever its staging root.
    """
    previous = data.get("remote")
    if isinstance(previous, RemoteLocations):
        previous = previous.model_dump()
    remote: dict[str, Any] = dict(previous or {})
    found = False
    for field in REMOTE_FIELDS:
        value = data.get(field)
        if isinstance(value, str) and value.startswith("file://"):
            data = {**data, field: value.removeprefix("file://")}
        elif is_url(value):
            remote[field] = check_url(str(value), field)
            if field == "work_dir":
                remote["default_work_dir"] = False
            found = True
    if not found and not any(remote.get(f) for f in REMOTE_FIELDS):
        return data
    if remote.get("output") and not remote.get("work_dir") and data.get("work_dir") is None:
        # Mirrors the local default (.OUT.mp4.farm-work beside the output), so that workers on
        # other nodes can deliver their shards and a crash keeps them.
        remote["work_dir"] = default_work_dir_url(remote["output"])
        remote["default_work_dir"] = True
    if remote.get("input") and remote.get("input") == remote.get("output"):
        raise SpecError("output must not overwrite the input; choose another output URL")
    root = (root or staging_root()).resolve()
    remote["staging_root"] = str(root)
    data = dict(data)
    if remote.get("input"):
        data["input"] = stand_in("inputs", remote["input"], root)
    if remote.get("output"):
        data["output"] = stand_in("outputs", remote["output"], root)
    if remote.get("work_dir") and not remote.get("default_work_dir"):
        data["work_dir"] = stand_in("work", remote["work_dir"], root)
    data["remote"] = remote
    return data


# -- filesystems and their errors -----------------------------------------------------------------


def endpoint_url(env: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if env is None else env
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"):
        if environ.get(name):
            return environ[name]
    return None


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for ``url``; the import is lazy."""
    protocol = url.split("://", 1)[0].lower()
    try:
        import fsspec
    except ImportError:
        raise SpecError(
            f"{url}: object-storage URLs need fsspec and s3fs: {INSTALL_HINT}"
        ) from None
    options: dict[str, Any] = {}
    if protocol in {"s3", "s3a"}:
        endpoint = endpoint_url()
        # Read per call (fsspec caches one instance per distinct options): a changed endpoint
        # gets a new client. Listings are never cached: another node may just have written.
        options = {
            "use_listings_cache": False,
            "client_kwargs": {"endpoint_url": endpoint} if endpoint else {},
            "config_kwargs": {"retries": {"max_attempts": 3, "mode": "standard"}},
        }
    try:
        fs = fsspec.filesystem(protocol, **options)
    except ImportError:
        raise SpecError(f"{url}: {protocol}:// needs s3fs: {INSTALL_HINT}") from None
    except ValueError as exc:
        raise SpecError(f"{url}: {plain_reason(exc)}") from None
    return fs, fs._strip_protocol(url)


def storage_failure(exc: BaseException, url: str, action: str) -> FarmError:
    """A failure of the object store, in one line that says whether trying again helps."""
    name = type(exc).__name__
    if isinstance(exc, FarmError):
        return exc
    if name in {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return StorageError(
            f"cannot {action} {url}: no credentials for the object store; set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) on every node",
            path=url,
        )
    if isinstance(exc, FileNotFoundError):
        text = " ".join(str(exc).split())
        bucket = "bucket" in text.lower()
        what = "its bucket does not exist" if bucket else "no such object"
        return StorageError(f"cannot {action} {url}: {what}", path=url)
    if isinstance(exc, PermissionError):
        return StorageError(
            f"cannot {action} {url}: access denied; check the credentials' permissions", path=url
        )
    transient = name in {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
    } or isinstance(exc, ConnectionError | TimeoutError)
    reason = " ".join(plain_reason(exc).split())[:200]
    if transient:
        return StorageError(
            f"cannot {action} {url}: the object store did not answer ({reason}); check "
            "AWS_ENDPOINT_URL and the network",
            path=url,
            retryable=True,
        )
    return StorageError(f"cannot {action} {url}: {name}: {reason}", path=url)


def object_version(url: str) -> str:
    """The object's ETag (or modification time) and size: what the staging cache is keyed by."""
    fs, path = filesystem(url)
    try:
        info = fs.info(path)
    except Exception as exc:
        raise storage_failure(exc, url, "read") from None
    if info.get("type") == "directory":
        raise StorageError(f"cannot read {url}: it is a folder, not an object", path=url)
    tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    return f"{str(tag).strip(chr(34))}:{info.get('size')}"


def download(url: str, local: Path) -> None:
    """``url`` to ``local``, through a temporary name beside it (never a partial ``local``)."""
    from farm.fsutil import commit_file

    fs, path = filesystem(url)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.download")
    try:
        fs.get_file(path, str(tmp))
        commit_file(tmp, local)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            raise storage_failure(exc, url, "download") from None
        raise


def upload(local: Path, url: str) -> None:
    """``local`` to ``url``; the object appears whole or not at all.

    S3 (and GCS, Azure) commit an object on its single PUT or on CompleteMultipartUpload, so a
    reader never sees part of it; other stores get a temporary name and a move.
    """
    fs, path = filesystem(url)
    protocol = url.split("://", 1)[0].lower()
    try:
        if protocol in ATOMIC_PUT:
            fs.put_file(str(local), path)
        else:
            tmp = f"{path.rsplit('/', 1)[0]}/.{basename(path)}.{uuid.uuid4().hex[:8]}.partial"
            fs.put_file(str(local), tmp)
            fs.mv(tmp, path)
    except Exception as exc:
        raise storage_failure(exc, url, "upload to") from None


def list_files(url: str) -> dict[str, int]:
    """Every object under the "folder" ``url``: relative name -> size (empty when none)."""
    fs, path = filesystem(url)
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:
        raise storage_failure(exc, url, "list") from None
    prefix = path.rstrip("/") + "/"
    return {
        name[len(prefix) :]: int(info.get("size") or 0)
        for name, info in found.items()
        if name.startswith(prefix) and info.get("type") != "directory"
    }


def remove_tree(url: str) -> None:
    fs, path = filesystem(url)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        return
    except Exception as exc:
        raise storage_failure(exc, url, "remove") from None


def read_problem(url: str) -> str | None:
    """Why this node cannot read the object ``url`` (None when it can)."""
    try:
        object_version(url)
    except FarmError as exc:
        return exc.one_line()
    return None


def write_problem(folder_url: str) -> str | None:
    """Why this node cannot write under ``folder_url`` (None when it can): a real write."""
    fs, path = filesystem(folder_url)
    probe = f"{path.rstrip('/')}/.farm-storage-check-{uuid.uuid4().hex[:12]}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:
        return storage_failure(exc, folder_url, "write").one_line()
    return None


# -- the per-node staging cache -----------------------------------------------------------------


def stage_object(url: str, local: Path, *, expect: str | None = None) -> tuple[Path, str]:
    """The object ``url`` at ``local`` on this node, downloaded only when the cached copy is not
    of the object's current version; returns (path, version).

    The copy's version (ETag and size) is kept beside it, written after the copy is in place:
    a crash in between leaves a copy without a version, which is downloaded again. ``expect``
    (the version the job was planned with) makes a changed object an error, not a new input.
    """
    version = object_version(url)
    if expect is not None and version != expect:
        raise StorageError(
            f"input {url} changed after the job was planned (version {version}, planned "
            f"{expect}); run the job again to plan it from the new object",
            path=url,
        )
    marker = local.with_name(local.name + VERSION_FILE_SUFFIX)
    size = version.rsplit(":", 1)[-1]
    try:
        cached = marker.read_text(encoding="utf-8") == version and (
            not size.isdigit() or local.stat().st_size == int(size)
        )
    except OSError:
        cached = False
    if not cached:
        marker.unlink(missing_ok=True)
        download(url, local)
        from farm.fsutil import write_text_atomic

        write_text_atomic(marker, version)
    return local, version
