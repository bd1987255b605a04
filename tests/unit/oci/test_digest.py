"""Digest grammar and validation (OCI image-spec `descriptor.md#digests`)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.oci.digest import ALGORITHMS, Digest, new_hasher
from dockyard.oci.errors import DigestInvalid

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()


def test_parse_valid_sha256() -> None:
    d = Digest.parse(f"sha256:{EMPTY_SHA256}")
    assert d.algorithm == "sha256"
    assert d.hex == EMPTY_SHA256
    assert str(d) == f"sha256:{EMPTY_SHA256}"


def test_parse_valid_sha512() -> None:
    d = Digest.parse(f"sha512:{EMPTY_SHA512}")
    assert d.algorithm == "sha512"
    assert len(d.hex) == 128
    assert str(d) == f"sha512:{EMPTY_SHA512}"


def test_digests_compare_by_value_and_hash() -> None:
    a = Digest.parse(f"sha256:{EMPTY_SHA256}")
    b = Digest.of(b"")
    assert a == b
    assert hash(a) == hash(b)
    assert {a, b} == {a}


@pytest.mark.parametrize(
    "text",
    [
        f"sha256:{EMPTY_SHA256[:-1]}",  # 63 hex digits
        f"sha256:{EMPTY_SHA256}0",  # 65 hex digits
        f"sha256:{EMPTY_SHA512}",  # sha512-length under sha256
        f"sha512:{EMPTY_SHA256}",  # sha256-length under sha512
        f"sha512:{EMPTY_SHA512[:-1]}",
        f"sha256:{EMPTY_SHA256.upper()}",  # upper-case hex is not canonical
        f"sha256:{EMPTY_SHA256[:-1]}A",
        f"sha512:{EMPTY_SHA512.upper()}",
        f"sha256:{EMPTY_SHA256[:-1]}g",  # not hex
        f"sha256:{EMPTY_SHA256[:-1]}=",  # in the encoded alphabet, not hex
        f"sha256:{EMPTY_SHA256[:-1]}_",
    ],
)
def test_parse_rejects_bad_encoding(text: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        f"md5:{'0' * 32}",
        f"sha384:{'0' * 96}",
        f"sha256+b64u:{EMPTY_SHA256}",  # grammatical, unknown algorithm
        f"multihash+base58:{'a' * 40}",
        f"blake3:{'0' * 64}",
    ],
)
def test_parse_rejects_unknown_algorithms(text: str) -> None:
    with pytest.raises(DigestInvalid, match="unsupported digest algorithm"):
        Digest.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "sha256",
        "sha256:",
        f":{EMPTY_SHA256}",
        EMPTY_SHA256,
        f"SHA256:{EMPTY_SHA256}",  # upper-case algorithm
        f"sha256 :{EMPTY_SHA256}",
        f" sha256:{EMPTY_SHA256}",
        f"sha256:{EMPTY_SHA256} ",
        f"sha256:{EMPTY_SHA256}\n",  # trailing newline must not slip past `$`
        f"sha256::{EMPTY_SHA256}",
        f"sha256:{EMPTY_SHA256}:00",
        f"+sha256:{EMPTY_SHA256}",
        f"sha256+:{EMPTY_SHA256}",
        f"sha+-256:{EMPTY_SHA256}",
        f"sha256@{EMPTY_SHA256}",
        f"sha256:{EMPTY_SHA256[:32]}/{EMPTY_SHA256[32:]}",
    ],
)
def test_parse_rejects_bad_grammar(text: str) -> None:
    with pytest.raises(DigestInvalid, match="invalid digest format"):
        Digest.parse(text)


def test_error_code_is_digest_invalid() -> None:
    with pytest.raises(DigestInvalid) as info:
        Digest.parse("nope")
    assert info.value.code == "DIGEST_INVALID"


def test_of_default_is_sha256() -> None:
    d = Digest.of(b"hello")
    assert d.algorithm == "sha256"
    assert d.hex == hashlib.sha256(b"hello").hexdigest()


def test_of_sha512() -> None:
    assert Digest.of(b"hello", "sha512").hex == hashlib.sha512(b"hello").hexdigest()


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_hasher_matches_algorithm(algorithm: str) -> None:
    d = Digest.of(b"abc", algorithm)
    h = d.hasher()
    assert h.name == algorithm
    h.update(b"a")
    h.update(memoryview(b"bc"))
    assert h.hexdigest() == d.hex


def test_new_hasher_refuses_unknown_algorithm() -> None:
    with pytest.raises(DigestInvalid):
        new_hasher("md5")


def test_new_hasher_default_is_sha256() -> None:
    assert new_hasher().name == "sha256"


@given(st.binary(max_size=2048), st.sampled_from(sorted(ALGORITHMS)))
def test_digest_of_bytes_round_trips_through_parse(data: bytes, algorithm: str) -> None:
    d = Digest.of(data, algorithm)
    assert len(d.hex) == ALGORITHMS[algorithm]
    assert Digest.parse(str(d)) == d


@given(st.text(alphabet="0123456789abcdef", min_size=0, max_size=200))
def test_sha256_accepts_exactly_64_lower_hex(encoded: str) -> None:
    text = f"sha256:{encoded}"
    if len(encoded) == 64:
        assert Digest.parse(text).hex == encoded
    else:
        with pytest.raises(DigestInvalid):
            Digest.parse(text)


@given(st.text(max_size=140))
def test_parse_never_raises_anything_but_digest_invalid(text: str) -> None:
    try:
        d = Digest.parse(text)
    except DigestInvalid:
        return
    assert str(d) == text
