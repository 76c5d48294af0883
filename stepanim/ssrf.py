"""Guard for every URL the service calls or fetches (webhooks, img2img init images).

A URL is safe when its scheme is http or https and every address its host stands for
is a public unicast address. The host is read in every notation a resolver or a URL
parser would accept (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``,
``[::ffff:127.0.0.1]``, 6to4, NAT64 and Teredo forms), then resolved; loopback,
private, shared, link-local (cloud metadata at 169.254.169.254), multicast, reserved,
documentation and unspecified addresses are refused, also when embedded in IPv6.

Checking is not enough on its own: DNS may answer differently a second later. So
:func:`request` checks the URL again at send time and connects to the very address it
checked (the URL's host is kept for the ``Host`` header and for TLS SNI and certificate
checks), and never follows a redirect. An allow-list (``settings.outbound_allow``:
host names, addresses or networks) lets development and tests reach local receivers.

    check_url("http://0x7f000001/")  # UnsafeURL: host 0x7f000001 (= 127.0.0.1) is a loopback address
    data = safe_get(url, max_bytes=10_000_000, allowed_content_types=["image/png", "image/jpeg"])
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

SCHEMES = {"http": 80, "https": 443}
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class UnsafeURL(ValueError):
    """The URL may not be called: bad scheme, unparseable, unresolvable or not public."""


class FetchError(Exception):
    """A guarded fetch failed: refused URL, HTTP error, wrong content type or too large."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the one address the request must connect to."""

    url: str
    scheme: str
    host: str  # as written in the URL, lower-cased, without brackets
    port: int
    address: IPAddress


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host string denotes in any inet_aton/WHATWG notation, else None.

    Accepts one to four dot-separated parts, each decimal, hexadecimal (``0x``) or octal
    (leading ``0``); the last part fills the remaining bytes (``127.1`` is 127.0.0.1,
    ``2130706433`` is 127.0.0.1). A trailing dot is ignored.
    """
    text = host[:-1] if host.endswith(".") and host != "." else host
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        number = _parse_ipv4_part(part)
        if number is None:
            return None
        numbers.append(number)
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _parse_ipv4_part(part: str) -> int | None:
    if not part:
        return None
    lower = part.lower()
    try:
        if lower.startswith("0x"):
            return int(lower[2:], 16) if lower[2:] else 0
        if len(lower) > 1 and lower.startswith("0"):
            return int(lower[1:], 8)
        if lower.isdigit():
            return int(lower, 10)
    except ValueError:
        return None
    return None


def parse_ip(host: str) -> IPAddress | None:
    """An IP literal in any notation (IPv6 with or without brackets), else None."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in bare:
        if "%" in bare:
            raise UnsafeURL(f"IPv6 zone identifiers are not allowed: {host!r}")
        try:
            return ipaddress.IPv6Address(bare)
        except ValueError as e:
            raise UnsafeURL(f"not a valid IPv6 address: {host!r}") from e
    return parse_ipv4(bare)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried inside an IPv6 one (mapped, compatible, 6to4, Teredo, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why calling this address is refused, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = blocked_reason(inner)
            if reason is not None:
                return f"an IPv6 form of {inner}, {reason}"
    for flag, reason in (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address (cloud metadata lives there)"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, flag):
            return reason
    if not ip.is_global:
        return "not a public address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("192.0.0.0/24"):
        return "a special-purpose address"  # 192.0.0.8 and friends: is_global is wrong for them on 3.11
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (A and AAAA)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise UnsafeURL(f"host {host!r} cannot be resolved") from e
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class AllowList:
    """Hosts (exact names) and networks that may be called although not public."""

    names: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        names: set[str] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            text = entry.strip().lower()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            except ValueError:
                names.add(text.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


def check_url(url: str, *, allow: Sequence[str] = (), resolve: Resolver = system_resolver) -> Target:
    """Check ``url`` and choose the address to connect to; raises :class:`UnsafeURL`."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise UnsafeURL(f"not a valid URL: {e}") from e
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURL(f"scheme {scheme or '(none)'!r} is not allowed; use http or https")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeURL("the URL has no host")
    port = port or SCHEMES[scheme]
    allowed = AllowList.parse(allow)
    literal = parse_ip(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        addresses = []
        for text in resolve(host.rstrip("."), port):
            try:
                addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError as e:
                raise UnsafeURL(f"host {host!r} resolved to an invalid address {text!r}") from e
        if not addresses:
            raise UnsafeURL(f"host {host!r} has no addresses")
    named = host.rstrip(".") in allowed.names
    for ip in addresses:
        reason = blocked_reason(ip)
        if reason is not None and not named and not allowed.allows(ip):
            where = host if literal is not None and str(ip) == host else f"{host} (= {ip})"
            if literal is None:
                where = f"{host} (resolves to {ip})"
            raise UnsafeURL(f"host {where} is {reason}")
    return Target(url=url.strip(), scheme=scheme, host=host, port=port, address=addresses[0])


def request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    allow: Sequence[str] = (),
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    resolve: Resolver = system_resolver,
) -> httpx.Response:
    """Check ``url`` now, connect to the checked address, never follow redirects.

    The response is returned unread (a stream): the caller reads it, with a size limit
    (:func:`read_limited`), and closes it. Raises :class:`UnsafeURL` before any
    connection when the URL is refused.
    """
    target = check_url(url, allow=allow, resolve=resolve)
    pinned = httpx.URL(target.url).copy_with(host=str(target.address))
    sent_headers = dict(headers or {})
    name = f"[{target.host}]" if ":" in target.host else target.host
    sent_headers["host"] = name if SCHEMES[target.scheme] == target.port else f"{name}:{target.port}"
    extensions: dict[str, Any] = {"sni_hostname": target.host} if target.scheme == "https" else {}
    req = client.build_request(method, pinned, headers=sent_headers, content=content, extensions=extensions)
    return client.send(req, stream=True, follow_redirects=False)


def read_limited(response: httpx.Response, *, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` of the body, then close it; raises :class:`FetchError` beyond."""
    try:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"response is {declared} bytes, above the limit of {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"response is larger than the limit of {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        response.close()


def safe_get(
    url: str,
    *,
    max_bytes: int,
    allowed_content_types: Sequence[str],
    allow_hosts: Sequence[str] = (),
    timeout: float = 20.0,
    resolve: Resolver = system_resolver,
) -> bytes:
    """GET ``url`` through the guard and return its body.

    Refuses (``FetchError``, with the cause chained) an unsafe URL, any status but 200
    (redirects are not followed), a content type outside ``allowed_content_types``
    (compared without parameters, case-insensitively) and a body above ``max_bytes``.
    """
    allowed = {t.lower() for t in allowed_content_types}
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        try:
            response = request(client, "GET", url, allow=allow_hosts, resolve=resolve)
        except UnsafeURL as e:
            raise FetchError(f"refused URL: {e}") from e
        except httpx.HTTPError as e:
            raise FetchError(f"fetch failed: {type(e).__name__}: {e}") from e
        try:
            if response.status_code != 200:
                raise FetchError(f"fetch answered HTTP {response.status_code} (redirects are not followed)")
            content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type not in allowed:
                raise FetchError(f"content type {content_type or '(none)'!r} is not one of {sorted(allowed)}")
            return read_limited(response, max_bytes=max_bytes)
        except httpx.HTTPError as e:
            raise FetchError(f"fetch failed: {type(e).__name__}: {e}") from e
        finally:
            response.close()
