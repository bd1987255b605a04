"""Keys of an external token issuer, from a JWKS document (a file the operator syncs)."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dockyard.auth.keys import KeyError_, VerifyKey


def load_jwks(path: Path) -> list[VerifyKey]:
    """Every EC or RSA signing key in a JWKS file (`{"keys": [...]}`)."""
    try:
        doc = json.loads(path.read_text())
        entries = [(d, jwt.PyJWK.from_dict(d)) for d in doc["keys"]
                   if isinstance(d, dict) and d.get("kty") in ("EC", "RSA")]
    except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
        raise KeyError_(f"{path}: cannot load the JWKS: {exc}") from None
    out = []
    for data, jwk in entries:
        key = jwk.key
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            continue  # private keys have no place in a verification set
        if jwk.public_key_use not in (None, "sig"):
            continue
        base = VerifyKey.of(key, jwk.key_id)
        alg = data.get("alg")
        algs = (alg,) if alg in base.algorithms else base.algorithms
        out.append(VerifyKey(base.kid, key, algs))
    if not out:
        raise KeyError_(f"{path}: the JWKS holds no EC or RSA signing key")
    return out
