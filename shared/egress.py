"""The SSRF guard for every outbound request to a caller-supplied URL (webhooks, input images).

``GuardedTransport`` resolves the host once, requires every A/AAAA answer to be a global address (after
unwrapping IPv4-mapped IPv6; loopback, private, link-local, CGNAT 100.64/10 and metadata addresses are
refused) and then connects to exactly the address it checked (the URL is pinned to it; ``Host`` and TLS SNI
keep the name), so a DNS answer that changes between check and connect cannot redirect the request.
Redirect hops pass through the transport again and are checked the same way. Operators can allow-list
hosts or networks (the quick start allows loopback for its local webhook receiver).

``refusal_reason`` is the cheap check the API runs at submit time for what can be known without DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from shared.errors import ImageJobsError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host, port → the addresses it resolves to
Resolver = Callable[[str, int], list[str]]

#: refused even where ``is_global`` would say otherwise (metadata services, CGNAT, "this network")
DENIED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in ("0.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "fd00:ec2::254/128", "::/128", "::1/128")
)
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


class EgressRefusedError(ImageJobsError):
    """An outbound request to a caller-supplied URL was refused by the SSRF guard."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressRefusedError(f"cannot resolve {host!r}: {exc}") from None
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


@dataclass(frozen=True)
class EgressPolicy:
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=system_resolver)

    @classmethod
    def from_lists(
        cls, *, hosts: Iterable[str], networks: Iterable[str], resolver: Resolver | None = None
    ) -> EgressPolicy:
        return cls(
            allow_hosts=frozenset(host.lower() for host in hosts),
            allow_networks=tuple(ipaddress.ip_network(net, strict=False) for net in networks),
            resolver=resolver or system_resolver,
        )

    def address_allowed(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allow_networks if network.version == address.version):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self.address_allowed(address.ipv4_mapped)
        if any(address in network for network in DENIED_NETWORKS if network.version == address.version):
            return False
        return address.is_global

    def pin(self, url: httpx.URL) -> str | None:
        """The checked address to connect to, or None for an allow-listed host; refuses everything else."""
        if url.scheme not in ("http", "https"):
            raise EgressRefusedError(f"scheme {url.scheme!r} is not allowed (http and https only)")
        if url.userinfo:
            raise EgressRefusedError("URLs with credentials are not allowed")
        host = url.host.lower()
        if host in self.allow_hosts:
            return None
        port = url.port or (443 if url.scheme == "https" else 80)
        literal = _literal_address(host) or _legacy_ipv4(host)
        answers = [str(literal)] if literal is not None else self.resolver(host, port)
        if not answers:
            raise EgressRefusedError(f"{host!r} does not resolve")
        addresses = [ipaddress.ip_address(answer) for answer in answers]
        refused = [str(address) for address in addresses if not self.address_allowed(address)]
        if refused:
            raise EgressRefusedError(f"{host!r} resolves to a non-public address ({', '.join(refused)})")
        return str(addresses[0])


class GuardedTransport(httpx.BaseTransport):
    """Checks and pins every request (and every redirect hop) before handing it to ``inner``."""

    def __init__(self, policy: EgressPolicy, inner: httpx.BaseTransport | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pinned = self._policy.pin(request.url)
        if pinned is None:
            return self._inner.handle_request(request)
        host = f"[{pinned}]" if ":" in pinned else pinned
        pinned_request = httpx.Request(
            request.method,
            request.url.copy_with(host=host.strip("[]")),
            headers=request.headers,  # keeps the original Host header
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": request.url.host},
        )
        return self._inner.handle_request(pinned_request)

    def close(self) -> None:
        self._inner.close()


def guarded_client(policy: EgressPolicy, *, timeout: httpx.Timeout, max_redirects: int = 0) -> httpx.Client:
    """An httpx client for caller-supplied URLs: guarded, no proxies from the environment."""
    return httpx.Client(
        transport=GuardedTransport(policy),
        timeout=timeout,
        trust_env=False,
        follow_redirects=max_redirects > 0,
        max_redirects=max(max_redirects, 1),
    )


def refusal_reason(url: str, policy: EgressPolicy) -> str | None:
    """Why ``url`` is refused without resolving it (scheme, credentials, a blocked literal address), or None."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"not a valid URL ({exc})"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "must be an http(s) URL"
    if parsed.userinfo:
        return "must not contain credentials"
    host = parsed.host.lower()
    if host in policy.allow_hosts:
        return None
    address = _literal_address(host) or _legacy_ipv4(urlsplit(url).hostname or "")
    if address is not None and not policy.address_allowed(address):
        return f"points at a non-public address ({address})"
    if address is None and (host in _LOCAL_NAMES or host.endswith(".localhost")):
        return "points at this machine"
    return None


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _legacy_ipv4(host: str) -> IPAddress | None:
    """Decimal, hex, octal and short IPv4 forms (``2130706433``, ``0x7f000001``, ``127.1``, ``0``)."""
    if not host or not all(part.isalnum() for part in host.split(".")):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
