"""A private CA and one certificate per service, and the TLS contexts of servers and clients.

``suite tls init`` writes, under ``tls.dir`` (default ``<data_dir>/tls``, mode 0700, every file 0600):
``ca.crt`` / ``ca.key`` (a CA that may sign only end-entity certificates: ``pathlen=0``) and
``<service>.crt`` / ``<service>.key`` for every service of the table, each valid for the loopback
names, the bind address and the names given with ``--san`` (the addresses other hosts reach it at),
for serverAuth only. Keys are ECDSA P-256. The CA is kept when it exists, so certificates can be
reissued (new names, expiry) without handing every client a new CA.

Every client of the stack verifies the server against ``tls.ca_file`` (``client_context``): the
gateway's upstream calls, RAG's calls to the embedding service and the gateway, the tool server's
calls to memory, RAG and the gateway, the supervisor's probes and the harness. Python's default
context checks the chain, the validity dates and the host name (SAN); a wrong or expired
certificate fails the handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from suite.settings import WILDCARDS, Settings

LOOPBACK_SANS = ("localhost", "127.0.0.1", "::1")
CA_NAME = "suite workbench private CA"


class TlsMissing(FileNotFoundError):
    """A service is to serve TLS but its certificate is not there."""


def server_files(settings: Settings, service: str) -> tuple[Path, Path]:
    """``(certificate, key)`` a service serves with; ``TlsMissing`` says how to make them."""
    cert, key = settings.tls_dir / f"{service}.crt", settings.tls_dir / f"{service}.key"
    missing = [str(p) for p in (cert, key) if not p.is_file()]
    if missing:
        raise TlsMissing(f"tls.enabled but {', '.join(missing)} missing: run `suite tls init --san ADDRESS` "
                         "(ADDRESS: each address other hosts reach this one at)")
    return cert, key


def client_context(settings: Settings) -> ssl.SSLContext:
    """What a client of the stack verifies servers with: ``tls.ca_file`` when it exists, else the
    system's trust store. Cached per CA file (loading one costs milliseconds)."""
    return trust(settings.ca_file)


def trust(ca: Path | str) -> ssl.SSLContext:
    """A client context trusting the CA certificate at ``ca`` (the system's store when it is absent)."""
    try:
        stamp = Path(ca).stat().st_mtime_ns  # a CA made anew at the same path is loaded anew
    except OSError:
        return _context(None, 0)
    return _context(str(ca), stamp)


@lru_cache(maxsize=8)
def _context(cafile: str | None, stamp: int) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def uvicorn_options(settings: Settings, service: str) -> dict[str, str]:
    """``uvicorn.run`` keyword arguments that make ``service`` serve TLS (none when TLS is off)."""
    if not settings.tls.enabled:
        return {}
    cert, key = server_files(settings, service)
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


# -- issuing ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issued:
    name: str
    cert: Path
    key: Path
    sans: tuple[str, ...]
    not_after: dt.datetime


def _private_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _san(value: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_ca(folder: Path, days: int, force: bool = False):
    """The CA's certificate and key from ``folder``, made first when absent (or ``force``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = folder / "ca.crt", folder / "ca.key"
    if cert_path.is_file() and key_path.is_file() and not force:
        return (x509.load_pem_x509_certificate(cert_path.read_bytes()),
                serialization.load_pem_private_key(key_path.read_bytes(), None))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=max(days, 1) * 3))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _private_write(key_path, _pem_key(key))
    _private_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(folder: Path, name: str, sans: list[str], ca_cert, ca_key, *, days: int,
          not_before: dt.datetime | None = None) -> Issued:
    """``<folder>/<name>.crt`` and ``.key``: a serverAuth certificate for ``sans`` signed by the CA,
    valid from ``not_before`` (default: now) for ``days``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=days)
    unique = list(dict.fromkeys(sans))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([_san(s) for s in unique]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    _private_write(key_path, _pem_key(key))
    _private_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return Issued(name, cert_path, key_path, tuple(unique), end)


def init(settings: Settings, sans: list[str] | None = None, names: list[str] | None = None,
         new_ca: bool = False) -> list[Issued]:
    """The CA (kept when present unless ``new_ca``) and a certificate for each of ``names`` (default:
    every service), valid for loopback, the bind address and ``sans``."""
    from suite import services

    folder = settings.tls_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    ca_cert, ca_key = ensure_ca(folder, settings.tls.cert_days, force=new_ca)
    bound = [] if settings.host in WILDCARDS else [settings.host]
    every = [*LOOPBACK_SANS, *bound, *(sans or [])]
    return [issue(folder, name, every, ca_cert, ca_key, days=settings.tls.cert_days)
            for name in names or list(services.BY_NAME)]


def describe(settings: Settings) -> list[dict[str, str]]:
    """Each certificate in the TLS folder: name, names it is valid for, expiry, issuer."""
    from cryptography import x509

    out = []
    for path in sorted(settings.tls_dir.glob("*.crt")):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(v) for v in sans.get_values_for_type(x509.DNSName)] + \
                    [str(v) for v in sans.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            names = []
        out.append({"name": path.stem, "valid_for": ", ".join(names) or "-",
                    "not_after": cert.not_valid_after_utc.isoformat(timespec="minutes"),
                    "issuer": cert.issuer.rfc4514_string(), "mode": oct(path.stat().st_mode & 0o777)})
    return out
