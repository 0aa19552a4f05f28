"""Output fetches connect only to addresses checked at connect time (no DNS-rebinding window).

A loopback HTTP server stands in for a private service a rebinding DNS answer points to.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from imagejobs import urls
from imagejobs.urls import PinnedAddressAdapter, UnsafeUrlError, safe_get

pytestmark = pytest.mark.integration


class Private:
    def __init__(self) -> None:
        self.hosts: list[str] = []

        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.hosts.append(self.headers.get("Host", ""))
                body = b"secret"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.accepted = 0
        original = self.server.get_request

        def counting() -> Any:
            self.accepted += 1
            return original()

        self.server.get_request = counting  # type: ignore[method-assign]


@pytest.fixture
def private() -> Iterator[Private]:
    service = Private()
    thread = threading.Thread(target=service.server.serve_forever, daemon=True)
    thread.start()
    yield service
    service.server.shutdown()
    service.server.server_close()


def rebinding_resolver(first: str, then: str) -> Any:
    """Answers `first` once (the URL check), `then` ever after (the connection)."""
    calls: list[str] = []

    def resolve(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        address = first if not calls else then
        calls.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def pinned_session(**kwargs: Any) -> requests.Session:
    session = requests.Session()
    adapter = PinnedAddressAdapter(max_retries=0, **kwargs)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def test_a_rebinding_answer_at_connect_time_is_refused_before_connecting(private: Private) -> None:
    resolver = rebinding_resolver("93.184.216.34", "127.0.0.1")
    url = f"https://rebind.example.com:{private.port}/out.png"
    assert urls.check_public_https_url(url, resolver=rebinding_resolver("93.184.216.34", "x")) is None
    with pytest.raises(UnsafeUrlError, match=r"127\.0\.0\.1 is a loopback address"):
        safe_get(pinned_session(resolver=resolver), url, resolver=resolver, timeout=(2, 2))
    # Resolved twice: for the URL check, then for the connection, whose answer is checked too.
    assert resolver.calls == ["93.184.216.34", "127.0.0.1"]
    assert private.accepted == 0 and private.hosts == []


def test_every_address_of_the_connecting_resolution_is_checked(private: Private) -> None:
    def mixed(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    with pytest.raises(UnsafeUrlError, match="loopback"):
        pinned_session(resolver=mixed).get(f"http://mixed.example.com:{private.port}/", timeout=2)
    assert private.accepted == 0


def test_the_socket_goes_to_the_adapters_answer_and_the_host_header_keeps_the_name(private: Private) -> None:
    # An allow-listed host (the simulator's case): exempt from the address check, but still
    # connected through the adapter's own resolution, which is what pinning relies on.
    host = f"sim.test:{private.port}"

    def resolve(name: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        assert name == "sim.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    session = pinned_session(allow_hosts=(host,), resolver=resolve)
    url = f"http://{host}/out.png"
    response = safe_get(session, url, allow_hosts=(host,), resolver=resolve, timeout=(2, 2))
    assert response.status_code == 200 and response.content == b"secret"
    assert private.hosts == [host]


def test_the_functions_copier_uses_pinned_connections() -> None:
    from imagejobs.config import StoreOutputsSettings
    from imagejobs.runtime import StoreOutputsRuntime

    from tests.conftest import SAMPLE_ENV

    copier = StoreOutputsRuntime(StoreOutputsSettings.from_env(SAMPLE_ENV)).copier
    assert isinstance(copier.session.get_adapter("https://cdn.example.com/x.png"), PinnedAddressAdapter)
    assert isinstance(copier.session.get_adapter("http://sim.test:1/x.png"), PinnedAddressAdapter)


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` (its own CA) and its key, made with cryptography (a moto dependency)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_https_through_a_pinned_connection_still_verifies_the_host_name(
    private: Private, tmp_path: Path
) -> None:
    # Production fetches are https: the socket goes to the checked address, while TLS (SNI and the
    # certificate's name) still uses the URL's host.
    import ssl

    cert, key = _self_signed(tmp_path, "cdn.example.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    private.server.socket = context.wrap_socket(private.server.socket, server_side=True)

    def to_loopback(name: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    def fetch(name: str) -> requests.Response:
        host = f"{name}:{private.port}"
        session = pinned_session(allow_hosts=(host,), resolver=to_loopback)
        session.trust_env = False  # the machine's CA bundle variables would override `verify`
        session.verify = str(cert)
        return safe_get(
            session, f"https://{host}/out.png", allow_hosts=(host,), resolver=to_loopback, timeout=(2, 2)
        )

    response = fetch("cdn.example.test")
    assert response.status_code == 200 and response.content == b"secret"
    with pytest.raises(requests.exceptions.SSLError):
        fetch("other.example.test")  # same address, a name the certificate does not carry
    assert private.hosts == [f"cdn.example.test:{private.port}"]
