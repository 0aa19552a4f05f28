"""`imagejobs webhook verify|secret`: a receiver's check of a delivery, and where the signing secret is.

`verify` needs no stack: the secret, the headers and the raw body as received. Exit codes: 0 valid,
1 not valid (the reason printed), 2 bad arguments; `secret` as the other commands (3: no stack).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imagejobs_tools.jobcli.command import EXIT_FAILED, EXIT_OK, _guarded, _usage_error, _wrap, resolve

SECRET_ENV = "IMAGEJOBS_WEBHOOK_SECRET"
SECRET_OUTPUT = "WebhookSigningSecretArn"


class BadArgument(ValueError):
    """A flag's value that cannot be used; the message names the flag."""


def register(subparsers: Any, common: dict[str, Any]) -> None:
    webhook = subparsers.add_parser("webhook", help="check a webhook delivery; find the signing secret")
    commands = webhook.add_subparsers(dest="webhook_command", required=True, metavar="COMMAND")

    verify = commands.add_parser(
        "verify",
        help="check a delivery's signature and timestamp, as a receiver must",
        description=_wrap(
            "Check one delivery as received: its webhook-id, webhook-timestamp and webhook-signature "
            "headers against the raw body (the exact bytes received, before any parsing) and the "
            f"stack's signing secret. Prints 'valid' (exit 0), or 'invalid: <reason>' (exit 1): a "
            "missing header (named), a timestamp outside the tolerance (how far off), or a signature "
            "that does not match. The secret comes from --secret or the environment variable "
            f"{SECRET_ENV} (`imagejobs webhook secret` says how to fetch it)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--secret", help=f"the signing secret (default: ${SECRET_ENV})")
    verify.add_argument(
        "--headers", metavar="FILE",
        help="the request's headers: a JSON object, or 'Name: value' lines (as curl -D writes them)",
    )  # fmt: skip
    verify.add_argument(
        "--header", dest="header_lines", action="append", default=[], metavar="'NAME: VALUE'",
        help="one header (repeatable; added to --headers)",
    )  # fmt: skip
    verify.add_argument(
        "--body", required=True, metavar="FILE", help="the raw body as received ('-' = stdin)"
    )
    verify.add_argument(
        "--tolerance", type=_seconds, metavar="SECONDS",
        help="how far the timestamp may be from now (default: Standard Webhooks' 5 minutes)",
    )  # fmt: skip
    verify.set_defaults(func=cmd_verify)

    secret = commands.add_parser(
        "secret",
        help="say which secret signs the deliveries and how to fetch it",
        description=_wrap(
            f"Print the stack's output {SECRET_OUTPUT} (the Secrets Manager secret that signs every "
            "delivery) and the AWS CLI command that reads its value (secretsmanager:GetSecretValue)."
        ),
        **common,
    )
    secret.set_defaults(func=_guarded(cmd_secret))


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def cmd_verify(args: argparse.Namespace) -> int:
    from imagejobs.webhooks import TIMESTAMP_TOLERANCE_SECONDS, signing_key, verification_problem

    try:
        raw_secret = args.secret if args.secret is not None else os.environ.get(SECRET_ENV, "")
        if not raw_secret.strip():
            raise BadArgument(f"--secret: no signing secret given (pass --secret or set {SECRET_ENV})")
        try:
            signer = signing_key("--secret", raw_secret)
        except ValueError as exc:
            raise BadArgument(str(exc)) from None
        headers = read_headers(args.headers, args.header_lines)
        body = _read_text(args.body, "--body")
    except BadArgument as exc:
        return _usage_error(str(exc))
    tolerance = TIMESTAMP_TOLERANCE_SECONDS if args.tolerance is None else args.tolerance
    problem = verification_problem(signer, body, headers, now=datetime.now(UTC), tolerance=tolerance)
    if problem is None:
        print("valid")
        return EXIT_OK
    if problem.startswith("wrong signature") and body.endswith("\n"):
        problem += (
            "; note: the body file ends with a newline, which is checked too (save the body as received)"
        )
    print(f"invalid: {problem}")
    return EXIT_FAILED


def read_headers(path: str | None, lines: list[str]) -> dict[str, str]:
    """--headers FILE (a JSON object or 'Name: value' lines) and then each --header, by lower-case name."""
    headers: dict[str, str] = {}
    if path is not None:
        text = _read_text(path, "--headers")
        if text.lstrip().startswith("{"):
            try:
                document = json.loads(text)
            except ValueError as exc:
                raise BadArgument(f"--headers {path}: not valid JSON ({exc})") from None
            if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
                raise BadArgument(
                    f"--headers {path}: expected a JSON object of header names to string values"
                )
            headers.update({str(k).lower(): v for k, v in document.items()})
        else:
            for number, line in enumerate(text.splitlines(), 1):
                # A dump may start with the request or status line ("POST /hook HTTP/1.1").
                if not line.strip() or (number == 1 and "HTTP/" in line and ": " not in line):
                    continue
                name, value = _header_line(line, f"--headers {path} line {number}")
                headers[name] = value
    for line in lines:
        name, value = _header_line(line, "--header")
        headers[name] = value
    return headers


def _header_line(line: str, where: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon or not name.strip() or " " in name.strip():
        raise BadArgument(f"{where}: expected 'Name: value', got {line!r}")
    return name.strip().lower(), value.strip()


def _read_text(path: str, flag: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise BadArgument(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadArgument(f"{flag} {path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def cmd_secret(args: argparse.Namespace) -> int:
    from imagejobs_tools.jobcli.target import TargetError

    target = resolve(args)
    arn = target.outputs.get(SECRET_OUTPUT)
    if not arn:
        raise TargetError(
            f"{target.description} has no output {SECRET_OUTPUT} (a stack from before webhooks?)"
        )
    command = ["aws", "secretsmanager", "get-secret-value", "--secret-id", arn]
    command += ["--query", "SecretString", "--output", "text"]
    if target.region:
        command += ["--region", target.region]
    if target.endpoint_url:
        command += ["--endpoint-url", target.endpoint_url]
    print(f"{SECRET_OUTPUT}  {arn}")
    print("its value (what receivers verify with):")
    print("  " + shlex.join(command))
    return EXIT_OK
