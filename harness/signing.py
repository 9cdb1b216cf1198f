"""The key that signs run attestations, and DSSE envelopes signed and verified with it.

One Ed25519 key (``cryptography``), made by ``harness keys init``: the private half as PKCS#8 PEM,
owner-only (``0600``, its folder ``0700``), at ``Settings.signing_key_path`` (the setting
``signing.key``; ``<data_dir>/signing/harness-ed25519.pem`` by default), never under a runs folder; the public half
beside it (``.pub``) to hand to whoever verifies. A private key file that others may read is refused,
as ssh refuses one.

The key id is securesystemslib's (the sha256 of the canonical JSON of ``{"keytype": "ed25519",
"scheme": "ed25519", "keyval": {"public": HEX}}``), so an envelope signed here verifies with
securesystemslib's ``Envelope.verify`` and an ``SSlibKey`` made from the same public key
(``tests/test_attest.py`` does both ways). It is also the fingerprint the report shows.

DSSE (github.com/secure-systems-lab/dsse, protocol.md): the signature is over
``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with LEN the byte length in
ASCII decimal; the envelope is ``{"payload": b64(body), "payloadType": type, "signatures": [{"keyid",
"sig": b64(sig)}]}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.errors import RunbookError
from suite.fsio import write_atomic

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


class SigningError(RunbookError):
    """No usable key, a key file others can read, or a key where it must not be."""


class SignatureError(Exception):
    """An envelope whose signature does not verify with any trusted key."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of a payload and its type."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public: Ed25519PublicKey) -> str:
    """securesystemslib's key id of an Ed25519 public key (hex sha256 of its canonical JSON)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    canonical = json.dumps({"keytype": "ed25519", "keyval": {"public": raw}, "scheme": "ed25519"},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class SigningKey:
    path: Path
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def keyid(self) -> str:
        return key_id(self.public)

    @property
    def public_path(self) -> Path:
        return public_path(self.path)


def public_path(private_path: Path) -> Path:
    return Path(private_path).with_name(Path(private_path).name + ".pub")


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def check_location(path: Path, forbidden: list[Path]) -> None:
    """Refuse a key under a runs folder: everything there is published, hashed and attested."""
    for folder in forbidden:
        if _inside(path, folder):
            raise SigningError(f"the signing key {path} is inside {folder}: keep it outside runs/ "
                               f"(every file of a run is published with it)")


def init_key(path: Path, forbidden: list[Path] = ()) -> tuple[SigningKey, bool]:
    """Make the key at ``path`` unless one is there; (the key, whether it was made now)."""
    path = Path(path).expanduser()
    check_location(path, list(forbidden))
    if path.exists():
        return load_key(path, forbidden), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # created 0600 (suite.fsio: a temporary file opened O_EXCL|O_NOFOLLOW, never over a file someone
    # slipped in), fsynced, then named
    write_atomic(path, pem, mode=0o600)
    pub = public_path(path)
    write_atomic(pub, public_pem(private.public_key()), mode=0o644)
    pub.chmod(0o644)
    return SigningKey(path, private), True


def load_key(path: Path, forbidden: list[Path] = ()) -> SigningKey:
    """The private key at ``path``; ``SigningError`` when absent, readable by others, or not Ed25519."""
    path = Path(path).expanduser()
    check_location(path, list(forbidden))
    if not path.is_file():
        raise SigningError(f"no signing key at {path}: `harness keys init` makes one")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SigningError(f"the signing key {path} is readable by others (mode {mode:04o}): `chmod 600 {path}`")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 key")
    return SigningKey(path, private)


def load_public(path: Path) -> Ed25519PublicKey:
    """A trusted public key: a PEM public key file, or the private key file (its public half)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the key {path}: {exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        key = load_key(path).public
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path} is not an Ed25519 public key")
    return key


def local_public(private_path: Path) -> Ed25519PublicKey | None:
    """The public half of the configured key (from ``.pub`` when there), None when there is no key."""
    pub = public_path(private_path)
    if pub.is_file():
        return load_public(pub)
    if Path(private_path).is_file():
        return load_key(private_path).public
    return None


def sign(payload: bytes, key: SigningKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> dict:
    """A DSSE envelope of ``payload`` signed with ``key``."""
    sig = key.private.sign(pae(payload_type, payload))
    return {"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
            "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(sig).decode()}]}


@dataclass(frozen=True)
class Verified:
    payload: bytes
    payload_type: str
    keyid: str


def signers(envelope: dict) -> list[str]:
    return [str(s.get("keyid", "")) for s in envelope.get("signatures", []) if isinstance(s, dict)]


def verify(envelope: dict, trusted: list[Ed25519PublicKey]) -> Verified:
    """The payload of an envelope a trusted key signed; ``SignatureError`` saying why not otherwise."""
    try:
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = list(envelope["signatures"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"not a DSSE envelope ({exc})") from None
    if not signatures:
        raise SignatureError("the envelope carries no signature")
    message = pae(str(payload_type), payload)
    by_id = {key_id(k): k for k in trusted}
    for sig in signatures:
        key = by_id.get(str(sig.get("keyid", ""))) if isinstance(sig, dict) else None
        candidates = [key] if key is not None else list(by_id.values())  # keyid is a hint, not a trust anchor
        try:
            raw = base64.b64decode(sig["sig"], validate=True)
        except (KeyError, TypeError, ValueError):
            continue
        for k in candidates:
            try:
                k.verify(raw, message)
            except InvalidSignature:
                continue
            return Verified(payload, str(payload_type), key_id(k))
    named = ", ".join(signers(envelope)) or "no key id"
    if not set(signers(envelope)) & set(by_id):
        raise SignatureError(f"signed by key {named}, which is not a key you trust ({', '.join(by_id) or 'none'})")
    raise SignatureError(f"the signature of key {named} does not verify: the attestation was altered after "
                         f"signing")
