"""The operator's keys, C2PA signing certificate and trust list.

::

    $FARM_HOME/keys/
        operator_ed25519.key     Ed25519 private key (PKCS#8 PEM, mode 0600): signs consent records
        operator_ed25519.pub     its public key (PEM); give it to other operators to trust
        c2pa_ca.pem              the operator's CA (EC P-256, self-signed): the C2PA trust anchor
        c2pa_signer.pem          the leaf signing certificate + the CA (the chain C2PA embeds)
        c2pa_signer.key          the leaf's EC P-256 private key (PKCS#8 PEM, mode 0600)
    $FARM_HOME/trust.yaml        trusted operators: key id, Ed25519 public key, optional CA PEM

In a cluster the same material comes from environment variables (Kubernetes secrets), which take
precedence over files: `FARM_OPERATOR_KEY`, `FARM_C2PA_CERT`, `FARM_C2PA_KEY` (PEM text) and
`FARM_TRUST` (the trust.yaml text). `FARM_HOME` moves the directory (default: the per-user data
directory from platformdirs).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict, ValidationError

from farm.errors import FarmError

ENV_HOME = "FARM_HOME"
ENV_OPERATOR_KEY = "FARM_OPERATOR_KEY"
ENV_C2PA_CERT = "FARM_C2PA_CERT"
ENV_C2PA_KEY = "FARM_C2PA_KEY"
ENV_TRUST = "FARM_TRUST"

KEY_FILE = "keys/operator_ed25519.key"
PUB_FILE = "keys/operator_ed25519.pub"
CA_FILE = "keys/c2pa_ca.pem"
CERT_FILE = "keys/c2pa_signer.pem"
CERT_KEY_FILE = "keys/c2pa_signer.key"
TRUST_FILE = "trust.yaml"

CERT_VALIDITY_DAYS = 5 * 365


class OperatorKeyError(FarmError):
    """Operator keys or the trust list are missing or unusable."""


def farm_home(env: Mapping[str, str] | None = None) -> Path:
    """$FARM_HOME, else the per-user data directory.

    Only resolves the path (log and audit writers use it as it is); `usable_home` checks it, and
    every function here that reads or writes under the home calls that first.
    """
    environ = os.environ if env is None else env
    configured = environ.get(ENV_HOME)
    return Path(configured) if configured else Path(platformdirs.user_data_dir("syncfarm"))


def _home_label(home: Path, environ: Mapping[str, str]) -> str:
    configured = environ.get(ENV_HOME)
    if configured and Path(configured) == home:
        return f"{ENV_HOME}={configured}"
    return f"the farm home {home}"


def usable_home(home: Path, env: Mapping[str, str] | None = None) -> Path:
    """`home` when it is a directory or can become one; OperatorKeyError when a file is in the way.

    A regular file at (or above) $FARM_HOME would otherwise surface as NotADirectoryError or
    FileExistsError from deep inside key loading or writing.
    """
    environ = os.environ if env is None else env
    for candidate in (home, *home.parents):
        try:
            if not candidate.exists():
                continue
            is_dir = candidate.is_dir()
        except OSError as exc:
            raise OperatorKeyError(
                f"{_home_label(home, environ)} cannot be used: {candidate}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        if is_dir:
            return home
        where = "is a file" if candidate == home else f"is inside {candidate}, which is a file"
        raise OperatorKeyError(
            f"{_home_label(home, environ)} {where}, not a directory; point it at a folder"
        )
    return home


def key_id_of(public_key: ed25519.Ed25519PublicKey) -> str:
    """A short, stable name for an Ed25519 public key: 16 hex digits of sha256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: ed25519.Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def parse_public_key(text: str) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key from PEM, or from 64 hex digits of the raw key."""
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(stripped.encode())
        else:
            key = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(stripped))
    except ValueError as exc:
        raise OperatorKeyError(f"not an Ed25519 public key (PEM or 64 hex digits): {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise OperatorKeyError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


class TrustedKey(BaseModel):
    """One trusted operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str
    name: str = ""
    public_key_pem: str
    c2pa_ca_pem: str | None = None


class TrustList(BaseModel):
    """The operators whose consent signatures and C2PA certificates this farm accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: tuple[TrustedKey, ...] = ()

    def public_key(self, key_id: str) -> ed25519.Ed25519PublicKey | None:
        for entry in self.keys:
            if entry.key_id == key_id:
                return parse_public_key(entry.public_key_pem)
        return None

    def trust_anchors_pem(self) -> str:
        """Concatenated CA certificates, for C2PA trust validation."""
        return "".join(entry.c2pa_ca_pem for entry in self.keys if entry.c2pa_ca_pem)

    def with_key(self, entry: TrustedKey) -> TrustList:
        kept = tuple(k for k in self.keys if k.key_id != entry.key_id)
        return TrustList(keys=(*kept, entry))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, *, source: str) -> TrustList:
        try:
            data = yaml.safe_load(text) or {}
            trust = cls.model_validate(data)
        except (yaml.YAMLError, ValidationError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise OperatorKeyError(f"trust list {source} is not valid: {reason}") from None
        for entry in trust.keys:
            if key_id_of(parse_public_key(entry.public_key_pem)) != entry.key_id:
                raise OperatorKeyError(
                    f"trust list {source}: key id {entry.key_id} does not match its public key"
                )
        return trust


@dataclass(frozen=True)
class Operator:
    """Everything a farm needs to sign: consent key, C2PA credentials, trust list."""

    signing_key: ed25519.Ed25519PrivateKey
    c2pa_cert_chain_pem: str
    c2pa_key_pem: str
    trust: TrustList

    @property
    def key_id(self) -> str:
        return key_id_of(self.signing_key.public_key())

    @property
    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self.signing_key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message)


def verify_signature(
    public_key: ed25519.Ed25519PublicKey, signature: bytes, message: bytes
) -> bool:
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


SignatureProblem = Literal["unsigned", "untrusted", "bad"]


def signature_problem(
    signer_key_id: str | None, signature_b64: str | None, message: bytes, trust: TrustList
) -> SignatureProblem | None:
    """What is wrong with a signed document's signature (None: a trusted key signed it)."""
    if not signature_b64 or not signer_key_id:
        return "unsigned"
    public_key = trust.public_key(signer_key_id)
    if public_key is None:
        return "untrusted"
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return "bad"
    return None if verify_signature(public_key, signature, message) else "bad"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SyncFarm"),
        ]
    )


def make_c2pa_credentials(key_id: str, *, now: dt.datetime | None = None) -> tuple[str, str, str]:
    """A fresh operator CA and ES256 leaf: returns (ca_pem, leaf_chain_pem, leaf_key_pem).

    The leaf has keyUsage digitalSignature and extendedKeyUsage emailProtection, which c2pa-rs
    accepts for claim signing; the chain validates as Trusted once the CA is a trust anchor.
    """
    start = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=1)
    end = start + dt.timedelta(days=CERT_VALIDITY_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"SyncFarm operator CA {key_id}")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"SyncFarm signer {key_id}"))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem).decode()
    chain_pem = leaf.public_bytes(pem).decode() + ca_pem
    key_pem = leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return ca_pem, chain_pem, key_pem


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def init_keys(home: Path, *, name: str = "") -> Operator:
    """Create the operator key, C2PA credentials and a trust list trusting them (`farm keys init`).

    Refuses to overwrite an existing key: losing it would orphan every record it signed.
    """
    usable_home(home)
    if (home / KEY_FILE).exists():
        raise OperatorKeyError(
            f"operator key {home / KEY_FILE} already exists; remove it first to make a new one"
        )
    signing_key = ed25519.Ed25519PrivateKey.generate()
    key_id = key_id_of(signing_key.public_key())
    ca_pem, chain_pem, cert_key_pem = make_c2pa_credentials(key_id)
    key_pem = signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    try:
        _write_private(home / KEY_FILE, key_pem)
        _write_private(home / CERT_KEY_FILE, cert_key_pem)
        _write_atomic(home / PUB_FILE, public_key_pem(signing_key.public_key()))
        _write_atomic(home / CA_FILE, ca_pem)
        _write_atomic(home / CERT_FILE, chain_pem)
        trust = load_trust_file(home / TRUST_FILE).with_key(
            TrustedKey(
                key_id=key_id,
                name=name or "this farm",
                public_key_pem=public_key_pem(signing_key.public_key()),
                c2pa_ca_pem=ca_pem,
            )
        )
        _write_atomic(home / TRUST_FILE, trust.to_yaml())
    except FileExistsError as exc:
        raise OperatorKeyError(
            f"{exc.filename} already exists; remove it first to make a new operator key"
        ) from None
    except OSError as exc:
        raise OperatorKeyError(
            f"cannot write the operator keys in {home}: {_reason(exc)}"
        ) from None
    return Operator(signing_key, chain_pem, cert_key_pem, trust)


def _reason(exc: OSError) -> str:
    """An OSError in words: "Permission denied: /x", without the errno number."""
    reason = exc.strerror or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


def load_trust_file(path: Path) -> TrustList:
    """The trust list at `path` (empty when the file does not exist yet)."""
    if not path.exists():
        return TrustList()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
        raise OperatorKeyError(f"cannot read the trust list {path}: {reason}") from None
    return TrustList.from_yaml(text, source=str(path))


def trust_key(
    home: Path, public_key_text: str, *, name: str = "", c2pa_ca_pem: str | None = None
) -> TrustedKey:
    """Add another operator's Ed25519 key (and optionally their C2PA CA) to the trust list."""
    public_key = parse_public_key(public_key_text)
    if c2pa_ca_pem is not None:
        try:
            x509.load_pem_x509_certificate(c2pa_ca_pem.encode())
        except ValueError as exc:
            raise OperatorKeyError(f"the C2PA CA is not a PEM certificate: {exc}") from None
    entry = TrustedKey(
        key_id=key_id_of(public_key),
        name=name,
        public_key_pem=public_key_pem(public_key),
        c2pa_ca_pem=c2pa_ca_pem,
    )
    path = usable_home(home) / TRUST_FILE
    try:
        _write_atomic(path, load_trust_file(path).with_key(entry).to_yaml())
    except OSError as exc:
        raise OperatorKeyError(f"cannot write the trust list {path}: {_reason(exc)}") from None
    return entry


def load_trust(home: Path | None = None, env: Mapping[str, str] | None = None) -> TrustList:
    """The trust list: $FARM_TRUST (YAML text) if set, else $FARM_HOME/trust.yaml."""
    environ = os.environ if env is None else env
    if environ.get(ENV_TRUST):
        return TrustList.from_yaml(environ[ENV_TRUST], source=f"${ENV_TRUST}")
    return load_trust_file(usable_home(home or farm_home(environ), environ) / TRUST_FILE)


def _material(
    environ: Mapping[str, str], variable: str, home: Path, relative: str
) -> tuple[str, str]:
    if environ.get(variable):
        return environ[variable], f"${variable}"
    path = usable_home(home, environ) / relative
    if not path.exists():
        raise OperatorKeyError(
            f"operator credential {path} is missing (and ${variable} is not set); "
            "run `farm keys init` or mount the secret"
        )
    try:
        return path.read_text(), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
        raise OperatorKeyError(f"cannot read operator credential {path}: {reason}") from None


def load_operator(home: Path | None = None, env: Mapping[str, str] | None = None) -> Operator:
    """Load the operator from environment variables (cluster secrets) or from the farm home."""
    environ = os.environ if env is None else env
    root = home or farm_home(environ)
    key_text, key_source = _material(environ, ENV_OPERATOR_KEY, root, KEY_FILE)
    chain_pem, chain_source = _material(environ, ENV_C2PA_CERT, root, CERT_FILE)
    cert_key_pem, cert_key_source = _material(environ, ENV_C2PA_KEY, root, CERT_KEY_FILE)
    try:
        signing_key = serialization.load_pem_private_key(key_text.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise OperatorKeyError(
            f"operator key {key_source} is not a PEM private key: {exc}"
        ) from None
    if not isinstance(signing_key, ed25519.Ed25519PrivateKey):
        raise OperatorKeyError(f"operator key {key_source} is not an Ed25519 key")
    try:
        x509.load_pem_x509_certificates(chain_pem.encode())
        serialization.load_pem_private_key(cert_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise OperatorKeyError(
            f"C2PA credentials {chain_source} / {cert_key_source} are not usable PEM: {exc}"
        ) from None
    return Operator(signing_key, chain_pem, cert_key_pem, load_trust(root, environ))
