"""URL safety: public https URLs only (no SSRF into private, loopback, link-local or metadata addresses).

``URL_ALLOW_HOSTS`` (``host:port`` entries) exempts exact hosts from the https and
address checks; it is empty on AWS and names the simulator on the local stack.

``safe_get`` checks every hop's URL, and the session's ``PinnedAddressAdapter`` checks
again the addresses each new connection actually goes to, from the one resolution it
connects with: a DNS server that answers with a public address for the check and a
private one a moment later (DNS rebinding) gets its connection refused, not made.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

Resolver = Callable[..., Sequence[tuple[Any, ...]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_REDIRECTS = 3
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class UnsafeUrlError(ValueError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"unsafe URL: {reason}")
        self.reason = reason


def _parse_ip_literal(host: str) -> IPAddress | None:
    """An IP literal in any form the OS accepts (dotted, decimal, hex, octal, short, IPv6)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(ch in "0123456789abcdefx." for ch in host):
        try:
            # inet_aton accepts 2130706433, 0x7f000001, 0177.0.0.1 and 127.1 as libc does.
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why an address must not be fetched, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in METADATA_ADDRESSES:
            return f"{address} is a cloud metadata address"
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded)
            if inner:
                return f"{address} embeds {inner}"
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    )
    for label, hit in checks:
        if hit:
            return f"{address} is a {label} address"
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT:
        return f"{address} is a carrier-grade NAT (shared) address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def _allowed(host: str, port: int, allow_hosts: Iterable[str]) -> bool:
    entry = f"{host}:{port}".lower()
    bracketed = f"[{host}]:{port}".lower()
    return any(item.lower() in (entry, bracketed) for item in allow_hosts)


def check_public_https_url(
    url: str, allow_hosts: Iterable[str] = (), resolver: Resolver = socket.getaddrinfo
) -> str | None:
    """The reason ``url`` is unsafe to fetch, or None when it is safe."""
    reason, _ = resolve_checked(url, allow_hosts, resolver)
    return reason


def resolve_checked(
    url: str, allow_hosts: Iterable[str] = (), resolver: Resolver = socket.getaddrinfo
) -> tuple[str | None, list[IPAddress]]:
    """(reason or None, the checked addresses) for ``url``."""
    if not isinstance(url, str) or not url:
        return "must be a non-empty string", []
    if len(url) > 4096:
        return "is longer than 4096 characters", []
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "contains whitespace or control characters", []
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})", []
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "has no host", []
    if "@" in parts.netloc:
        return "must not contain credentials (user:password@)", []
    if port is None:
        port = 443 if scheme == "https" else 80
    if scheme in ("http", "https") and _allowed(host, port, allow_hosts):
        return None, []
    if scheme != "https":
        return f"must use https (got {scheme or 'no'} scheme)", []
    return host_addresses(host, port, resolver)


def host_addresses(
    host: str, port: int, resolver: Resolver = socket.getaddrinfo
) -> tuple[str | None, list[IPAddress]]:
    """(reason or None, the checked addresses) for connecting to ``host``: every address it
    resolves to must be public."""
    literal = _parse_ip_literal(host)
    if literal is not None:
        problem = address_problem(literal)
        return (problem, []) if problem else (None, [literal])
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return f"host {host} is a local name", []
    try:
        infos = resolver(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"host {host} does not resolve ({exc})", []
    addresses: list[IPAddress] = []
    for info in infos:
        try:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        except ValueError:
            return f"host {host} resolves to an unparseable address", []
        problem = address_problem(address)
        if problem:
            return f"host {host} resolves to {problem}", []
        addresses.append(address)
    if not addresses:
        return f"host {host} does not resolve", []
    return None, addresses


def safe_get(
    session: requests.Session,
    url: str,
    *,
    allow_hosts: Iterable[str] = (),
    resolver: Resolver = socket.getaddrinfo,
    timeout: tuple[float, float] = (3.05, 30.0),
    max_redirects: int = MAX_REDIRECTS,
    stream: bool = True,
) -> requests.Response:
    """GET ``url`` following at most ``max_redirects`` redirects, re-checking every hop.

    Raises UnsafeUrlError when any hop is unsafe or there are too many redirects.
    """
    allow = tuple(allow_hosts)
    current = url
    for _hop in range(max_redirects + 1):
        reason = check_public_https_url(current, allow, resolver)
        if reason:
            raise UnsafeUrlError(current, reason)
        response = session.get(current, stream=stream, timeout=timeout, allow_redirects=False)
        if response.status_code not in _REDIRECT_CODES:
            return response
        location = response.headers.get("Location")
        response.close()
        if not location:
            raise UnsafeUrlError(current, f"redirect {response.status_code} without a Location header")
        current = urljoin(current, location)
    raise UnsafeUrlError(current, f"more than {max_redirects} redirects")


# -- connections pinned to checked addresses ---------------------------------------------------


def _connect_checked(
    connection: HTTPConnection, allow_hosts: tuple[str, ...], resolver: Resolver
) -> socket.socket:
    """urllib3's `_new_conn`, connecting only to addresses checked from this very resolution."""
    host = connection._dns_host.rstrip(".").lower()  # what urllib3 itself would resolve
    port = int(connection.port or 0)
    if _allowed(host, port, allow_hosts):
        try:
            targets = [str(info[4][0]) for info in resolver(host, port, 0, socket.SOCK_STREAM)]
        except OSError as exc:
            raise NewConnectionError(connection, f"Failed to resolve {host}: {exc}") from exc
    else:
        reason, addresses = host_addresses(host, port, resolver)
        if reason:
            # Not a connection error: a refusal that retrying would only repeat.
            raise UnsafeUrlError(f"{host}:{port}", reason)
        targets = [str(address) for address in addresses]
    failure: OSError | None = None
    for target in targets:
        try:
            return create_connection(
                (target, port),
                connection.timeout,
                source_address=connection.source_address,
                socket_options=connection.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                connection, f"Connection to {host} timed out. (connect timeout={connection.timeout})"
            ) from exc
        except OSError as exc:
            failure = exc
    raise NewConnectionError(connection, f"Failed to establish a new connection: {failure}")


class PinnedAddressAdapter(HTTPAdapter):
    """A requests adapter whose new connections go only to addresses checked when connecting.

    The TLS handshake still verifies the certificate against the URL's host name (SNI and
    hostname checks use ``host``; only the socket's target is the checked address). Through a
    proxy (``HTTPS_PROXY``) the socket goes to the proxy, which resolves the host itself: there
    the proxy is the egress control.
    """

    def __init__(
        self, *, allow_hosts: Iterable[str] = (), resolver: Resolver = socket.getaddrinfo, **kwargs: Any
    ) -> None:
        allow = tuple(allow_hosts)

        class CheckedHTTPConnection(HTTPConnection):
            def _new_conn(self) -> socket.socket:
                return _connect_checked(self, allow, resolver)

        class CheckedHTTPSConnection(HTTPSConnection):
            def _new_conn(self) -> socket.socket:
                return _connect_checked(self, allow, resolver)

        class CheckedHTTPConnectionPool(HTTPConnectionPool):
            ConnectionCls = CheckedHTTPConnection

        class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
            ConnectionCls = CheckedHTTPSConnection

        self._pool_classes = {"http": CheckedHTTPConnectionPool, "https": CheckedHTTPSConnectionPool}
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pool_classes)
