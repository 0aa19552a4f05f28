"""Each function's AWS calls checked against its own IAM role (docs/local-stack.md, "IAM audit").

moto does not check IAM in a way our policies can rely on (docs/local-stack.md says why), so
the check is done beside it: every request the moto server handles is recorded with the caller's
access key and the IAM checks it needs (`aws_calls.CallRecorder`), each function's worker signs
with credentials of its own role (moto's STS AssumeRole on the role the template gives it), and
the calls are decided against that role's policies from the translated template
(`iam_policies.policies_from_template`) by a real IAM policy evaluator,
`@cloud-copilot/iam-simulate` (tools/iam/evaluate.mjs, installed by `make iam-evaluator`).

The interface for the local stack::

    audit = FunctionCallAudit.from_template(prepared.cfn, DeployedStack(...))
    audit.install(endpoint_url)                # start recording (after the moto server is up)
    env = audit.credentials_for("IntakeFunction")
    # -> {"AWS_ACCESS_KEY_ID": ..., "AWS_SECRET_ACCESS_KEY": ..., "AWS_SESSION_TOKEN": ...}
    #    for that function's worker: distinct per function, so its calls are attributed to it
    ...                                        # run jobs
    report = audit.report()                    # AuditReport: report.ok, report.format()
    audit.uninstall()

`calls()` is everything recorded. The stack's own setup clients and the pollers' Lambda Invoke
calls sign with the static "testing" keys and moto's Step Functions interpreter with "ak": those
calls are recorded but belong to no function (the pollers' SQS calls use their function's role).
`report()` evaluates only the calls signed with a function's credentials and lists every call its
role would deny, every granted action it never used, and every call whose IAM checks the
recorder could not derive.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from imagejobs_tools.local.aws_calls import Access, ArnContext, CallRecorder, RecordedCall, moto_secret_arn
from imagejobs_tools.local.iam_policies import (
    DeployedStack,
    FunctionPolicies,
    NamedPolicy,
    policies_from_template,
)

EVALUATOR_DIR = Path(__file__).resolve().parents[3] / "tools" / "iam"
EVALUATOR_SCRIPT = "evaluate.mjs"
EVALUATOR_TIMEOUT_SECONDS = 300
# The keys the stack's own clients use; moto checks no credentials while IAM is not enforced.
SETUP_KEY = "testing"
ALLOWED = "Allowed"


class IamEvaluatorError(RuntimeError):
    """The IAM evaluator is missing or failed; the message says how to fix it."""


@dataclass(frozen=True)
class Principal:
    """Who makes requests: an assumed-role session, its policies, and the request context AWS sets."""

    arn: str
    account_id: str
    policies: tuple[NamedPolicy, ...]
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """iam-simulate's answer for one request."""

    decision: str  # Allowed, ImplicitlyDenied, ExplicitlyDenied, or Invalid (refused by iam-simulate)
    error: str | None
    # (policy index, statement index, the statement's action patterns that matched) per allowing statement
    allowed_by: tuple[tuple[int, int, tuple[str, ...]], ...]


class IamEvaluator:
    """tools/iam/evaluate.mjs in a `node` subprocess: one run decides a whole batch of requests."""

    def __init__(self, directory: Path = EVALUATOR_DIR, node: str = "node") -> None:
        self.directory = directory
        self.node = node

    def decide(
        self, principals: Mapping[str, Principal], requests: Sequence[tuple[str, Access]]
    ) -> list[Decision]:
        """One Decision per (principal name, access) request, in order."""
        if not requests:
            return []
        node = shutil.which(self.node)
        if node is None:
            raise IamEvaluatorError(f"{self.node!r} is not on PATH: the IAM evaluator needs Node.js")
        if not (self.directory / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir():
            raise IamEvaluatorError(
                f"{self.directory}: iam-simulate is not installed: run `make iam-evaluator`"
            )
        document = {
            "principals": {
                name: {
                    "arn": p.arn,
                    "accountId": p.account_id,
                    "policies": [
                        {"name": str(i), "document": policy.document} for i, policy in enumerate(p.policies)
                    ],
                    "context": dict(p.context),
                }
                for name, p in principals.items()
            },
            "requests": [
                {"principal": name, "action": access.action, "resource": access.resource}
                for name, access in requests
            ],
        }
        completed = subprocess.run(
            [node, EVALUATOR_SCRIPT],
            cwd=self.directory,
            input=json.dumps(document),
            capture_output=True,
            text=True,
            timeout=EVALUATOR_TIMEOUT_SECONDS,
            check=False,
        )
        if completed.returncode != 0:
            raise IamEvaluatorError(
                f"{EVALUATOR_SCRIPT} failed ({completed.returncode}): {completed.stderr.strip()}"
            )
        results = json.loads(completed.stdout)["results"]
        return [
            Decision(
                r["decision"],
                r.get("error"),
                tuple((int(a["policy"]), int(a["statement"]), tuple(a["actions"])) for a in r["allowedBy"]),
            )
            for r in results
        ]


@dataclass(frozen=True)
class DeniedCall:
    """An IAM check a function's role would not pass, with how often and by which operations."""

    function: str
    action: str
    resource: str
    decision: str  # ImplicitlyDenied, ExplicitlyDenied, or Invalid
    operations: tuple[str, ...]  # "service:Operation" of the calls that needed it
    count: int
    error: str | None = None  # why iam-simulate refused it (decision Invalid)


@dataclass(frozen=True)
class UnusedGrant:
    """An action an Allow statement grants that no call of the function was allowed by."""

    function: str
    policy: str
    statement: str  # its Sid, or #index
    action: str


@dataclass(frozen=True)
class UnmappedCall:
    """Calls of a function whose IAM checks the recorder could not derive (so they went unchecked)."""

    function: str
    service: str
    operation: str
    reason: str
    count: int


@dataclass
class AuditReport:
    denied: list[DeniedCall]
    unused: list[UnusedGrant]
    unmapped: list[UnmappedCall]
    checked_calls: dict[str, int]  # function -> calls evaluated
    ignored_managed_policies: dict[str, dict[str, str]]  # function -> managed policy ARN -> why

    @property
    def ok(self) -> bool:
        return not (self.denied or self.unused or self.unmapped)

    def format(self) -> str:
        """The findings, one per line (and the calls checked), for a test failure or a log."""
        lines = [
            f"IAM audit: {sum(self.checked_calls.values())} calls of {len(self.checked_calls)} functions"
        ]
        for d in self.denied:
            detail = f": {d.error}" if d.error else ""
            lines.append(
                f"DENIED {d.function}: {d.action} on {d.resource} ({d.decision}{detail}; "
                f"{d.count} calls: {', '.join(d.operations)})"
            )
        lines += [f"UNUSED {u.function}: {u.action} ({u.policy} {u.statement})" for u in self.unused]
        lines += [
            f"UNMAPPED {m.function}: {m.service}:{m.operation or '?'} ({m.count} calls): {m.reason}"
            for m in self.unmapped
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checkedCalls": self.checked_calls,
            "denied": [vars(d) | {"operations": list(d.operations)} for d in self.denied],
            "unused": [vars(u) for u in self.unused],
            "unmapped": [vars(m) for m in self.unmapped],
            "ignoredManagedPolicies": self.ignored_managed_policies,
        }


def session_principal(policies: FunctionPolicies, session_name: str) -> Principal:
    """The assumed-role session a function's calls come from, with the context AWS would set."""
    prefix, _, role_path = policies.role_arn.partition(":role/")
    account_id = prefix.rsplit(":", 1)[-1]
    partition = prefix.split(":")[1]
    role_name = role_path.rsplit("/", 1)[-1]
    return Principal(
        arn=f"arn:{partition}:sts::{account_id}:assumed-role/{role_name}/{session_name}",
        account_id=account_id,
        policies=policies.policies,
        # Lambda's SDK calls use HTTPS; the principal keys are the role's.
        context={
            "aws:SecureTransport": "true",
            "aws:PrincipalArn": policies.role_arn,
            "aws:PrincipalAccount": account_id,
        },
    )


def audit(
    calls_by_function: Mapping[str, Iterable[RecordedCall]],
    policies_by_function: Mapping[str, FunctionPolicies],
    evaluator: IamEvaluator | None = None,
) -> AuditReport:
    """Decide every function's calls against its own policies: denied checks, unused grants, and
    calls whose checks are unknown. A function with no calls has all its grants unused."""
    unknown = sorted(set(calls_by_function) - set(policies_by_function))
    if unknown:
        raise ValueError(f"calls attributed to functions with no policies: {', '.join(unknown)}")
    checks: dict[tuple[str, Access], set[str]] = {}
    counts: dict[tuple[str, Access], int] = {}
    unmapped: dict[tuple[str, str, str, str], int] = {}
    checked_calls = dict.fromkeys(policies_by_function, 0)
    for function, calls in calls_by_function.items():
        for call in calls:
            checked_calls[function] += 1
            if call.unmapped is not None:
                key = (function, call.service, call.operation, call.unmapped)
                unmapped[key] = unmapped.get(key, 0) + 1
            for access in call.accesses:
                checks.setdefault((function, access), set()).add(f"{call.service}:{call.operation}")
                counts[(function, access)] = counts.get((function, access), 0) + 1
    principals = {name: session_principal(p, name) for name, p in policies_by_function.items()}
    requests = sorted(checks, key=lambda k: (k[0], k[1].action, k[1].resource))
    decisions = (evaluator or IamEvaluator()).decide(principals, requests)
    denied = []
    used: set[tuple[str, int, int, str]] = set()
    for (function, access), decision in zip(requests, decisions, strict=True):
        if decision.decision != ALLOWED:
            denied.append(
                DeniedCall(
                    function,
                    access.action,
                    access.resource,
                    decision.decision,
                    tuple(sorted(checks[(function, access)])),
                    counts[(function, access)],
                    decision.error,
                )
            )
        for policy_index, statement_index, patterns in decision.allowed_by:
            used.update((function, policy_index, statement_index, pattern) for pattern in patterns)
    return AuditReport(
        denied=denied,
        unused=_unused_grants(policies_by_function, used),
        unmapped=[
            UnmappedCall(function, service, operation, reason, count)
            for (function, service, operation, reason), count in sorted(unmapped.items())
        ],
        checked_calls=checked_calls,
        ignored_managed_policies={
            n: dict(p.ignored_managed_policies) for n, p in policies_by_function.items()
        },
    )


def _unused_grants(
    policies_by_function: Mapping[str, FunctionPolicies], used: set[tuple[str, int, int, str]]
) -> list[UnusedGrant]:
    unused = []
    for function, policies in policies_by_function.items():
        for policy_index, policy in enumerate(policies.policies):
            statements = policy.document.get("Statement") or []
            for statement_index, statement in enumerate(
                [statements] if isinstance(statements, dict) else statements
            ):
                if statement.get("Effect") != "Allow":
                    continue
                label = statement.get("Sid") or f"#{statement_index}"
                if "NotAction" in statement:  # no pattern to match: used if it allowed anything
                    if not any(u[:3] == (function, policy_index, statement_index) for u in used):
                        unused.append(UnusedGrant(function, policy.name, label, "NotAction"))
                    continue
                actions = statement.get("Action") or []
                patterns = [actions] if isinstance(actions, str) else list(actions)
                for pattern in patterns:
                    if (function, policy_index, statement_index, pattern) not in used:
                        unused.append(UnusedGrant(function, policy.name, label, pattern))
    return unused


def function_credentials(endpoint_url: str, region: str, role_arn: str, session_name: str) -> dict[str, str]:
    """Credentials of a session of `role_arn`, from moto's STS AssumeRole (environment variable names)."""
    sts = boto3.client(
        "sts",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=SETUP_KEY,
        aws_secret_access_key=SETUP_KEY,
    )
    credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


class FunctionCallAudit:
    """Records the moto server's requests, hands each function credentials of its own role, and
    audits the calls made with them (module docstring)."""

    def __init__(
        self,
        policies: Mapping[str, FunctionPolicies],
        region: str,
        account_id: str,
        evaluator: IamEvaluator | None = None,
    ) -> None:
        self.policies = dict(policies)
        self.region = region
        self.evaluator = evaluator or IamEvaluator()
        self.recorder = CallRecorder(
            ArnContext(account_id, secret_arn=moto_secret_arn), default_region=region
        )
        self._endpoint_url: str | None = None
        self._undo: Any = None
        self._credentials: dict[str, dict[str, str]] = {}
        self._owners: dict[str, str] = {}  # access key id -> function logical id
        self._lock = threading.Lock()

    @classmethod
    def from_template(
        cls, cfn: dict[str, Any], stack: DeployedStack, evaluator: IamEvaluator | None = None
    ) -> FunctionCallAudit:
        """For every function of a translated template, as `stack` deployed it."""
        return cls(policies_from_template(cfn, stack), stack.region, stack.account_id, evaluator)

    def install(self, endpoint_url: str) -> None:
        """Start recording the requests of the moto server at `endpoint_url` (in this process)."""
        if self._undo is not None:
            raise RuntimeError("FunctionCallAudit is already installed")
        self._endpoint_url = endpoint_url
        self._undo = self.recorder.install()

    def uninstall(self) -> None:
        """Stop recording (what was recorded stays for calls() and report())."""
        if self._undo is not None:
            self._undo()
            self._undo = None

    def credentials_for(self, logical_id: str) -> dict[str, str]:
        """Environment credentials for `logical_id`'s worker: a session of its own role (the same
        ones on every call for that function)."""
        if logical_id not in self.policies:
            raise KeyError(f"{logical_id}: not a function of the audited template")
        if self._endpoint_url is None:
            raise RuntimeError("install(endpoint_url) first: credentials come from the stack's STS")
        with self._lock:
            if logical_id not in self._credentials:
                credentials = function_credentials(
                    self._endpoint_url, self.region, self.policies[logical_id].role_arn, logical_id
                )
                self._credentials[logical_id] = credentials
                self._owners[credentials["AWS_ACCESS_KEY_ID"]] = logical_id
            return dict(self._credentials[logical_id])

    def calls(self) -> list[RecordedCall]:
        """Every request recorded, whoever made it."""
        return self.recorder.calls()

    def function_calls(self) -> dict[str, list[RecordedCall]]:
        """The recorded requests signed with each function's credentials (logical id -> calls)."""
        with self._lock:
            owners = dict(self._owners)
        by_function: dict[str, list[RecordedCall]] = {name: [] for name in self.policies}
        for call in self.recorder.calls():
            owner = owners.get(call.access_key_id or "")
            if owner is not None:
                by_function[owner].append(call)
        return by_function

    def report(self) -> AuditReport:
        return audit(self.function_calls(), self.policies, self.evaluator)


# Where a stack that stops writes its audit (one JSON file per stack); tests set it for a session.
REPORT_DIR_VARIABLE = "IMAGEJOBS_IAM_REPORT_DIR"


def write_report(directory: Path, template: Path, report: AuditReport) -> Path:
    """One stack's audit, for `combine_reports` (a file per stack, named uniquely)."""
    import os
    import uuid

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"template": str(template.resolve()), **report.to_dict()}), encoding="utf-8")
    return path


@dataclass(frozen=True)
class CombinedAudit:
    """Many stacks' audits of one template: every denied call, and the grants no run used."""

    runs: int
    denied: list[dict[str, Any]]
    unmapped: list[dict[str, Any]]
    never_used: list[tuple[str, str, str, str]]  # (function, action, policy, statement)


def combine_reports(directory: Path, template: Path) -> CombinedAudit:
    reports = []
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if document["template"] == str(template.resolve()):
            reports.append(document)
    unused_sets = [
        {(u["function"], u["action"], u["policy"], u["statement"]) for u in report["unused"]}
        for report in reports
    ]
    never_used = set.intersection(*unused_sets) if unused_sets else set()
    return CombinedAudit(
        runs=len(reports),
        denied=[d for report in reports for d in report["denied"]],
        unmapped=[m for report in reports for m in report["unmapped"]],
        never_used=sorted(never_used),
    )
