"""Repository name and tag grammar of the distribution-spec."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.oci.errors import NameInvalid, TagInvalid
from dockyard.oci.reference import (
    MAX_NAME_LENGTH,
    fallback_tag,
    is_tag,
    is_valid_tag,
    names,
    subject_of,
    validate_name,
    validate_tag,
)

NAME_ALPHABET = string.ascii_lowercase + string.digits + "._-/"
TAG_ALPHABET = string.ascii_letters + string.digits + "._-"


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "0",
        "library/ubuntu",
        "my-org/my_repo/sub.path",
        "a__b",
        "a---b",
        "a.b_c-d",
        "x/y/z/w/v",
        "1/2/3",
        "a" * MAX_NAME_LENGTH,
        "/".join(["ab"] * 85),  # 254 characters
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "a" * (MAX_NAME_LENGTH + 1), "/".join(["ab"] * 86)])
def test_length_limits(name: str) -> None:
    with pytest.raises(NameInvalid):
        validate_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "Library/ubuntu",  # upper case
        "libraryA",
        "a..b",
        "a.-b",
        "a___b",  # three underscores: not `_` nor `__`
        "a_-b",
        ".a",
        "a.",
        "-a",
        "a-",
        "_a",
        "a_",
        "a//b",  # empty component
        "/a",
        "a/",  # trailing slash
        "a/b/",
        "a%2Fb",  # url-encoded slash
        "a\n",  # trailing newline
        "a\nb",
        " a",
        "a b",
        "a:b",
        "a@b",
        "ä",
        "a/../b",
        "a/./b",
        "..",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid) as info:
        validate_name(name)
    assert info.value.code == "NAME_INVALID"


@pytest.mark.parametrize(
    "tag",
    ["latest", "v1.2.3", "_underscore", "A", "0", "a" * 128, "1.0-rc.1_build", "UPPER-lower"],
)
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    ["", "a" * 129, ".hidden", "-dash", "a:b", "a/b", "a b", "a\n", "a+b", "ü", "a@b"],
)
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(TagInvalid) as info:
        validate_tag(tag)
    assert info.value.code == "TAG_INVALID"


def test_is_tag_tells_digests_from_tags() -> None:
    assert is_tag("latest")
    assert not is_tag("sha256:" + "0" * 64)


# --- properties --------------------------------------------------------------

_alnum = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
_separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def _component(draw: st.DrawFn) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(_separator), draw(_alnum)]
    return "".join(parts)


@st.composite
def valid_names(draw: st.DrawFn) -> str:
    components = draw(st.lists(_component(), min_size=1, max_size=5))
    name = "/".join(components)
    if len(name) > MAX_NAME_LENGTH:
        name = name[:MAX_NAME_LENGTH].rstrip("._-/")
    return name


_SPEC_NAME = re.compile(
    r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
)


@given(valid_names())
def test_generated_valid_names_are_accepted(name: str) -> None:
    # guard the generator itself against the spec's regular expression
    if not _SPEC_NAME.fullmatch(name):
        return
    assert validate_name(name) == name


@given(
    st.text(alphabet=NAME_ALPHABET, max_size=30),
    st.characters().filter(lambda c: c not in NAME_ALPHABET),
    st.text(alphabet=NAME_ALPHABET, max_size=30),
)
def test_names_with_a_foreign_character_are_rejected(head: str, bad: str, tail: str) -> None:
    with pytest.raises(NameInvalid):
        validate_name(head + bad + tail)


@given(st.text(alphabet=NAME_ALPHABET, max_size=300))
def test_names_agree_with_the_spec_grammar(name: str) -> None:
    expected = bool(_SPEC_NAME.fullmatch(name)) and len(name) <= MAX_NAME_LENGTH
    if expected:
        assert validate_name(name) == name
    else:
        with pytest.raises(NameInvalid):
            validate_name(name)


@given(
    st.sampled_from(string.ascii_letters + string.digits + "_"),
    st.text(alphabet=TAG_ALPHABET, max_size=127),
)
def test_generated_valid_tags_are_accepted(first: str, rest: str) -> None:
    assert validate_tag(first + rest) == first + rest


@given(
    st.text(alphabet=TAG_ALPHABET, max_size=20),
    st.characters().filter(lambda c: c not in TAG_ALPHABET),
    st.text(alphabet=TAG_ALPHABET, max_size=20),
)
def test_tags_with_a_foreign_character_are_rejected(head: str, bad: str, tail: str) -> None:
    with pytest.raises(TagInvalid):
        validate_tag(head + bad + tail)


HEX = "ab" * 32


@pytest.mark.parametrize(("tag", "subject"), [
    (f"sha256-{HEX}", f"sha256:{HEX}"),
    (f"sha256-{HEX}.sig", f"sha256:{HEX}"),
    (f"sha256-{HEX}.att", f"sha256:{HEX}"),
    (f"sha512-{'cd' * 64}.sbom", f"sha512:{'cd' * 64}"),
    (f"sha512-{'cd' * 32}", f"sha512:{'cd' * 32}"),  # the schema's cut: 64 hex
    ("latest", None),
    (f"sha256-{HEX[:-1]}", None),  # not a whole digest
    (f"sha256-{HEX.upper()}", None),  # digests are lower-case hex
    (f"v1-sha256-{HEX}", None),
    (f"sha256-{HEX}.", None),
])
def test_subject_of_reads_the_digest_an_attached_tag_names(tag: str, subject: str | None
                                                            ) -> None:
    assert subject_of(tag) == subject


def test_fallback_tag_is_what_subject_of_reads_back() -> None:
    assert fallback_tag(f"sha256:{HEX}") == f"sha256-{HEX}"
    assert subject_of(fallback_tag(f"sha256:{HEX}")) == f"sha256:{HEX}"
    # a sha512 subject: the hex cut to 64 characters (the whole made no valid tag)
    long = f"sha512:{'ef' * 64}"
    tag = fallback_tag(long)
    assert tag == f"sha512-{'ef' * 32}"
    assert is_valid_tag(tag)
    subject = subject_of(tag)
    assert subject is not None
    assert names(subject, long)
    assert not names(subject, f"sha512:{'00' * 32}{'ef' * 32}")
    assert not names(f"sha256:{HEX}", f"sha256:{HEX[:-2]}00")
