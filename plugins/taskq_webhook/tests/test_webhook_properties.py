"""Properties of WebhookInput (hypothesis): what it refuses; what it accepts round-trips."""

from __future__ import annotations

import ipaddress
import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from taskq_webhook import WebhookInput
from taskq_webhook.addresses import refusal
from taskq_webhook.schema import RESERVED_HEADERS, encode_body

TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F)) + "\t"

header_names = st.text(TOKEN_CHARS, min_size=1, max_size=40).filter(
    lambda n: n.lower() not in RESERVED_HEADERS and not n.lower().startswith("x-taskq-")
)
header_values = st.text(PRINTABLE, max_size=80).map(lambda v: v.strip(" \t"))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=15,
)
urls = st.builds(
    "{}://{}{}/{}".format,
    st.sampled_from(["http", "https"]),
    st.sampled_from(["example.com", "hooks.example.org", "8.8.8.8", "[2606:4700::1111]"]),
    st.sampled_from(["", ":8443", ":80"]),
    st.text(string.ascii_letters + string.digits + "-._~/?=&", max_size=30),
)


def unique_names(headers: dict[str, str]) -> bool:
    return len({name.lower() for name in headers}) == len(headers)


valid_inputs = st.fixed_dictionaries(
    {"url": urls},
    optional={
        "method": st.sampled_from(["POST", "PUT", "PATCH"]),
        "headers": st.dictionaries(header_names, header_values, max_size=6).filter(unique_names),
        "body": json_values,
    },
)


@given(valid_inputs)
@settings(max_examples=200, deadline=None)
def test_valid_inputs_round_trip_through_json(data: dict[str, Any]) -> None:
    model = WebhookInput.model_validate(data)
    again = WebhookInput.model_validate_json(model.model_dump_json())
    assert again == model
    assert again.model_dump(mode="json") == model.model_dump(mode="json")
    # What is sent (and signed) is the body, exactly, as JSON.
    sent = encode_body(model.body)
    assert (json.loads(sent) if sent else None) == data.get("body")


@given(
    name=header_names,
    before=st.text(PRINTABLE, max_size=10),
    breaker=st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x0b", "\x85", "\u2028"]),
    after=st.text(PRINTABLE, max_size=10),
)
@settings(max_examples=200, deadline=None)
def test_a_header_value_with_a_line_break_or_control_is_refused(
    name: str, before: str, breaker: str, after: str
) -> None:
    value = before + breaker + after
    with pytest.raises(ValidationError) as caught:
        WebhookInput.model_validate({"url": "https://example.com/", "headers": {name: value}})
    assert caught.value.errors()[0]["loc"][0] == "headers"


@given(name=st.text(min_size=1, max_size=20).filter(lambda n: any(c not in TOKEN_CHARS for c in n)))
@settings(max_examples=100, deadline=None)
def test_a_header_name_that_is_not_a_token_is_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        WebhookInput.model_validate({"url": "https://example.com/", "headers": {name: "v"}})


@given(
    st.sampled_from(sorted(RESERVED_HEADERS)), st.sampled_from([str.lower, str.upper, str.title])
)
def test_reserved_headers_are_refused_in_any_case(name: str, case: Any) -> None:
    with pytest.raises(ValidationError, match="set by the sender"):
        WebhookInput.model_validate({"url": "https://example.com/", "headers": {case(name): "1"}})


@given(st.ip_addresses())
@settings(max_examples=300, deadline=None)
def test_submit_refuses_exactly_the_literal_addresses_the_policy_refuses(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    data = {"url": f"http://{host}/hook"}
    if refusal(address) is None:
        WebhookInput.model_validate(data)
    else:
        with pytest.raises(ValidationError, match="webhooks may not reach it"):
            WebhookInput.model_validate(data)


@given(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_nan_and_infinity_are_not_json(number: float) -> None:
    with pytest.raises(ValidationError, match="NaN and Infinity"):
        WebhookInput.model_validate({"url": "https://example.com/", "body": {"x": [number]}})
