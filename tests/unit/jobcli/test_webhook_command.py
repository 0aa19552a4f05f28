"""`imagejobs webhook verify` (a receiver's check of a delivery) and `imagejobs webhook secret`."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from imagejobs.webhooks import Delivery, signed_headers, signing_key

from imagejobs_tools.cli import main

SECRET = base64.b64encode(b"a-32-byte-signing-key-for-tests!").decode()


def _delivery(tmp_path: Path, at: datetime | None = None) -> tuple[Path, dict[str, str]]:
    """A delivery's raw body in a file, and its headers, as WebhookFunction signs them."""
    delivery = Delivery("job-1/COMPLETED", "https://hooks.example.com/h", {"data": {"status": "COMPLETED"}})
    body = delivery.body()
    path = tmp_path / "body.json"
    path.write_bytes(body.encode())
    return path, signed_headers(signing_key("s", SECRET), delivery, body, at or datetime.now(UTC))


def _flags(headers: dict[str, str]) -> list[str]:
    return [arg for name, value in headers.items() for arg in ("--header", f"{name}: {value}")]


def _verify(*args: str) -> int:
    return main(["webhook", "verify", "--secret", SECRET, *args])


def test_a_delivery_verifies_from_a_json_header_file_or_header_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body, headers = _delivery(tmp_path)
    header_file = tmp_path / "headers.json"
    header_file.write_text(json.dumps(headers))
    assert _verify("--headers", str(header_file), "--body", str(body)) == 0
    flags = _flags({name.title(): value for name, value in headers.items()})
    assert _verify(*flags, "--body", str(body)) == 0
    assert capsys.readouterr().out == "valid\nvalid\n"


def test_a_curl_style_header_dump_and_the_secret_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body, headers = _delivery(tmp_path)
    dump = tmp_path / "headers.txt"
    dump.write_text("POST /hook HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
    monkeypatch.setenv("IMAGEJOBS_WEBHOOK_SECRET", "whsec_" + SECRET)
    assert main(["webhook", "verify", "--headers", str(dump), "--body", str(body)]) == 0
    assert capsys.readouterr().out == "valid\n"


def test_an_invalid_delivery_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body, headers = _delivery(tmp_path, datetime.now(UTC) - timedelta(minutes=10))
    flags = _flags(headers)
    assert _verify(*flags, "--body", str(body)) == 1
    assert capsys.readouterr().out.startswith("invalid: timestamp too old: ")
    assert _verify(*flags, "--body", str(body), "--tolerance", "3600") == 0
    body.write_bytes(body.read_bytes() + b"\n")  # saved by an editor
    assert _verify(*flags, "--body", str(body), "--tolerance", "3600") == 1
    out = capsys.readouterr().out.splitlines()[-1]
    assert out.startswith("invalid: wrong signature") and "ends with a newline" in out
    no_id = _flags({k: v for k, v in headers.items() if k != "webhook-id"})
    assert _verify(*no_id, "--body", str(body), "--tolerance", "3600") == 1
    assert capsys.readouterr().out == "invalid: missing header webhook-id\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--secret", "", "--body", "b.json"], "--secret: no signing secret given"),
        (["--secret", "not base64!", "--body", "b.json"], "secret --secret is not a webhook signing secret"),
        (["--secret", SECRET, "--body", "missing.json"], "--body: cannot read missing.json"),
        (["--secret", SECRET, "--header", "webhook-id", "--body", "b.json"], "--header: expected 'Name: "),
        (["--secret", SECRET, "--headers", "h.json", "--body", "b.json"], "h.json: expected a JSON"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "b.json").write_text("{}")
    (tmp_path / "h.json").write_text('{"webhook-id": 7}')
    assert main(["webhook", "verify", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def local_stack_file(tmp_path: Path) -> Iterator[Path]:
    """A local-stack.json whose endpoint accepts connections (the CLI checks it is reachable)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    path = tmp_path / ".imagejobs" / "local-stack.json"
    path.parent.mkdir()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    path.write_text(json.dumps({"endpointUrl": endpoint, "region": "us-east-1", "outputs": {}}))
    yield path
    listener.close()


def test_secret_names_the_stacks_secret_and_the_command_that_reads_it(
    local_stack_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(local_stack_file.read_text())
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:WebhookSigningSecret-abc"
    local_stack_file.write_text(json.dumps(data | {"outputs": {"WebhookSigningSecretArn": arn}}))
    assert main(["webhook", "secret", "--local"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"WebhookSigningSecretArn  {arn}"
    assert out[2].split() == [
        "aws", "secretsmanager", "get-secret-value", "--secret-id", arn, "--query", "SecretString",
        "--output", "text", "--region", "us-east-1", "--endpoint-url", data["endpointUrl"],
    ]  # fmt: skip


def test_secret_of_a_stack_without_webhooks_says_so(
    local_stack_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["webhook", "secret", "--local"]) == 3
    assert "has no output WebhookSigningSecretArn" in capsys.readouterr().err
