"""Which webhook URLs Meterline may POST to.

A deployed stack must never be turned into a proxy into its own network (invariant 7): a URL is
refused when its host is, or resolves to, a loopback, private, link-local, metadata or otherwise
non-public address. The URL is checked when a report is created (`check_url`) and again, with a
fresh DNS lookup, right before each delivery (`vetted_addresses`); the sender then connects only to
the addresses that second check returned, so a name re-pointed in between cannot reach inside.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from meterline.errors import FieldError, InvalidInput
from meterline.settings import webhook_allow_loopback

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_SHARED_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_WHITESPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
LOOPBACK = "a loopback address"


class RefusedEndpoint(Exception):
    """The URL may not be delivered to; the message says why (no secret is ever part of it)."""


@dataclass(frozen=True)
class Target:
    """The parts of a checked URL a sender needs: `host` is ASCII (IDNA) without IPv6 brackets."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    ip: IPAddress | None  # the host itself when it is an IP literal


def parse_target(url: str) -> Target:
    """Split a webhook URL into a `Target`, or raise RefusedEndpoint naming what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise RefusedEndpoint("is not a URL")
    if len(url) > MAX_URL_LENGTH:
        raise RefusedEndpoint(f"is longer than {MAX_URL_LENGTH} characters")
    if _WHITESPACE_OR_CONTROL.search(url):
        raise RefusedEndpoint("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        # urlsplit rejects bad IPv6 brackets; .port rejects non-numeric and out-of-range ports.
        reason = "has a bad port" if "port" in str(error).lower() else "is not a URL"
        raise RefusedEndpoint(reason) from None
    if not parts.scheme:
        raise RefusedEndpoint("is not a URL")
    if parts.scheme not in ("https", "http"):
        raise RefusedEndpoint("must use https")
    if "@" in parts.netloc:
        raise RefusedEndpoint("must not contain a user name or password")
    if not parts.hostname:
        raise RefusedEndpoint("has no host")
    if port == 0:
        raise RefusedEndpoint("has a bad port")
    if "#" in url:
        raise RefusedEndpoint("must not contain a fragment")

    host = parts.hostname.rstrip(".")
    ip = _ip_literal(host)
    if ip is None:
        host = _ascii_hostname(host)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, str(ip) if ip else host, port or default_port, path, ip)


def refusal_reason(ip: IPAddress) -> str | None:
    """Why connecting to `ip` is refused ("a private address", ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4-mapped, 6to4 and NAT64 addresses reach the IPv4 address they carry.
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        embedded = ip.ipv4_mapped or ip.sixtofour or nat64
        if embedded is not None and (reason := refusal_reason(embedded)):
            return reason
    if ip in _METADATA:
        return "the instance metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return LOOPBACK
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _SHARED_CGNAT:
        return "a carrier-grade NAT address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private or getattr(ip, "is_site_local", False):
        return "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


@dataclass(frozen=True)
class EndpointPolicy:
    """Where webhooks may go. `allow_loopback` is for local development only: it lets http:// and
    loopback addresses (127.0.0.0/8, ::1) through, and nothing else that is refused otherwise."""

    allow_loopback: bool = False

    @classmethod
    def from_env(cls) -> EndpointPolicy:
        return cls(allow_loopback=webhook_allow_loopback())

    def check_url(self, url: str, field: str = "endpoint.url") -> None:
        """At report creation: raise InvalidInput naming `field` when `url` may not receive webhooks.
        A hostname that does not resolve is accepted (DNS may be down for a moment); it is looked
        up again before every delivery."""
        try:
            self._vet(url, must_resolve=False)
        except RefusedEndpoint as refused:
            reason = str(refused)
            raise InvalidInput(f"{field} {reason}", [FieldError(field, reason)]) from None

    def vetted_addresses(self, url: str) -> list[tuple[str, int]]:
        """At send time: the (ip, port) pairs the sender may connect to. Raises RefusedEndpoint when
        the URL breaks a rule, does not resolve, or any address it resolves to is refused."""
        return self._vet(url, must_resolve=True)

    def _vet(self, url: str, *, must_resolve: bool) -> list[tuple[str, int]]:
        target = parse_target(url)
        if target.scheme == "http" and not self.allow_loopback:
            raise RefusedEndpoint("must use https")
        if target.ip is None:
            self._check_name(target.host)
            addresses = _resolve(target.host, target.port)
            if not addresses and must_resolve:
                raise RefusedEndpoint(f"host {target.host} does not resolve")
            subject = f"host {target.host} resolves to"
        else:
            addresses = [target.ip]
            subject = f"host {target.host} is"
        for ip in addresses:
            reason = refusal_reason(ip)
            if reason and not (self.allow_loopback and reason == LOOPBACK):
                raise RefusedEndpoint(f"{subject} {reason}")
        if target.scheme == "http" and not (addresses and all(refusal_reason(ip) == LOOPBACK for ip in addresses)):
            raise RefusedEndpoint("must use https (http is allowed only for loopback addresses)")
        return [(str(ip), target.port) for ip in addresses]

    def _check_name(self, host: str) -> None:
        # RFC 6761 keeps "localhost" on this machine; ".internal" names are AWS's (and others') private DNS.
        if host == "localhost" or host.endswith(".localhost"):
            if not self.allow_loopback:
                raise RefusedEndpoint(f"host {host} is a loopback name")
        elif host == "internal" or host.endswith(".internal"):
            raise RefusedEndpoint(f"host {host} is an internal name")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _ascii_hostname(host: str) -> str:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise RefusedEndpoint("has a host that is not a valid hostname") from None
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in ascii_host.split(".")):
        raise RefusedEndpoint("has a host that is not a valid hostname")
    return ascii_host


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (in resolver order, without repeats); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses
