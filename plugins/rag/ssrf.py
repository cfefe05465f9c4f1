"""Fetching URLs a user names without letting them reach inside the network (SSRF).

Every hop (the first URL and each redirect) is resolved here, every address
it resolves to must be public, and the connection goes to the address that
was checked (no second lookup an attacker's DNS could answer differently).
Private, loopback, link-local (cloud metadata at 169.254.169.254), shared,
reserved, multicast and unspecified addresses are refused, including IPv4
written in odd notations and IPv4 inside IPv6. Operators may trust given
hosts (`RAG_URL_ALLOWED_HOSTS`, `host` or `host:port`), e.g. an intranet wiki.
Bodies are capped in bytes and reads in time.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from app.errors import ApiError

Resolver = Callable[[str, int], list[str]]
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "LunaOS-RAG/1.0 (+https://github.com/lunaos)"


class SsrfBlocked(ApiError):
    status, code, message = 400, "SSRF_BLOCKED", "That address may not be fetched."


class FetchFailed(ApiError):
    status, code, message = 502, "FETCH_FAILED", "The URL could not be fetched."


class TooLarge(ApiError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "The fetched content is too large."


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # seconds for connecting and between bytes; the whole fetch gets 3x
    max_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5


@dataclass
class Fetched:
    url: str  # after redirects
    status: int
    content_type: str
    body: bytes


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise FetchFailed(f"Could not resolve {host!r}: {error}.", details={"host": host}) from None
    return [info[4][0] for info in infos]


def blocked_reason(address: str) -> str | None:
    """Why this IP must not be fetched, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return blocked_reason(str(embedded))
    for test, reason in ((ip.is_loopback, "loopback"), (ip.is_link_local, "link-local (cloud metadata)"),
                         (ip.is_unspecified, "unspecified"), (ip.is_multicast, "multicast"),
                         (ip.is_private, "private"), (ip.is_reserved, "reserved"),
                         (not ip.is_global, "not a public address")):
        if test:
            return reason
    return None


def _host_allowed(host: str, port: int, allowed: Iterable[str]) -> bool:
    host = host.lower().strip("[]")
    for entry in allowed:
        entry = entry.lower().strip()
        if entry == host or entry == f"{host}:{port}":
            return True
    return False


def check_url(url: str, allowed_hosts: Iterable[str] = (), resolve: Resolver = system_resolver) -> tuple[str, int, str]:
    """Validate one URL; returns (host, port, address to connect to). Raises SsrfBlocked."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SsrfBlocked("The URL is malformed.", details={"url": url}) from None
    if parts.scheme not in ("http", "https"):
        raise SsrfBlocked("Only http and https URLs may be fetched.", details={"url": url, "scheme": parts.scheme})
    host = parts.hostname
    if not host:
        raise SsrfBlocked("The URL has no host.", details={"url": url})
    if parts.username or parts.password:
        raise SsrfBlocked("URLs with credentials are refused.", details={"url": url})
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    if not addresses:
        raise FetchFailed(f"{host!r} has no address.", details={"host": host})
    if _host_allowed(host, port, allowed_hosts):
        return host, port, addresses[0]
    for address in addresses:
        reason = blocked_reason(address)
        if reason:
            raise SsrfBlocked(f"{host} resolves to a {reason} address ({address}); it may not be fetched.",
                              details={"url": url, "host": host, "address": address, "reason": reason})
    return host, port, addresses[0]


def fetch(url: str, limits: Limits, *, allowed_hosts: Iterable[str] = (), headers: dict[str, str] | None = None,
          resolve: Resolver = system_resolver, trusted_hosts: Iterable[str] = ()) -> Fetched:
    """GET `url` following redirects, each hop checked; the body at most `limits.max_bytes`.

    `trusted_hosts` are exempt and receive `headers` (e.g. a token); other hosts get no caller headers.
    """
    import urllib3

    allowed = list(allowed_hosts)
    trusted = list(trusted_hosts)
    deadline = time.monotonic() + limits.timeout * 3
    for _hop in range(limits.max_redirects + 1):
        parts = urlsplit(url)
        port_hint = parts.port if parts.port else (443 if parts.scheme == "https" else 80)
        is_trusted = bool(parts.hostname) and _host_allowed(parts.hostname or "", port_hint, trusted)
        host, port, address = check_url(url, [*allowed, *trusted], resolve)
        default_port = (parts.scheme == "https" and port == 443) or (parts.scheme == "http" and port == 80)
        request_headers = {"Host": host if default_port else f"{host}:{port}", "User-Agent": USER_AGENT,
                           "Accept-Encoding": "gzip, deflate"}
        if is_trusted and headers:
            request_headers.update(headers)
        timeout = urllib3.Timeout(connect=limits.timeout, read=limits.timeout)
        if parts.scheme == "https":
            import certifi

            pool: Any = urllib3.HTTPSConnectionPool(address, port, timeout=timeout, retries=False,
                                                    server_hostname=host, assert_hostname=host,
                                                    cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            response = pool.urlopen("GET", target, headers=request_headers, redirect=False, retries=False,
                                    preload_content=False, decode_content=True)
        except urllib3.exceptions.HTTPError as error:
            pool.close()
            raise FetchFailed(f"Could not fetch {url}: {type(error).__name__}.", details={"url": url}) from None
        try:
            if response.status in REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise FetchFailed(f"{url} redirected without a Location.", details={"url": url})
                url = urljoin(url, location)
                continue
            if response.status >= 400:
                raise FetchFailed(f"{url} answered HTTP {response.status}.",
                                  details={"url": url, "status": response.status})
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise TooLarge(f"{url} is {int(declared)} bytes; the limit is {limits.max_bytes}.",
                               details={"url": url, "max_bytes": limits.max_bytes})
            body = bytearray()
            try:
                for piece in response.stream(64 * 1024, decode_content=True):
                    body += piece
                    if len(body) > limits.max_bytes:
                        raise TooLarge(f"{url} is larger than {limits.max_bytes} bytes.",
                                       details={"url": url, "max_bytes": limits.max_bytes})
                    if time.monotonic() > deadline:
                        raise FetchFailed(f"Fetching {url} took too long.", details={"url": url})
            except urllib3.exceptions.HTTPError as error:
                raise FetchFailed(f"Reading {url} failed: {type(error).__name__}.", details={"url": url}) from None
            return Fetched(url=url, status=response.status,
                           content_type=response.headers.get("Content-Type", ""), body=bytes(body))
        finally:
            response.release_conn()
            pool.close()
    raise FetchFailed(f"Too many redirects (more than {limits.max_redirects}).", details={"url": url})
