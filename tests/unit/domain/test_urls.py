from __future__ import annotations

import socket
from typing import Any

import pytest
from imagejobs import urls


def resolver_for(table: dict[str, list[str]]) -> Any:
    """A getaddrinfo stand-in: host -> addresses; unknown hosts fail like DNS does."""

    def resolve(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in table[host]
        ]

    return resolve


PUBLIC = resolver_for(
    {
        "cdn.example.com": ["93.184.216.34"],
        "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
        "internal.example.com": ["10.0.0.5"],
        "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
        "meta.example.com": ["169.254.169.254"],
        "meta6.example.com": ["fd00:ec2::254"],
        "cgnat.example.com": ["100.64.1.1"],
        "mapped.example.com": ["::ffff:10.1.2.3"],
    }
)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/a.png",
        "https://cdn.example.com:8443/a.png?X-Amz-Signature=abc",
        "https://v6.example.com/x",
        "https://93.184.216.34/x.png",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/x.png",
    ],
)
def test_public_https_urls_pass(url: str) -> None:
    assert urls.check_public_https_url(url, (), PUBLIC) is None


@pytest.mark.parametrize(
    ("url", "reason_part"),
    [
        ("http://cdn.example.com/a.png", "https"),
        ("ftp://cdn.example.com/a.png", "https"),
        ("file:///etc/passwd", "host"),
        ("https://user:pw@cdn.example.com/a.png", "credentials"),
        ("https://cdn.example.com@evil.example/a.png", "credentials"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://10.1.2.3/x", "private"),
        ("https://192.168.0.1/x", "private"),
        ("https://172.16.5.4/x", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://169.254.10.10/x", "link-local"),
        ("https://0.0.0.0/x", "unspecified"),
        ("https://224.0.0.1/x", "multicast"),
        ("https://240.0.0.1/x", "reserved"),
        ("https://100.64.0.1/x", "carrier-grade"),
        ("https://2130706433/x", "loopback"),  # decimal 127.0.0.1
        ("https://0x7f000001/x", "loopback"),  # hex
        ("https://0177.0.0.1/x", "loopback"),  # octal
        ("https://127.1/x", "loopback"),  # short form
        ("https://[::1]/x", "loopback"),
        ("https://[::ffff:127.0.0.1]/x", "loopback"),  # IPv4-mapped
        ("https://[::ffff:a9fe:a9fe]/x", "metadata"),  # mapped 169.254.169.254
        ("https://[fd00:ec2::254]/x", "metadata"),
        ("https://[fe80::1]/x", "link-local"),
        ("https://[fc00::1]/x", "private"),
        ("https://[64:ff9b::a00:1]/x", "private"),  # NAT64 of 10.0.0.1
        ("https://localhost/x", "local name"),
        ("https://foo.localhost/x", "local name"),
        ("https://internal.example.com/x", "private"),
        ("https://mixed.example.com/x", "loopback"),
        ("https://meta.example.com/x", "metadata"),
        ("https://meta6.example.com/x", "metadata"),
        ("https://cgnat.example.com/x", "carrier-grade"),
        ("https://mapped.example.com/x", "private"),
        ("https://unknown.example.com/x", "does not resolve"),
        ("https://cdn.example.com/a b", "whitespace"),
        ("https://cdn.example.com/\x00", "control"),
        ("https:///nohost", "host"),
        ("https://cdn.example.com:99999/x", "valid URL"),
        ("", "non-empty"),
    ],
)
def test_unsafe_urls_are_rejected_with_a_reason(url: str, reason_part: str) -> None:
    reason = urls.check_public_https_url(url, (), PUBLIC)
    assert reason is not None
    assert reason_part in reason


def test_allow_list_exempts_exact_host_and_port_only() -> None:
    allow = ("127.0.0.1:8123",)
    assert urls.check_public_https_url("http://127.0.0.1:8123/out/a.png", allow, PUBLIC) is None
    assert urls.check_public_https_url("http://127.0.0.1:8124/out/a.png", allow, PUBLIC) is not None
    assert urls.check_public_https_url("http://localhost:8123/out/a.png", allow, PUBLIC) is not None
    # Credentials are refused even on an allow-listed host.
    assert urls.check_public_https_url("http://u:p@127.0.0.1:8123/", allow, PUBLIC) is not None


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}
        self.closed = False

    def close(self) -> None:
        self.closed = True


class ScriptedSession:
    """requests.Session stand-in answering GETs from a url -> response table."""

    def __init__(self, answers: dict[str, FakeResponse]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append((url, kwargs))
        return self.answers[url]


def test_safe_get_follows_safe_redirects_without_auto_redirects() -> None:
    session = ScriptedSession(
        {
            "https://cdn.example.com/a": FakeResponse(302, {"Location": "/b"}),
            "https://cdn.example.com/b": FakeResponse(200),
        }
    )
    response = urls.safe_get(session, "https://cdn.example.com/a", resolver=PUBLIC)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert [c[0] for c in session.calls] == ["https://cdn.example.com/a", "https://cdn.example.com/b"]
    assert all(c[1]["allow_redirects"] is False for c in session.calls)


def test_safe_get_refuses_a_redirect_into_the_metadata_service() -> None:
    session = ScriptedSession(
        {"https://cdn.example.com/a": FakeResponse(301, {"Location": "http://169.254.169.254/latest/"})}
    )
    with pytest.raises(urls.UnsafeUrlError) as excinfo:
        urls.safe_get(session, "https://cdn.example.com/a", resolver=PUBLIC)  # type: ignore[arg-type]
    assert "https" in excinfo.value.reason or "metadata" in excinfo.value.reason
    assert len(session.calls) == 1


def test_safe_get_refuses_https_redirect_to_private_host() -> None:
    session = ScriptedSession(
        {"https://cdn.example.com/a": FakeResponse(307, {"Location": "https://internal.example.com/x"})}
    )
    with pytest.raises(urls.UnsafeUrlError, match="unsafe URL"):
        urls.safe_get(session, "https://cdn.example.com/a", resolver=PUBLIC)  # type: ignore[arg-type]


def test_safe_get_stops_after_max_redirects() -> None:
    session = ScriptedSession(
        {f"https://cdn.example.com/{i}": FakeResponse(302, {"Location": f"/{i + 1}"}) for i in range(10)}
    )
    with pytest.raises(urls.UnsafeUrlError, match="redirects") as excinfo:
        urls.safe_get(session, "https://cdn.example.com/0", resolver=PUBLIC)  # type: ignore[arg-type]
    assert "more than 3 redirects" in excinfo.value.reason
    assert len(session.calls) == 4


def test_safe_get_refuses_the_first_url_without_any_request() -> None:
    session = ScriptedSession({})
    with pytest.raises(urls.UnsafeUrlError):
        urls.safe_get(session, "https://10.0.0.1/x", resolver=PUBLIC)  # type: ignore[arg-type]
    assert session.calls == []
