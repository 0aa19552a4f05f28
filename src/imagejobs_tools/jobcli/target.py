"""Where the CLI's jobs go: the local stack, a deployed stack, or explicit resources.

Resolution order (first match wins):

1. `--local` or `IMAGEJOBS_LOCAL=1`: `.imagejobs/local-stack.json` in the working directory.
2. `--stack-name NAME` (or `IMAGEJOBS_STACK_NAME`): the CloudFormation stack's Outputs.
3. `.imagejobs/local-stack.json` exists in the working directory: the local stack.
4. Only explicit `--queue-url/--table/--bucket`: those, with the default AWS session.

Explicit `--queue-url/--table/--bucket` always override what a stack provides.
Every failure is a `TargetError` with a one-line message meant for the user.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from imagejobs_tools.endpoints import connect_problem

LOCAL_STACK_FILE = Path(".imagejobs") / "local-stack.json"

# Output names from the template (docs/architecture.md, "Template outputs").
OUTPUT_QUEUE_URL = "JobsQueueUrl"
OUTPUT_TABLE_NAME = "JobsTableName"
OUTPUT_BUCKET_NAME = "OutputBucketName"

# Credentials sent to the loopback moto server: moto accepts anything, and this
# keeps a user's real AWS credentials from ever being used for the local stack.
LOCAL_CREDENTIALS = {"aws_access_key_id": "imagejobs-local", "aws_secret_access_key": "imagejobs-local"}

_REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_CREDENTIAL_ERROR_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
    }
)
_TRUTHY = frozenset({"1", "true", "yes", "on"})

SessionFactory = Callable[..., boto3.Session]


class TargetError(Exception):
    """The CLI cannot find or reach the stack; the message is one line for the user."""


@dataclass(frozen=True)
class TargetOptions:
    """What the user asked for (command-line flags and environment)."""

    local: bool = False
    stack_name: str | None = None
    region: str | None = None
    profile: str | None = None
    queue_url: str | None = None
    table_name: str | None = None
    bucket_name: str | None = None
    endpoint_url: str | None = None  # --endpoint-url, else AWS_ENDPOINT_URL


@dataclass(frozen=True)
class Target:
    """A resolved stack: where its resources are and how to build clients for them."""

    description: str  # e.g. "local stack at http://127.0.0.1:5000" or "stack 'prod' (eu-west-1)"
    region: str | None
    endpoint_url: str | None = None
    profile: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    queue_url: str | None = None
    table_name: str | None = None
    bucket_name: str | None = None
    is_local: bool = False

    def require_queue_url(self) -> str:
        return _require(self.queue_url, OUTPUT_QUEUE_URL, "--queue-url", self.description)

    def require_table_name(self) -> str:
        return _require(self.table_name, OUTPUT_TABLE_NAME, "--table", self.description)

    def require_bucket_name(self) -> str:
        return _require(self.bucket_name, OUTPUT_BUCKET_NAME, "--bucket", self.description)

    def session(self, session_factory: SessionFactory = boto3.Session) -> boto3.Session:
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.is_local:
            kwargs.update(LOCAL_CREDENTIALS)
        elif self.profile:
            kwargs["profile_name"] = self.profile
        return _make_session(session_factory, kwargs)

    def client_config(self) -> Config:
        # The local stack (or any endpoint given by URL) answers in milliseconds, or not at all;
        # AWS itself gets adaptive retries.
        if self.is_local or self.endpoint_url:
            # Path-style S3: `bucket.localhost` style hosts do not resolve everywhere.
            return Config(
                connect_timeout=2,
                read_timeout=30,
                retries={"mode": "standard", "max_attempts": 3},
                s3={"addressing_style": "path"},
            )
        return Config(connect_timeout=5, read_timeout=60, retries={"mode": "adaptive", "max_attempts": 8})


def _require(value: str | None, output_name: str, flag: str, description: str) -> str:
    if not value:
        raise TargetError(f"{description} has no output {output_name}: pass {flag}")
    return value


def options_from_env(options: TargetOptions, environ: Mapping[str, str]) -> TargetOptions:
    """Fill what the flags left open from IMAGEJOBS_LOCAL / IMAGEJOBS_STACK_NAME."""
    local = options.local or environ.get("IMAGEJOBS_LOCAL", "").strip().lower() in _TRUTHY
    stack_name = options.stack_name or environ.get("IMAGEJOBS_STACK_NAME") or None
    endpoint_url = options.endpoint_url or environ.get("AWS_ENDPOINT_URL", "").strip() or None
    return TargetOptions(
        local=local,
        stack_name=stack_name,
        region=options.region,
        profile=options.profile,
        queue_url=options.queue_url,
        table_name=options.table_name,
        bucket_name=options.bucket_name,
        endpoint_url=endpoint_url,
    )


def resolve_target(
    options: TargetOptions,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    session_factory: SessionFactory = boto3.Session,
    check_reachable: bool = True,
) -> Target:
    """Resolve the flags into a `Target`, or raise `TargetError` saying what is wrong."""
    cwd = cwd if cwd is not None else Path.cwd()
    options = options_from_env(options, os.environ if environ is None else environ)
    local_file = cwd / LOCAL_STACK_FILE

    if options.local and options.stack_name:
        raise TargetError("use either --local (or IMAGEJOBS_LOCAL=1) or --stack-name, not both")
    explicit_endpoint = options.endpoint_url if not options.local else None
    if explicit_endpoint and check_reachable:
        # Fail in a second, by name, rather than after every retry of every call.
        check_endpoint_reachable(explicit_endpoint, what="endpoint (--endpoint-url / AWS_ENDPOINT_URL)")
    if options.local or (not options.stack_name and not explicit_endpoint and local_file.exists()):
        target = load_local_target(local_file, check_reachable=check_reachable)
    elif options.stack_name:
        target = load_stack_target(
            options.stack_name, options.region, options.profile, session_factory, explicit_endpoint
        )
    elif options.queue_url or options.table_name or options.bucket_name:
        target = Target(
            description="the given resources", region=options.region, profile=options.profile, is_local=False
        )
        _validate_region(target.region)
    else:
        raise TargetError(
            f"no target: no {LOCAL_STACK_FILE} in {cwd} (start one with `imagejobs local up`), "
            "and no --stack-name NAME or --queue-url/--table/--bucket given"
        )
    return _with_overrides(target, options, explicit_endpoint)


def _with_overrides(target: Target, options: TargetOptions, endpoint_url: str | None) -> Target:
    return Target(
        description=target.description,
        region=target.region,
        endpoint_url=endpoint_url or target.endpoint_url,
        profile=target.profile,
        outputs=target.outputs,
        queue_url=options.queue_url or target.queue_url,
        table_name=options.table_name or target.table_name,
        bucket_name=options.bucket_name or target.bucket_name,
        is_local=target.is_local,
    )


def load_local_target(path: Path, *, check_reachable: bool = True) -> Target:
    """Read the local stack file and check its endpoint answers."""
    if not path.exists():
        raise TargetError(
            f"no local stack: {path} does not exist (run `imagejobs local up` in {path.parent.parent})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TargetError(f"{path}: cannot read the local stack file: {exc}") from exc
    if not isinstance(data, dict):
        raise TargetError(f"{path}: expected a JSON object")
    endpoint_url = data.get("endpointUrl")
    if not isinstance(endpoint_url, str) or not endpoint_url.startswith(("http://", "https://")):
        raise TargetError(f"{path}: endpointUrl must be an http(s) URL, got {endpoint_url!r}")
    region = data.get("region") or "us-east-1"
    outputs = data.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise TargetError(f"{path}: outputs must be a JSON object")
    if check_reachable:
        check_endpoint_reachable(endpoint_url)
    string_outputs = {str(k): str(v) for k, v in outputs.items() if v is not None}
    return Target(
        description=f"local stack at {endpoint_url}",
        region=str(region),
        endpoint_url=endpoint_url,
        outputs=string_outputs,
        queue_url=string_outputs.get(OUTPUT_QUEUE_URL),
        table_name=string_outputs.get(OUTPUT_TABLE_NAME),
        bucket_name=string_outputs.get(OUTPUT_BUCKET_NAME),
        is_local=True,
    )


def check_endpoint_reachable(
    endpoint_url: str, timeout: float = 1.0, what: str = "local stack endpoint"
) -> None:
    """A TCP connect to the endpoint, so a stale local-stack.json (or a wrong URL) fails fast and clearly."""
    reason = connect_problem(endpoint_url, timeout)
    if reason is not None:
        raise TargetError(
            f"{what} {endpoint_url} is not reachable ({reason}): is `imagejobs local up` running?"
        )


def load_stack_target(
    stack_name: str,
    region: str | None,
    profile: str | None,
    session_factory: SessionFactory = boto3.Session,
    endpoint_url: str | None = None,
) -> Target:
    """Read a deployed stack's Outputs through CloudFormation."""
    _validate_region(region)
    kwargs: dict[str, Any] = {"region_name": region}
    if profile:
        kwargs["profile_name"] = profile
    session = _make_session(session_factory, kwargs)
    try:
        cloudformation = session.client("cloudformation", endpoint_url=endpoint_url)
        region = cloudformation.meta.region_name
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except botocore.exceptions.ClientError as exc:
        raise _stack_client_error(exc, stack_name, region) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise _botocore_error(exc, f"reading stack '{stack_name}'") from exc
    if not stacks:
        raise TargetError(f"stack '{stack_name}' does not exist in region {region}")
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", []) if "OutputKey" in o}
    description = f"stack '{stack_name}' ({region})"
    if not outputs:
        raise TargetError(
            f"{description} has no outputs (status {stack.get('StackStatus', '?')}): "
            "is it an imagejobs stack, fully deployed?"
        )
    return Target(
        description=description,
        region=region,
        profile=profile,
        outputs=outputs,
        queue_url=outputs.get(OUTPUT_QUEUE_URL),
        table_name=outputs.get(OUTPUT_TABLE_NAME),
        bucket_name=outputs.get(OUTPUT_BUCKET_NAME),
    )


def _make_session(session_factory: SessionFactory, kwargs: dict[str, Any]) -> boto3.Session:
    try:
        return session_factory(**kwargs)
    except botocore.exceptions.ProfileNotFound as exc:
        raise TargetError(f"AWS profile not found: {kwargs.get('profile_name')}") from exc


def _validate_region(region: str | None) -> None:
    if region is not None and not _REGION_PATTERN.match(region):
        raise TargetError(f"--region {region!r} is not an AWS region name (like us-east-1)")


def _stack_client_error(
    exc: botocore.exceptions.ClientError, stack_name: str, region: str | None
) -> TargetError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    message = error.get("Message", str(exc))
    if code == "ValidationError" and "does not exist" in message:
        return TargetError(
            f"stack '{stack_name}' does not exist in region {region} (check --stack-name and --region)"
        )
    if code in _CREDENTIAL_ERROR_CODES:
        return TargetError(f"AWS rejected the credentials ({code}): {message}")
    if code in {"AccessDenied", "AccessDeniedException"}:
        return TargetError(f"not allowed to read stack '{stack_name}' ({code}): {message}")
    return TargetError(f"reading stack '{stack_name}' failed ({code}): {message}")


def _botocore_error(exc: botocore.exceptions.BotoCoreError, doing: str) -> TargetError:
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return TargetError(
            f"no AWS credentials found while {doing}: set a profile (--profile / AWS_PROFILE) "
            "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return TargetError(f"no AWS region while {doing}: pass --region or set AWS_REGION")
    if isinstance(exc, botocore.exceptions.InvalidRegionError):
        return TargetError(f"invalid AWS region while {doing}: {exc}")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return TargetError(f"cannot connect while {doing}: {exc} (wrong --region, or no network?)")
    return TargetError(f"{doing} failed: {exc}")


def describe_aws_error(exc: Exception, doing: str) -> str:
    """One line for any boto error raised while a command talks to the stack."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        message = error.get("Message", str(exc))
        if code in _CREDENTIAL_ERROR_CODES:
            return f"AWS rejected the credentials while {doing} ({code}): {message}"
        if code in {"ResourceNotFoundException", "AWS.SimpleQueueService.NonExistentQueue", "NoSuchBucket"}:
            return f"{doing} failed: resource not found ({code}): {message}"
        return f"{doing} failed ({code}): {message}"
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return str(_botocore_error(exc, doing))
    return f"{doing} failed: {exc}"
