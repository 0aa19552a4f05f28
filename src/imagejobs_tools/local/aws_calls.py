"""Record every AWS request the in-process moto server handles, as IAM would authorise it.

`CallRecorder().install()` wraps moto's WSGI entry point (`DomainDispatcherApplication.__call__`,
which every request to a `ThreadedMotoServer` in this process passes) and returns the undo. For
each request it records a `RecordedCall`: the caller's access key id (SigV4 `Authorization`
header, or a presigned URL's `X-Amz-Credential` / `AWSAccessKeyId`), the signing service, the API
operation, the HTTP status, and the IAM checks AWS would make for it (`Access`: action + resource
ARN). The request is decoded with moto's own botocore-model router and parsers (the ones its
responses use), so operation names and parameters are boto3's.

The IAM checks come from `derive_accesses(service, operation, params, region, context)`, a table
of the operations this project's functions and tooling call (DynamoDB, SQS, S3, Step Functions,
Secrets Manager, Lambda, STS; the module constants list them). An operation it has no entry for
is recorded with `accesses == ()` and `unmapped` saying why, never dropped: the audit reports it.

Resource ARNs follow the Service Authorization Reference: a DynamoDB table ARN (`/index/NAME` for
an index Query/Scan; one check per table or item for batch and transaction calls, with the item
actions TransactWriteItems needs), S3 bucket or object ARNs (HeadObject is `s3:GetObject`, parts
and completions of a multipart upload `s3:PutObject`, a version id asks for the `...Version`
action, tags and ACLs sent with an upload their own action, a copy `s3:GetObject` on the source),
the SQS queue ARN from `QueueUrl` (batch calls authorised by the single-message action), Step
Functions state machine / execution ARNs, the secret's full ARN (a name is looked up in moto), and
Lambda function ARNs. Operations without resource types (ListQueues, ListTables, ...) check `*`.
An S3 read answered 404 also needs `s3:ListBucket`: without it AWS answers 403 instead.

The hook is private moto API (moto is pinned exactly): `check()` says clearly when it has moved.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LOG = logging.getLogger(__name__)

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's default account, the local stack's
# SigV4 signing names whose botocore service model has another name.
SERVICE_MODEL_NAMES = {"states": "stepfunctions", "monitoring": "cloudwatch", "email": "ses"}
# DynamoDB Streams signs as "dynamodb" (its IAM prefix too) but has its own API and target prefix.
STREAMS_TARGET_PREFIX = "DynamoDBStreams_"
# Signing names whose IAM action prefix differs.
IAM_PREFIXES = {"monitoring": "cloudwatch", "email": "ses"}
# Marks our wrapper, so a second install() does not wrap it again.
_MARKER = "_imagejobs_records_calls"
_LOCK = threading.Lock()


class CallRecorderError(RuntimeError):
    """moto's private API no longer has what the recorder hooks (a moto upgrade moved it)."""


class UnmappedOperation(Exception):
    """`derive_accesses` has no IAM mapping for this operation; the message says what is missing."""


@dataclass(frozen=True)
class Access:
    """One IAM check a request needs: `action` on `resource` (an ARN, or `*`)."""

    action: str
    resource: str


@dataclass(frozen=True)
class RecordedCall:
    """One request the moto server handled."""

    access_key_id: str | None  # None: unsigned
    service: str  # SigV4 signing name, e.g. "dynamodb", "states"; "" when unsigned
    operation: str  # e.g. "GetItem"; "" when the request matched no operation
    region: str
    status: int  # HTTP status moto answered with
    accesses: tuple[Access, ...] = ()
    unmapped: str | None = None  # why `accesses` is empty: no mapping, or undecodable


@dataclass(frozen=True)
class ArnContext:
    """What ARNs are built from besides the request: the account, the partition, and a lookup of a
    secret's full ARN from its name or partial ARN, `secret_arn(account, region, secret_id)`
    (None: no such secret)."""

    account_id: str = DEFAULT_ACCOUNT_ID
    partition: str = "aws"
    secret_arn: Callable[[str, str, str], str | None] = field(default=lambda account, region, secret: None)

    def regional(self, service: str, region: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{region}:{self.account_id}:{resource}"


# ------------------------------------------------------------------------------------ derivation


def derive_accesses(
    service: str,
    operation: str,
    params: Mapping[str, Any],
    region: str,
    context: ArnContext,
    status: int = 200,
) -> tuple[Access, ...]:
    """The IAM checks AWS makes for `operation` with `params` (boto3's names), signed for `service`,
    that the server answered with HTTP `status`.

    Raises UnmappedOperation for an operation the table does not cover.
    """
    derive = _DERIVERS.get(service)
    if derive is None:
        raise UnmappedOperation(f"no IAM mapping for service {service!r} ({operation})")
    accesses = derive(operation, params, region, context)
    if service == "s3" and operation in S3_READS and status == 404:
        # S3 tells a missing key (404) from a forbidden one (403) only to callers that may list
        # the bucket: code that handles "not found" needs s3:ListBucket as well.
        accesses += (Access("s3:ListBucket", f"arn:{context.partition}:s3:::{params['Bucket']}"),)
    return accesses


def _resource_free(prefix: str, operation: str) -> tuple[Access, ...]:
    return (Access(f"{prefix}:{operation}", "*"),)


DYNAMODB_RESOURCE_FREE = frozenset({"ListTables", "DescribeLimits", "DescribeEndpoints"})
# TransactWriteItems is authorised item by item, by each item's own action.
DYNAMODB_TRANSACT_WRITE_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _dynamodb(
    operation: str, params: Mapping[str, Any], region: str, context: ArnContext
) -> tuple[Access, ...]:
    def table_arn(name: str) -> str:
        return name if name.startswith("arn:") else context.regional("dynamodb", region, f"table/{name}")

    if operation in DYNAMODB_RESOURCE_FREE:
        return _resource_free("dynamodb", operation)
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return tuple(Access(f"dynamodb:{operation}", table_arn(t)) for t in params.get("RequestItems") or {})
    if operation == "TransactWriteItems":
        accesses = []
        for item in params.get("TransactItems") or []:
            ((kind, body),) = item.items()
            accesses.append(
                Access(f"dynamodb:{DYNAMODB_TRANSACT_WRITE_ACTIONS[kind]}", table_arn(body["TableName"]))
            )
        return tuple(accesses)
    if operation == "TransactGetItems":
        return tuple(
            Access("dynamodb:GetItem", table_arn(item["Get"]["TableName"]))
            for item in params.get("TransactItems") or []
        )
    if operation in DYNAMODB_STREAM_OPERATIONS:
        return (Access(f"dynamodb:{operation}", _stream_arn(operation, params)),)
    table = params.get("TableName")
    if not isinstance(table, str):
        raise UnmappedOperation(f"dynamodb {operation}: no TableName to build the resource from")
    resource = table_arn(table)
    if operation in ("Query", "Scan") and params.get("IndexName"):
        resource += f"/index/{params['IndexName']}"
    return (Access(f"dynamodb:{operation}", resource),)


# DynamoDB Streams: authorised on the stream's ARN (ListStreams on "*": it names no stream).
DYNAMODB_STREAM_OPERATIONS = frozenset({"ListStreams", "DescribeStream", "GetShardIterator", "GetRecords"})


def _stream_arn(operation: str, params: Mapping[str, Any]) -> str:
    if operation == "ListStreams":
        return "*"
    if operation == "GetRecords":
        # An iterator is opaque on AWS; moto's (and so the local stack's) starts with the stream ARN.
        iterator = str(params.get("ShardIterator") or "")
        return iterator.partition("|")[0] if iterator.startswith("arn:") else "*"
    return str(params["StreamArn"])


SQS_RESOURCE_FREE = frozenset({"ListQueues"})
# A batch call is authorised by the single-message action.
SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_AWS_QUEUE_HOST = re.compile(r"^(?:sqs\.)?(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)\.(?:queue\.)?amazonaws\.com$")


def queue_arn_from_url(queue_url: str, region: str, context: ArnContext) -> str:
    """`https://sqs.R.amazonaws.com/ACCOUNT/NAME` or a local `http://127.0.0.1:PORT/ACCOUNT/NAME`."""
    parts = urlsplit(queue_url)
    segments = parts.path.strip("/").split("/")
    if len(segments) != 2 or not segments[0].isdigit():
        raise UnmappedOperation(f"not a queue URL: {queue_url!r}")
    host = _AWS_QUEUE_HOST.match(parts.hostname or "")
    queue_region = host.group("region") if host else region
    return f"arn:{context.partition}:sqs:{queue_region}:{segments[0]}:{segments[1]}"


def _sqs(operation: str, params: Mapping[str, Any], region: str, context: ArnContext) -> tuple[Access, ...]:
    if operation in SQS_RESOURCE_FREE:
        return _resource_free("sqs", operation)
    action = f"sqs:{SQS_BATCH_ACTIONS.get(operation, operation)}"
    if operation in ("GetQueueUrl", "CreateQueue"):
        account = params.get("QueueOwnerAWSAccountId") or context.account_id
        return (Access(action, f"arn:{context.partition}:sqs:{region}:{account}:{params['QueueName']}"),)
    queue_url = params.get("QueueUrl")
    if not isinstance(queue_url, str):
        raise UnmappedOperation(f"sqs {operation}: no QueueUrl to build the resource from")
    return (Access(action, queue_arn_from_url(queue_url, region, context)),)


# Object operations: action, and the action when a VersionId is given.
S3_OBJECT_ACTIONS = {
    "GetObject": ("GetObject", "GetObjectVersion"),
    "HeadObject": ("GetObject", "GetObjectVersion"),
    "PutObject": ("PutObject", "PutObject"),
    "CreateMultipartUpload": ("PutObject", "PutObject"),
    "UploadPart": ("PutObject", "PutObject"),
    "CompleteMultipartUpload": ("PutObject", "PutObject"),
    "AbortMultipartUpload": ("AbortMultipartUpload", "AbortMultipartUpload"),
    "ListParts": ("ListMultipartUploadParts", "ListMultipartUploadParts"),
    "DeleteObject": ("DeleteObject", "DeleteObjectVersion"),
    "GetObjectTagging": ("GetObjectTagging", "GetObjectVersionTagging"),
    "PutObjectTagging": ("PutObjectTagging", "PutObjectVersionTagging"),
    "DeleteObjectTagging": ("DeleteObjectTagging", "DeleteObjectVersionTagging"),
    "GetObjectAcl": ("GetObjectAcl", "GetObjectVersionAcl"),
    "PutObjectAcl": ("PutObjectAcl", "PutObjectVersionAcl"),
    "CopyObject": ("PutObject", "PutObject"),
    "UploadPartCopy": ("PutObject", "PutObject"),
}
S3_BUCKET_ACTIONS = {
    "HeadBucket": "ListBucket",
    "ListObjects": "ListBucket",
    "ListObjectsV2": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "ListMultipartUploads": "ListBucketMultipartUploads",
    "CreateBucket": "CreateBucket",
    "DeleteBucket": "DeleteBucket",
    "GetBucketLocation": "GetBucketLocation",
    "GetBucketVersioning": "GetBucketVersioning",
    "PutBucketVersioning": "PutBucketVersioning",
    "GetBucketNotificationConfiguration": "GetBucketNotification",
    "PutBucketNotificationConfiguration": "PutBucketNotification",
    "GetBucketPolicy": "GetBucketPolicy",
    "PutBucketPolicy": "PutBucketPolicy",
    "GetBucketTagging": "GetBucketTagging",
    "PutBucketTagging": "PutBucketTagging",
}
S3_RESOURCE_FREE = {"ListBuckets": "ListAllMyBuckets"}
S3_READS = frozenset({"GetObject", "HeadObject"})
# Upload parameters that need a permission of their own besides s3:PutObject.
S3_UPLOAD_EXTRA_ACTIONS = {"Tagging": "PutObjectTagging", "ACL": "PutObjectAcl"}


def _copy_source(source: Any) -> tuple[str, str, str | None]:
    """(bucket, key, version id) of a CopySource header: `bucket/key[?versionId=V]`, URL-encoded."""
    if not isinstance(source, str):
        raise UnmappedOperation(f"s3 copy: unreadable CopySource {source!r}")
    path, _, query = source.lstrip("/").partition("?")
    bucket, _, key = unquote(path).partition("/")
    version = parse_qs(query).get("versionId", [None])[0]
    return bucket, key, version


def _s3(operation: str, params: Mapping[str, Any], region: str, context: ArnContext) -> tuple[Access, ...]:
    bucket_arn = f"arn:{context.partition}:s3:::{params.get('Bucket')}"
    if operation in S3_RESOURCE_FREE:
        return (Access(f"s3:{S3_RESOURCE_FREE[operation]}", "*"),)
    if operation in S3_BUCKET_ACTIONS:
        return (Access(f"s3:{S3_BUCKET_ACTIONS[operation]}", bucket_arn),)
    if operation == "DeleteObjects":
        return tuple(
            Access(
                "s3:DeleteObjectVersion" if item.get("VersionId") else "s3:DeleteObject",
                f"{bucket_arn}/{item['Key']}",
            )
            for item in (params.get("Delete") or {}).get("Objects") or []
        )
    if operation not in S3_OBJECT_ACTIONS:
        raise UnmappedOperation(f"no IAM mapping for s3 {operation}")
    plain, versioned = S3_OBJECT_ACTIONS[operation]
    object_arn = f"{bucket_arn}/{params.get('Key')}"
    accesses = [Access(f"s3:{versioned if params.get('VersionId') else plain}", object_arn)]
    if operation in ("PutObject", "CreateMultipartUpload", "CopyObject"):
        accesses += [
            Access(f"s3:{a}", object_arn) for p, a in S3_UPLOAD_EXTRA_ACTIONS.items() if params.get(p)
        ]
    if operation in ("CopyObject", "UploadPartCopy"):
        source_bucket, source_key, source_version = _copy_source(params.get("CopySource"))
        source_action = "s3:GetObjectVersion" if source_version else "s3:GetObject"
        accesses.append(Access(source_action, f"arn:{context.partition}:s3:::{source_bucket}/{source_key}"))
    return tuple(accesses)


STATES_RESOURCE_FREE = frozenset({"ListStateMachines", "ListActivities"})
STATES_ON_STATE_MACHINE = frozenset(
    {
        "StartExecution",
        "StartSyncExecution",
        "DescribeStateMachine",
        "ListExecutions",
        "UpdateStateMachine",
        "DeleteStateMachine",
    }
)
STATES_ON_EXECUTION = frozenset(
    {"DescribeExecution", "StopExecution", "GetExecutionHistory", "DescribeStateMachineForExecution"}
)


def _states(
    operation: str, params: Mapping[str, Any], region: str, context: ArnContext
) -> tuple[Access, ...]:
    action = f"states:{operation}"
    if operation in STATES_RESOURCE_FREE:
        return _resource_free("states", operation)
    if operation in STATES_ON_STATE_MACHINE:
        return (Access(action, str(params["stateMachineArn"])),)
    if operation in STATES_ON_EXECUTION:
        return (Access(action, str(params["executionArn"])),)
    if operation == "CreateStateMachine":
        return (Access(action, context.regional("states", region, f"stateMachine:{params['name']}")),)
    raise UnmappedOperation(f"no IAM mapping for states {operation}")


SECRETSMANAGER_RESOURCE_FREE = frozenset({"ListSecrets", "GetRandomPassword"})
SECRETSMANAGER_ON_SECRET = frozenset(
    {
        "GetSecretValue",
        "DescribeSecret",
        "PutSecretValue",
        "UpdateSecret",
        "DeleteSecret",
        "RestoreSecret",
        "ListSecretVersionIds",
        "TagResource",
        "UntagResource",
    }
)


def _secretsmanager(
    operation: str, params: Mapping[str, Any], region: str, context: ArnContext
) -> tuple[Access, ...]:
    if operation in SECRETSMANAGER_RESOURCE_FREE:
        return _resource_free("secretsmanager", operation)
    if operation not in SECRETSMANAGER_ON_SECRET:
        raise UnmappedOperation(f"no IAM mapping for secretsmanager {operation}")
    secret_id = str(params["SecretId"])
    # IAM matches a secret's full ARN (with its random suffix), however the call names it.
    arn = context.secret_arn(context.account_id, region, secret_id) or (
        secret_id if secret_id.startswith("arn:") else None
    )
    if arn is None:
        raise UnmappedOperation(f"secretsmanager {operation}: no secret {secret_id!r} to build the ARN from")
    return (Access(f"secretsmanager:{operation}", arn),)


LAMBDA_RESOURCE_FREE = frozenset({"ListFunctions", "ListEventSourceMappings", "GetAccountSettings"})
LAMBDA_ON_FUNCTION = {
    "Invoke": "InvokeFunction",
    "InvokeAsync": "InvokeFunction",
    "GetFunction": "GetFunction",
    "GetFunctionConfiguration": "GetFunctionConfiguration",
}


def lambda_function_arn(function_name: str, qualifier: str | None, region: str, context: ArnContext) -> str:
    """A Lambda FunctionName (name, `name:qualifier`, `ACCOUNT:function:name` or ARN) as an ARN."""
    if function_name.startswith("arn:"):
        arn = function_name
    elif ":function:" in function_name:
        account, _, rest = function_name.partition(":function:")
        arn = f"arn:{context.partition}:lambda:{region}:{account}:function:{rest}"
    else:
        arn = context.regional("lambda", region, f"function:{function_name}")
    return f"{arn}:{qualifier}" if qualifier else arn


def _lambda(
    operation: str, params: Mapping[str, Any], region: str, context: ArnContext
) -> tuple[Access, ...]:
    if operation in LAMBDA_RESOURCE_FREE:
        return _resource_free("lambda", operation)
    if operation not in LAMBDA_ON_FUNCTION:
        raise UnmappedOperation(f"no IAM mapping for lambda {operation}")
    arn = lambda_function_arn(str(params["FunctionName"]), params.get("Qualifier"), region, context)
    return (Access(f"lambda:{LAMBDA_ON_FUNCTION[operation]}", arn),)


def _sts(operation: str, params: Mapping[str, Any], region: str, context: ArnContext) -> tuple[Access, ...]:
    if operation in ("GetCallerIdentity", "GetSessionToken"):
        return _resource_free("sts", operation)
    if operation == "AssumeRole":
        return (Access("sts:AssumeRole", str(params["RoleArn"])),)
    raise UnmappedOperation(f"no IAM mapping for sts {operation}")


def _events(
    operation: str, params: Mapping[str, Any], region: str, context: ArnContext
) -> tuple[Access, ...]:
    if operation != "PutEvents":
        raise UnmappedOperation(f"no IAM mapping for events {operation}")

    def bus_arn(name: str) -> str:
        return name if name.startswith("arn:") else context.regional("events", region, f"event-bus/{name}")

    buses = {bus_arn(str(entry.get("EventBusName") or "default")) for entry in params.get("Entries") or []}
    return tuple(Access("events:PutEvents", arn) for arn in sorted(buses))


_DERIVERS: dict[str, Callable[[str, Mapping[str, Any], str, ArnContext], tuple[Access, ...]]] = {
    "events": _events,
    "dynamodb": _dynamodb,
    "sqs": _sqs,
    "s3": _s3,
    "states": _states,
    "secretsmanager": _secretsmanager,
    "lambda": _lambda,
    "sts": _sts,
}


# ------------------------------------------------------------------------------------ decoding


@dataclass(frozen=True)
class Signer:
    """Who signed a request, and for which service and region (from SigV4's credential scope)."""

    access_key_id: str | None
    service: str
    region: str


def request_signer(authorization: str | None, query: Mapping[str, list[str]], default_region: str) -> Signer:
    """The signer of a request: its SigV4 `Authorization` header, or a presigned URL's query."""
    scope = (authorization or "").partition("Credential=")[2].partition(",")[0]
    if not scope:
        scope = (query.get("X-Amz-Credential") or [""])[0]
    parts = scope.split("/")
    if len(parts) == 5:
        return Signer(parts[0], parts[3], parts[2])
    legacy_key = (query.get("AWSAccessKeyId") or [""])[0]
    if legacy_key:  # a SigV2 presigned URL: botocore makes those for S3 only
        return Signer(legacy_key, "s3", default_region)
    return Signer(None, "", default_region)


class CallRecorder:
    """Records every request moto's server handles in this process while installed (all threads)."""

    def __init__(self, context: ArnContext | None = None, default_region: str = "us-east-1") -> None:
        self.context = context or ArnContext(secret_arn=moto_secret_arn)
        self.default_region = default_region
        self._calls: list[RecordedCall] = []
        self._lock = threading.Lock()

    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    def install(self) -> Callable[[], None]:
        """Start recording; the returned callable stops it (call it once). One recorder at a time."""
        application = dispatcher_class()
        with _LOCK:
            original = application.__dict__["__call__"]
            if getattr(original, _MARKER, False):
                raise CallRecorderError("another CallRecorder is already installed in this process")
            recorder = self

            def recording_call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
                body = take_body(environ)
                statuses: list[int] = []

                def capturing_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
                    statuses.append(int(status.split(" ", 1)[0]))
                    return start_response(status, headers, exc_info)

                response = original(self, environ, capturing_start_response)
                recorder._record(environ, body, statuses[-1] if statuses else 0)
                return response

            setattr(recording_call, _MARKER, True)
            application.__call__ = recording_call

        def restore() -> None:
            with _LOCK:
                if application.__dict__.get("__call__") is recording_call:
                    application.__call__ = original

        return restore

    def _record(self, environ: dict[str, Any], body: bytes, status: int) -> None:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            return  # moto's own control API, not AWS
        try:
            call = self._decode(environ, body, status)
        except Exception as error:  # never fail the request: record what could not be decoded
            LOG.debug("could not decode %s %s", environ.get("REQUEST_METHOD"), path, exc_info=True)
            call = RecordedCall(
                None, "", "", self.default_region, status, unmapped=f"undecodable request: {error!r}"
            )
        with self._lock:
            self._calls.append(call)

    def _decode(self, environ: dict[str, Any], body: bytes, status: int) -> RecordedCall:
        """The RecordedCall for one WSGI request (its body already read)."""
        from moto.core.request import Request

        copy = dict(environ)
        copy["wsgi.input"] = io.BytesIO(body)
        request = Request(copy)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        signer = request_signer(request.headers.get("Authorization"), query, self.default_region)
        if not signer.service:
            return RecordedCall(
                signer.access_key_id, "", "", signer.region, status, unmapped="unsigned request"
            )
        model_name = SERVICE_MODEL_NAMES.get(signer.service, signer.service)
        if str(request.headers.get("X-Amz-Target", "")).startswith(STREAMS_TARGET_PREFIX):
            model_name = "dynamodbstreams"  # signed as dynamodb, its own API model
        try:
            operation, params = _parse(model_name, request)
        except Exception as error:
            return RecordedCall(
                signer.access_key_id,
                signer.service,
                "",
                signer.region,
                status,
                unmapped=f"no {model_name} operation matches {request.method} {request.path}: {error!r}",
            )
        prefix = IAM_PREFIXES.get(signer.service, signer.service)
        try:
            accesses = derive_accesses(prefix, operation, params, signer.region, self.context, status)
        except (UnmappedOperation, KeyError, TypeError, ValueError) as error:
            reason = str(error) if isinstance(error, UnmappedOperation) else f"{operation}: {error!r}"
            return RecordedCall(
                signer.access_key_id, signer.service, operation, signer.region, status, unmapped=reason
            )
        return RecordedCall(signer.access_key_id, signer.service, operation, signer.region, status, accesses)


def _parse(model_name: str, request: Any) -> tuple[str, dict[str, Any]]:
    """(operation, boto3-style parameters) of a request, as moto's responses parse it."""
    from moto.core.parse import PROTOCOL_PARSERS
    from moto.core.request import determine_request_protocol
    from moto.core.routing import get_service_router
    from moto.core.utils import get_service_model

    operation, uri_params = get_service_router(model_name).match(request)
    protocol = determine_request_protocol(get_service_model(model_name), request.content_type)
    parser = PROTOCOL_PARSERS[protocol](operation, map_type=dict)
    params = parser.parse(
        {
            "method": request.method,
            "values": request.values,
            "headers": request.headers,
            "body": request.data,
            "url_path": request.path,
            "url_params": uri_params,
        }
    )
    return str(operation.name), dict(params)


def route_operation(model_name: str, request: Any) -> str:
    """The API operation a request asks for, routed by moto's botocore-model router (no body parse)."""
    from moto.core.routing import get_service_router

    operation, _ = get_service_router(model_name).match(request)
    return str(operation.name)


def take_body(environ: dict[str, Any]) -> bytes:
    """Read the request body and put an unread copy back for moto."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    if environ.get("wsgi.input_terminated"):  # chunked: the stream ends where the body does
        body = stream.read()
    else:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = stream.read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return bytes(body)


def moto_secret_arn(account_id: str, region: str, secret_id: str) -> str | None:
    """The full ARN of a secret in moto's (in-process) Secrets Manager, by name or (partial) ARN."""
    from moto.secretsmanager.models import secretsmanager_backends

    secret = secretsmanager_backends[account_id][region].secrets.get(secret_id)
    return None if secret is None else str(secret.arn)


# What the recorder uses of moto: (module, attribute).
MOTO_HOOKS = (
    ("moto.moto_server.werkzeug_app", "DomainDispatcherApplication"),
    ("moto.core.request", "Request"),
    ("moto.core.request", "determine_request_protocol"),
    ("moto.core.routing", "get_service_router"),
    ("moto.core.parse", "PROTOCOL_PARSERS"),
    ("moto.core.utils", "get_service_model"),
    ("moto.secretsmanager.models", "secretsmanager_backends"),
)


def dispatcher_class() -> Any:
    import importlib

    found = {}
    for module_name, attribute in MOTO_HOOKS:
        try:
            found[attribute] = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise CallRecorderError(
                f"moto moved {module_name}.{attribute} (the AWS call recorder uses it): {error}"
            ) from error
    application = found["DomainDispatcherApplication"]
    if not callable(application.__dict__.get("__call__")):
        raise CallRecorderError(
            "moto moved DomainDispatcherApplication.__call__ (the AWS call recorder wraps it)"
        )
    return application


def check() -> None:
    """Raise CallRecorderError if the recorder can no longer hook the installed moto."""
    dispatcher_class()
