"""Token signing and verification keys: generation, PEM loading, `kid` (RFC 7638).

A key generated for the built-in token service is written once (mode 0600) and never
replaced by Dockyard; rotating means configuring a new `signing_key` and listing the old
public key under `public_keys`, so tokens it signed stay valid until they expire.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


class KeyError_(ValueError):
    """A key file cannot be used."""


def _b64(n: int | bytes) -> str:
    raw = n if isinstance(n, bytes) else n.to_bytes((n.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The JWK members RFC 7638 hashes for a thumbprint."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        nums = key.public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        return {"crv": crv, "kty": "EC", "x": _b64(nums.x.to_bytes(size, "big")),
                "y": _b64(nums.y.to_bytes(size, "big"))}
    nums_r = key.public_numbers()
    return {"e": _b64(nums_r.e), "kty": "RSA", "n": _b64(nums_r.n)}


def kid_for(key: PublicKey) -> str:
    doc = json.dumps(public_jwk(key), separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(doc).digest())


def algorithms_for(key: PublicKey) -> tuple[str, ...]:
    """The JWS algorithms a key of this type may verify (never HMAC, never none)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALG.get(key.curve.name)
        return (alg,) if alg else ()
    return RSA_ALGS


@dataclass(frozen=True)
class VerifyKey:
    kid: str
    key: PublicKey
    algorithms: tuple[str, ...]

    @classmethod
    def of(cls, key: PublicKey, kid: str | None = None) -> VerifyKey:
        return cls(kid or kid_for(key), key, algorithms_for(key))


@dataclass(frozen=True)
class SigningKey:
    key: PrivateKey
    algorithm: str
    kid: str

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.kid, self.key.public_key(), (self.algorithm,))

    def jwk(self) -> dict[str, Any]:
        return {**public_jwk(self.key.public_key()), "kid": self.kid, "alg": self.algorithm,
                "use": "sig"}


def generate(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_signing_key(path: Path, algorithm: str) -> None:
    """Create a private key at `path` unless one is there (atomically: many workers)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem(generate(algorithm)))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # the first writer wins; the others use its key
    finally:
        os.unlink(tmp)


def load_signing_key(path: Path, algorithm: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyError_(f"{path}: cannot load the token signing key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = _EC_ALG.get(key.curve.name, "")
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = algorithm if algorithm.startswith(("RS", "PS")) else "RS256"
    else:
        raise KeyError_(f"{path}: the token signing key must be EC (P-256) or RSA")
    return SigningKey(key, alg, kid_for(key.public_key()))


def load_public_keys(path: Path) -> list[VerifyKey]:
    """Every public key or certificate in a PEM file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{path}: {exc.strerror}") from None
    try:
        out = _public_keys(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if isinstance(exc, KeyError_):
            raise KeyError_(f"{path}: {exc}") from None
        raise KeyError_(f"{path}: not a PEM public key or certificate: {exc}") from None
    if not out:
        raise KeyError_(f"{path}: no public key found")
    return out


def _public_keys(data: bytes) -> list[VerifyKey]:
    """The keys of PEM text (ValueError, TypeError or UnsupportedAlgorithm when it holds
    none that parses): a half-written file is a `KeyError_`, never a 500."""
    out: list[VerifyKey] = []
    if b"CERTIFICATE" in data:
        for cert in x509.load_pem_x509_certificates(data):
            pub = cert.public_key()
            if isinstance(pub, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                out.append(VerifyKey.of(pub))
    else:
        loaded: object
        try:
            loaded = serialization.load_pem_public_key(data)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None).public_key()
        if not isinstance(loaded, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise KeyError_("only EC and RSA public keys can verify tokens")
        out.append(VerifyKey.of(loaded))
    return out
