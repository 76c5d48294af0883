"""The SSRF guard's pure logic: host notations, address classes, the allow-list."""

from __future__ import annotations

import ipaddress

import pytest

from stepanim.ssrf import UnsafeURL, blocked_reason, check_url, embedded_ipv4, parse_ip, parse_ipv4

PUBLIC = "93.184.216.34"


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise UnsafeURL(f"host {host!r} cannot be resolved")
        return table[host]

    return resolve


FAKE_DNS = resolver(
    {
        "localhost": ["127.0.0.1", "::1"],
        "hooks.example.com": [PUBLIC],
        "rebind.example.com": [PUBLIC, "10.0.0.7"],  # one bad answer is enough to refuse
        "metadata.example.com": ["169.254.169.254"],
        "v6.example.com": ["2606:4700:4700::1111"],
    }
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),  # noqa: S104
        ("0x", "0.0.0.0"),  # noqa: S104 (as browsers read it)
        ("0xa9fea9fe", "169.254.169.254"),
        ("3232235777", "192.168.1.1"),
    ],
)
def test_every_ipv4_notation_is_understood(host: str, expected: str) -> None:
    assert parse_ipv4(host) == ipaddress.IPv4Address(expected)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1.1.1", "4294967296", "08.1.1.1", "1..1", ""])
def test_names_and_out_of_range_numbers_are_not_ipv4(host: str) -> None:
    assert parse_ipv4(host) is None


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
        ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible (deprecated)
        ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
        ("64:ff9b::10.0.0.1", "10.0.0.1"),  # NAT64
        ("64:ff9b:1::c0a8:101", "192.168.1.1"),  # local-use NAT64
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo (client address inverted)
    ],
)
def test_ipv4_inside_ipv6_is_found(address: str, inner: str) -> None:
    assert embedded_ipv4(ipaddress.IPv6Address(address)) == ipaddress.IPv4Address(inner)
    assert blocked_reason(ipaddress.IPv6Address(address)) is not None


@pytest.mark.parametrize(
    ("address", "word"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),  # reserved, and is_private on this Python too
        ("100.64.0.1", "not a public"),  # carrier-grade NAT
        ("192.0.0.8", "special-purpose"),
        ("198.18.0.1", "private"),  # benchmarking
        ("192.0.2.1", "private"),  # documentation
    ],
)
def test_non_public_addresses_are_refused(address: str, word: str) -> None:
    reason = blocked_reason(ipaddress.ip_address(address))
    assert reason is not None and word in reason, reason


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001:82a::200e"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


# The table of the issue, plus a few more notations. Each must be refused before any connection.
REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://LOCALHOST./hook", "loopback"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://[::1]/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
    ("http://[::ffff:7f00:1]/", "127.0.0.1"),
    ("http://[::ffff:169.254.169.254]/", "169.254.169.254"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://metadata.example.com/", "link-local"),
    ("http://rebind.example.com/", "private"),
    ("http://unknown.invalid/", "cannot be resolved"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://example.com:70/_payload", "scheme"),
    ("gopher://127.0.0.1:70/_payload", "scheme"),
    ("ftp://example.com/", "scheme"),
    ("dict://127.0.0.1:11211/", "scheme"),
    ("http:///nohost", "no host"),
    ("http://example.com:99999/", "not a valid URL"),
]

# POST /animations reads URLs with pydantic's URL type before the guard sees them: these rows
# are refused there for another reason (a zone id is not a valid URL; "http:///nohost" becomes
# "http://nohost/", which does not resolve).
CREATE_TIME_REASON = {"http://[fe80::1%25eth0]/": "valid URL", "http:///nohost": "cannot be resolved"}


@pytest.mark.parametrize(("url", "word"), REFUSED)
def test_the_ssrf_table_is_refused(url: str, word: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url(url, resolve=FAKE_DNS)
    assert word in str(info.value), str(info.value)


def test_public_urls_pass_and_pin_the_checked_address() -> None:
    target = check_url("https://hooks.example.com/x?y=1", resolve=FAKE_DNS)
    assert (target.scheme, target.host, target.port, str(target.address)) == ("https", "hooks.example.com", 443, PUBLIC)
    assert str(check_url("http://v6.example.com:8080/", resolve=FAKE_DNS).address) == "2606:4700:4700::1111"
    assert str(check_url(f"http://{PUBLIC}/", resolve=FAKE_DNS).address) == PUBLIC


def test_the_allow_list_admits_exactly_what_it_names() -> None:
    allow = ["127.0.0.2", "10.1.0.0/16", "internal.example"]
    assert str(check_url("http://127.0.0.2:8080/", allow=allow).address) == "127.0.0.2"
    assert str(check_url("http://10.1.2.3/", allow=allow).address) == "10.1.2.3"
    dns = resolver({"internal.example": ["10.9.9.9"]})
    assert str(check_url("http://internal.example/", allow=allow, resolve=dns).address) == "10.9.9.9"
    for url in ["http://127.0.0.1/", "http://10.2.0.1/", "http://2130706433/", "file:///etc/passwd"]:
        with pytest.raises(UnsafeURL):
            check_url(url, allow=allow)


def test_ipv6_literals_need_brackets_and_a_valid_form() -> None:
    assert parse_ip("[2606:4700::1]") == ipaddress.IPv6Address("2606:4700::1")
    with pytest.raises(UnsafeURL):
        parse_ip("[::ffff:zz]")
