"""Token signing and verification: only asymmetric algorithms, the right key, iss and aud."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dockyard.auth.identity import Scope, credential_id
from dockyard.auth.jwks import load_jwks
from dockyard.auth.keys import (
    SigningKey,
    VerifyKey,
    ensure_signing_key,
    kid_for,
    load_public_keys,
    load_signing_key,
)
from dockyard.auth.tokens import InvalidToken, TokenIssuer, TokenVerifier

PUSH = Scope("repository", "a/b", frozenset({"pull", "push"}))


def _issuer(key: SigningKey) -> TokenIssuer:
    return TokenIssuer(key, issuer="dockyard", service="registry", expiration=300,
                       refresh_expiration=3600)


def _verifier(*keys: VerifyKey) -> TokenVerifier:
    return TokenVerifier(list(keys), issuer="dockyard", service="registry")


@pytest.fixture
def es256(tmp_path: Path) -> SigningKey:
    path = tmp_path / "key.pem"
    ensure_signing_key(path, "ES256")
    ensure_signing_key(path, "ES256")  # idempotent
    return load_signing_key(path, "ES256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_issue_and_verify(es256: SigningKey) -> None:
    token = _issuer(es256).access_token("alice", [PUSH]).token
    assert jwt.get_unverified_header(token)["kid"] == es256.kid
    who = _verifier(es256.verify_key()).identity(token, "10.0.0.1")
    assert who.user == "alice"
    assert who.granted(PUSH) == {"pull", "push"}
    assert who.client == "10.0.0.1"
    anonymous = _verifier(es256.verify_key()).identity(
        _issuer(es256).access_token("", []).token)
    assert anonymous.user is None
    assert anonymous.grants == ()


def test_rs256_keys(tmp_path: Path) -> None:
    path = tmp_path / "rsa.pem"
    ensure_signing_key(path, "RS256")
    key = load_signing_key(path, "RS256")
    assert key.algorithm == "RS256"
    token = _issuer(key).access_token("bob", [PUSH]).token
    assert _verifier(key.verify_key()).identity(token).user == "bob"


def test_rotation_keeps_old_public_keys(tmp_path: Path, es256: SigningKey) -> None:
    old_token = _issuer(es256).access_token("alice", [PUSH]).token
    public = tmp_path / "old.pub.pem"
    public.write_bytes(es256.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    new_path = tmp_path / "new.pem"
    ensure_signing_key(new_path, "ES256")
    new = load_signing_key(new_path, "ES256")
    verifier = _verifier(new.verify_key(), *load_public_keys(public))
    assert verifier.identity(old_token).user == "alice"
    assert verifier.identity(_issuer(new).access_token("carol", []).token).user == "carol"
    assert _verifier(new.verify_key()).keys[0].kid != es256.kid
    with pytest.raises(InvalidToken):
        _verifier(new.verify_key()).identity(old_token)


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {"iss": "dockyard", "sub": "alice", "aud": "registry",
                                 "exp": now + 60, "iat": now, "nbf": now - 1,
                                 "access": [PUSH.claim()]}
    claims.update(over)
    return claims


def test_forgeries_are_rejected(es256: SigningKey) -> None:
    verifier = _verifier(es256.verify_key())
    kid = es256.kid
    sign = es256.key
    forged = {
        "expired": jwt.encode(_claims(exp=int(time.time()) - 120), sign, "ES256",
                              headers={"kid": kid}),
        "wrong-aud": jwt.encode(_claims(aud="other"), sign, "ES256", headers={"kid": kid}),
        "wrong-iss": jwt.encode(_claims(iss="other"), sign, "ES256", headers={"kid": kid}),
        "no-exp": jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, sign,
                             "ES256", headers={"kid": kid}),
        "wrong-key": jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), "ES256",
                                headers={"kid": kid}),
        "unknown-kid": jwt.encode(_claims(), sign, "ES256", headers={"kid": "nope"}),
        "alg-none": _b64(json.dumps({"alg": "none", "kid": kid}).encode()) + "." +
        _b64(json.dumps(_claims()).encode()) + ".",
        "rs256-header-on-ec-key": jwt.encode(
            _claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256",
            headers={"kid": kid}),
        "garbage": "not.a.token",
    }
    public_pem = es256.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = _b64(json.dumps({"alg": "HS256", "kid": kid}).encode())
    body = _b64(json.dumps(_claims()).encode())
    forged["hs256-public-key"] = f"{head}.{body}." + _b64(
        hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    good = _issuer(es256).access_token("reader", [Scope("repository", "a/b",
                                                        frozenset({"pull"}))]).token
    h, _, s = good.split(".")
    forged["tampered"] = f"{h}.{body}.{s}"
    for name, token in forged.items():
        with pytest.raises(InvalidToken):
            verifier.identity(token)
        assert name  # every case raised


def test_refresh_tokens_are_not_access_tokens(es256: SigningKey) -> None:
    issuer, verifier = _issuer(es256), _verifier(es256.verify_key())
    refresh = issuer.refresh_token("alice", "cred", int(time.time()))
    assert refresh is not None
    with pytest.raises(InvalidToken):
        verifier.identity(refresh)
    assert verifier.decode(refresh, refresh=True)["sub"] == "alice"
    with pytest.raises(InvalidToken):
        verifier.decode(issuer.access_token("alice", []).token, refresh=True)


def test_external_issuer_jwks(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "idp-1", "use": "sig", "alg": "ES256"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk, {"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}))
    keys = load_jwks(path)
    assert [k.kid for k in keys] == ["idp-1"]
    verifier = TokenVerifier(keys, issuer="https://idp.example", service="registry")
    token = jwt.encode(_claims(iss="https://idp.example"), key, "ES256",
                       headers={"kid": "idp-1"})
    assert verifier.identity(token).user == "alice"
    with pytest.raises(InvalidToken):  # an HS256 token using the oct key id
        verifier.identity(jwt.encode(_claims(iss="https://idp.example"), "s" * 40, "HS256",
                                     headers={"kid": "h"}))
    assert kid_for(key.public_key()) != "idp-1"


def test_accepted_tokens_are_verified_again_after_their_expiry(
        es256: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    from dockyard.auth import tokens

    verifier = _verifier(es256.verify_key())
    calls = []
    real = verifier._identity

    def counting(token: str) -> tuple[float, object]:
        calls.append(token)
        return real(token)

    monkeypatch.setattr(verifier, "_identity", counting)
    token = _issuer(es256).access_token("alice", [PUSH]).token
    assert verifier.identity(token, "a").client == "a"
    assert verifier.identity(token, "b").client == "b"  # from the cache, with its client
    assert len(calls) == 1
    later = time.time() + 300 + tokens.LEEWAY_SECONDS + 5
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    verifier.identity(token)  # PyJWT's own clock still says valid; ours made it check
    assert len(calls) == 2


def test_refresh_tokens_carry_the_credential_and_end_with_their_chain(es256: SigningKey
                                                                      ) -> None:
    issuer = TokenIssuer(es256, issuer="dockyard", service="registry", expiration=300,
                         refresh_expiration=3600, refresh_max_lifetime=7200)
    verifier = _verifier(es256.verify_key())
    now = int(time.time())
    claims = verifier.decode(issuer.refresh_token("alice", "c1", now) or "", refresh=True)
    assert claims["cred"] == "c1"
    assert claims["auth_time"] == now
    assert now + 3590 <= claims["exp"] <= now + 3610
    # late in the chain the token expires with it, and past its end there is none
    late = verifier.decode(issuer.refresh_token("alice", "c1", now - 7000) or "",
                           refresh=True)
    assert late["exp"] == now - 7000 + 7200
    assert issuer.refresh_token("alice", "c1", now - 7200) is None
    # the credential id follows the stored hash, and does not contain it
    assert credential_id(b"$2b$04$aaa") != credential_id(b"$2b$04$aab")
    assert "aaa" not in credential_id(b"$2b$04$aaa")
