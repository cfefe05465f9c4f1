"""The SSRF guard: refused addresses (after DNS, on every redirect), allowed hosts, byte caps, timeouts."""
from __future__ import annotations

import pytest

from plugins.rag import ssrf

from .local_http import body, endless, local_server, redirect, stall

LIMITS = ssrf.Limits(timeout=2.0, max_bytes=64 * 1024, max_redirects=3)


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.1.2.3", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.5.4", "private"), ("192.168.1.10", "private"),
    ("169.254.169.254", "link-local (cloud metadata)"), ("fe80::1", "link-local (cloud metadata)"),
    ("fd00:ec2::254", "private"), ("100.64.0.1", "not a public address"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("::ffff:10.0.0.1", "private"), ("2002:a00:1::", "private"),
])
def test_internal_addresses_are_refused(address, reason):
    assert ssrf.blocked_reason(address) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert ssrf.blocked_reason(address) is None


@pytest.mark.parametrize("url", [
    "http://localhost:8080/admin",  # a DNS name that resolves to loopback
    "http://vm/",  # this machine's own name
    "http://2130706433/",  # 127.0.0.1 written as one number
    "http://0x7f.0.0.1/",  # ... in hexadecimal
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/internal",
])
def test_urls_reaching_inside_are_blocked_before_any_connection(url):
    with pytest.raises(ssrf.SsrfBlocked) as caught:
        ssrf.check_url(url)
    assert caught.value.code == "SSRF_BLOCKED" and caught.value.details["address"]


def test_a_name_resolving_to_a_private_address_is_blocked():
    # The name is resolved by the guard itself: whatever DNS answers is what gets checked and then used.
    def corporate_dns(host, port):
        return {"wiki.corp.example": ["93.184.216.34", "10.20.30.40"]}[host]

    with pytest.raises(ssrf.SsrfBlocked) as caught:
        ssrf.check_url("https://wiki.corp.example/page", resolve=corporate_dns)
    assert caught.value.details["address"] == "10.20.30.40"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://example.com/", "ftp://example.com/x",
                                 "http://user:secret@example.com/", "http:///nohost"])
def test_other_schemes_credentials_and_malformed_urls_are_refused(url):
    with pytest.raises(ssrf.SsrfBlocked):
        ssrf.check_url(url)


def test_an_allowed_host_is_fetched_but_a_redirect_to_another_loopback_port_is_blocked():
    with local_server() as trusted, local_server() as internal:
        internal.routes["/secret"] = body(b"internal only")
        trusted.routes["/page"] = body(b"hello from the wiki")
        trusted.routes["/hop"] = redirect("/page")
        trusted.routes["/escape"] = redirect(f"{internal.url}/secret")
        trusted.routes["/escape-by-name"] = redirect(f"http://localhost:{internal.port}/secret")
        fetched = ssrf.fetch(f"{trusted.url}/hop", LIMITS, allowed_hosts=[trusted.host])
        assert fetched.body == b"hello from the wiki" and fetched.url.endswith("/page")
        for path in ("/escape", "/escape-by-name"):
            with pytest.raises(ssrf.SsrfBlocked):
                ssrf.fetch(f"{trusted.url}{path}", LIMITS, allowed_hosts=[trusted.host])
        assert internal.requests == []  # nothing ever reached the internal server


def test_bodies_are_capped_and_slow_servers_time_out():
    with local_server() as server:
        server.routes["/declared"] = body(b"y" * (LIMITS.max_bytes + 1))
        server.routes["/endless"] = endless()
        server.routes["/slow"] = stall(5)
        server.routes["/loop"] = redirect("/loop")
        for path in ("/declared", "/endless"):
            with pytest.raises(ssrf.TooLarge):
                ssrf.fetch(f"{server.url}{path}", LIMITS, allowed_hosts=[server.host])
        quick = ssrf.Limits(timeout=0.5, max_bytes=1024, max_redirects=2)
        with pytest.raises(ssrf.FetchFailed):
            ssrf.fetch(f"{server.url}/slow", quick, allowed_hosts=[server.host])
        with pytest.raises(ssrf.FetchFailed, match="redirects"):
            ssrf.fetch(f"{server.url}/loop", quick, allowed_hosts=[server.host])
