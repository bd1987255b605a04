"""The token endpoint's form parser: any bytes give a dict of encodable strings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.api.token_form import parse_form


def test_fields_and_repeats() -> None:
    form = parse_form(b"grant_type=password&username=a%20b&password=&scope=x&scope=y")
    assert form == {"grant_type": "password", "username": "a b", "password": "",
                    "scope": "y"}


def test_invalid_utf8_raw_or_percent_encoded_is_replaced() -> None:
    form = parse_form(b"username=\xff&password=%ed%a0%80&%ff=1")
    assert form == {"username": "\ufffd", "password": "\ufffd\ufffd\ufffd", "\ufffd": "1"}


FORMS = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40))).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=300), FORMS))
def test_any_body_parses_to_encodable_strings(body: bytes) -> None:
    form = parse_form(body)
    for key, value in form.items():
        key.encode()  # a log line, a token claim, a bcrypt input: none may fail
        value.encode()
