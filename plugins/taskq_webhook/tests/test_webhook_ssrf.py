"""The SSRF policy: refused addresses at submit (422) and at run time, the allow-list, redirects."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError
from taskq_webhook import WebhookInput, WebhookRefusedError, WebhookSettings
from taskq_webhook.addresses import literal_address, parse_networks, refusal
from webhook_receiver import Receiver, Reply, Send

from taskq_core import PermanentError

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "10.1.2.3": "private",
    "172.20.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "100.64.0.1": "carrier-grade NAT",
    "0.0.0.0": "unspecified",
    "224.0.0.251": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.1": "documentation",
    "198.18.0.1": "benchmarking",
    "::": "unspecified",
    "::1": "loopback",
    "::ffff:127.0.0.1": "IPv4-mapped",
    "::ffff:8.8.8.8": "IPv4-mapped",  # mapped addresses are refused whatever they map to
    "::127.0.0.1": "IPv4-compatible",
    "fe80::1": "link-local",
    "fd00:ec2::254": "unique local",
    "fc00::1": "unique local",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "2002:a00:1::1": "private IPv4",  # 6to4 around 10.0.0.1
    "2002:7f00:1::": "loopback IPv4",  # 6to4 around 127.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 around 169.254.169.254
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7": "not globally routable",  # Teredo, 8.8.8.8
    "2001:db8::1": "documentation",
}
ALLOWED = ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1"]


@pytest.mark.parametrize(("address", "reason"), REFUSED.items())
def test_refused_addresses(address: str, reason: str) -> None:
    found = refusal(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_opens_only_its_networks() -> None:
    allowed = parse_networks("10.20.0.0/16, 127.0.0.1,fd00::/8")
    assert refusal(ipaddress.ip_address("10.20.3.4"), allowed) is None
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("fd00::5"), allowed) is None
    assert refusal(ipaddress.ip_address("10.21.0.1"), allowed) == "private"
    assert refusal(ipaddress.ip_address("127.0.0.2"), allowed) == "loopback"
    # Allowing 127.0.0.1 does not allow its IPv4-mapped spelling.
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) == "IPv4-mapped IPv6"


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "10.0.0.1/8", "intranet", "::1/129"])
def test_a_bad_allow_list_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="CIDR"):
        parse_networks(bad)
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"allowed_networks": bad})


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("169.254.169.254.", "169.254.169.254"),
        ("example.com", None),
        ("1.2.3.example", None),
        ("123", "0.0.0.123"),
    ],
)
def test_literal_addresses_in_every_spelling(host: str, address: str | None) -> None:
    found = literal_address(host)
    assert (str(found) if found else None) == address


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.8:8443/hook",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::1]/",
        "http://2130706433/",
        "http://127.1/",
        "http://0x7f.0.0.1/",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
    ],
)
def test_a_literal_refused_address_is_a_validation_error(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookInput.model_validate({"url": url})
    (error,) = caught.value.errors()
    assert error["loc"] == ("url",)
    assert "webhooks may not reach it" in error["msg"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///path", "host"),
        ("/relative", "only http:// and https://"),
        ("http://example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_url_shape(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WebhookInput.model_validate({"url": url})


def test_the_allow_list_applies_at_submit_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    assert WebhookInput.model_validate({"url": "http://127.0.0.1:9/"}).url == "http://127.0.0.1:9/"
    with pytest.raises(ValidationError):
        WebhookInput.model_validate({"url": "http://[::ffff:127.0.0.1]:9/"})


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",  # a name resolving to 127.0.0.1 (/etc/hosts)
        "127.1",
        "2130706433",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "169.254.169.254",
        "10.255.255.1",
    ],
)
def test_refused_targets_fail_at_run_time_without_a_request(
    receiver: Receiver, send: Send, host: str
) -> None:
    # As a worker would see an input accepted under another allow-list (or a name's new address).
    url = receiver.url(host=host)
    with pytest.raises(WebhookRefusedError, match="refused to send to") as caught:
        send({"url": url}, allowed="", unchecked=True)
    assert isinstance(caught.value, PermanentError)
    assert "TASKQ_WEBHOOK_ALLOWED_NETWORKS" in str(caught.value)
    assert receiver.received == []


def test_a_name_resolving_to_loopback_says_so(receiver: Receiver, send: Send) -> None:
    with pytest.raises(WebhookRefusedError, match=r"localhost \(resolves to 127\.0\.0\.1\)"):
        send({"url": receiver.url(host="localhost")}, allowed="")


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://127.0.0.2:1/",  # loopback, but outside the allowed 127.0.0.1/32
        "http://user:pw@example.com/",
        "file:///etc/passwd",
    ],
)
def test_a_redirect_to_a_refused_target_is_refused(
    receiver: Receiver, send: Send, location: str
) -> None:
    receiver.replies["/hook"] = Reply(status=307, headers={"Location": location})
    with pytest.raises(WebhookRefusedError):
        send({"url": receiver.url(host="localhost")}, allowed="127.0.0.1/32")
    assert [r.path for r in receiver.received] == ["/hook"]


def test_a_redirect_from_https_to_http_is_refused(tls_receiver: Receiver, send: Send) -> None:
    plain = tls_receiver.url("/x", host="localhost").replace("https:", "http:")
    tls_receiver.replies["/hook"] = Reply(status=308, headers={"Location": plain})
    with pytest.raises(WebhookRefusedError, match="plain http"):
        send({"url": tls_receiver.url(host="localhost")})
