"""Each function's IAM policies, from the translated (CloudFormation) template, as deployed locally.

`policies_from_template(cfn, stack)` finds, for every `AWS::Lambda::Function`, the
`AWS::IAM::Role` its `Role` names (samtranslator generates `<Function>Role` with the SAM policy
templates expanded; an explicit role is used as written) and gathers its identity policies: the
role's inline `Policies`, `AWS::IAM::Policy` / `AWS::IAM::ManagedPolicy` resources attached to
it (their `Condition` evaluated), and its `ManagedPolicyArns`. Every intrinsic (`Ref`,
`Fn::GetAtt`, `Fn::Sub`, `Fn::If`, `Fn::Join`, `Fn::Select`, pseudo parameters) is resolved to
the local stack's physical names and ARNs (`DeployedStack`: what `LocalStack.start()` created).

AWS managed policies are not in the template. The two the roles attach are left out, each for
the reason in `IGNORED_MANAGED_POLICIES`; any other fails loudly, so a new one is mapped or
given a reason rather than silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from imagejobs_tools.local.template import TemplateError, evaluate_condition, logical_id_of

# AWS managed policies (the name after `arn:aws:iam::aws:policy/`) left out of the audit, and why.
# AWS managed policies whose calls the handlers make, as AWS publishes them (logs actions left
# out for the reason IGNORED_MANAGED_POLICIES gives for AWSLambdaBasicExecutionRole).
AWS_MANAGED_POLICY_DOCUMENTS: dict[str, dict[str, Any]] = {
    "service-role/AWSLambdaSQSQueueExecutionRole": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                "Resource": "*",
            }
        ],
    },
    "service-role/AWSLambdaDynamoDBExecutionRole": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:ListStreams",
                ],
                "Resource": "*",
            }
        ],
    },
}
IGNORED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole": (
        "logs:CreateLogGroup/CreateLogStream/PutLogEvents, used by the Lambda runtime to ship the "
        "function's stdout, never by handler code; locally handler logs go to the stack's stdout"
    ),
    "AWSXrayWriteOnlyAccess": (
        "xray:PutTraceSegments & co, used by the X-Ray daemon that forwards the SDK's UDP segments, "
        "never by handler code; locally tracing is off (POWERTOOLS_TRACE_DISABLED)"
    ),
}
_AWS_MANAGED_POLICY = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/(?P<name>.+)$")
# `Fn::GetAtt X.Arn` from X's physical id (its Ref), by type.
ARN_FORMATS = {
    "AWS::SQS::Queue": "arn:{partition}:sqs:{region}:{account}:{queue_name}",
    "AWS::DynamoDB::Table": "arn:{partition}:dynamodb:{region}:{account}:table/{physical}",
    "AWS::S3::Bucket": "arn:{partition}:s3:::{physical}",
    "AWS::Lambda::Function": "arn:{partition}:lambda:{region}:{account}:function:{physical}",
    "AWS::IAM::Role": "arn:{partition}:iam::{account}:role/{physical}",
    "AWS::Logs::LogGroup": "arn:{partition}:logs:{region}:{account}:log-group:{physical}:*",
    "AWS::Events::EventBus": "arn:{partition}:events:{region}:{account}:event-bus/{physical}",
}
# A value removed by `Ref: AWS::NoValue` (from a list or a mapping).
_NO_VALUE = object()


@dataclass(frozen=True)
class DeployedStack:
    """What a local stack was created as: names and ids to resolve the template's intrinsics to."""

    stack_name: str
    region: str
    account_id: str
    parameters: Mapping[str, str]  # given values; the template's defaults fill the rest
    resources: Mapping[str, str]  # logical id -> physical id (CloudFormation's Ref)
    types: Mapping[str, str]  # logical id -> resource type
    partition: str = "aws"


@dataclass(frozen=True)
class NamedPolicy:
    name: str
    document: dict[str, Any]


@dataclass(frozen=True)
class FunctionPolicies:
    """The identity policies of one function's execution role."""

    logical_id: str
    role_arn: str
    policies: tuple[NamedPolicy, ...]
    ignored_managed_policies: Mapping[str, str] = field(default_factory=dict)  # ARN -> why left out


def policies_from_template(cfn: dict[str, Any], stack: DeployedStack) -> dict[str, FunctionPolicies]:
    """Every Lambda function's role policies, intrinsics resolved (function logical id -> policies)."""
    resolver = IntrinsicResolver(cfn, stack)
    resources: Mapping[str, Any] = cfn["Resources"]
    functions = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Lambda::Function" or not resolver.created(logical_id):
            continue
        role_id = logical_id_of((resource.get("Properties") or {}).get("Role"))
        if role_id is None or resources.get(role_id, {}).get("Type") != "AWS::IAM::Role":
            raise TemplateError(
                f"{logical_id}.Role: the audit needs !GetAtt <Role>.Arn of a role in this template"
            )
        functions[logical_id] = _role_policies(logical_id, role_id, resources, resolver)
    return functions


def _role_policies(
    function_id: str, role_id: str, resources: Mapping[str, Any], resolver: IntrinsicResolver
) -> FunctionPolicies:
    props = resources[role_id].get("Properties") or {}
    if props.get("PermissionsBoundary"):
        raise TemplateError(f"{role_id}.PermissionsBoundary: not evaluated by the audit")
    policies = [
        NamedPolicy(str(resolver.resolve(p["PolicyName"])), resolver.resolve(p["PolicyDocument"]))
        for p in resolver.resolve_list(props.get("Policies") or [])
    ]
    managed_arns = [str(arn) for arn in resolver.resolve_list(props.get("ManagedPolicyArns") or [])]
    customer_managed = {}
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        if kind not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") or not resolver.created(logical_id):
            continue
        attached = resource.get("Properties") or {}
        if role_id not in {logical_id_of(r) for r in attached.get("Roles") or []}:
            if kind == "AWS::IAM::ManagedPolicy":
                customer_managed[resolver.ref(logical_id)] = (logical_id, attached)
            continue
        name = attached.get("PolicyName") or attached.get("ManagedPolicyName") or logical_id
        policies.append(
            NamedPolicy(str(resolver.resolve(name)), resolver.resolve(attached["PolicyDocument"]))
        )
    ignored = {}
    for arn in managed_arns:
        if arn in customer_managed:
            logical_id, attached = customer_managed[arn]
            policies.append(NamedPolicy(logical_id, resolver.resolve(attached["PolicyDocument"])))
            continue
        match = _AWS_MANAGED_POLICY.match(arn)
        if match is not None and match.group("name") in AWS_MANAGED_POLICY_DOCUMENTS:
            policies.append(NamedPolicy(arn, AWS_MANAGED_POLICY_DOCUMENTS[match.group("name")]))
            continue
        if match is None or match.group("name") not in IGNORED_MANAGED_POLICIES:
            raise TemplateError(
                f"{role_id}.ManagedPolicyArns: {arn} is unknown to the audit: map it to its document "
                "or add it to IGNORED_MANAGED_POLICIES with the reason"
            )
        ignored[arn] = IGNORED_MANAGED_POLICIES[match.group("name")]
    role_arn = f"arn:{resolver.stack.partition}:iam::{resolver.stack.account_id}:role{props.get('Path', '/')}"
    return FunctionPolicies(function_id, role_arn + resolver.ref(role_id), tuple(policies), ignored)


class IntrinsicResolver:
    """CloudFormation intrinsics resolved to a `DeployedStack`'s names and ARNs."""

    def __init__(self, cfn: dict[str, Any], stack: DeployedStack) -> None:
        self.cfn = cfn
        self.stack = stack
        declared = cfn.get("Parameters") or {}
        self.parameters = {
            name: str(stack.parameters.get(name, definition.get("Default", "")))
            for name, definition in declared.items()
        }
        self.pseudo = {
            "AWS::StackName": stack.stack_name,
            "AWS::Region": stack.region,
            "AWS::AccountId": stack.account_id,
            "AWS::Partition": stack.partition,
            "AWS::URLSuffix": "amazonaws.com",
        }

    def created(self, logical_id: str) -> bool:
        condition = self.cfn["Resources"][logical_id].get("Condition")
        return condition is None or evaluate_condition(self.cfn, condition, self.parameters)

    def resolve(self, node: Any) -> Any:
        resolved = self._resolve(node)
        if resolved is _NO_VALUE:
            raise TemplateError(f"AWS::NoValue where a value is needed: {node!r}")
        return resolved

    def resolve_list(self, nodes: list[Any]) -> list[Any]:
        resolved = self.resolve(nodes)
        if not isinstance(resolved, list):
            raise TemplateError(f"expected a list, got {resolved!r}")
        return resolved

    def _resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self._resolve(item) for item in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return _NO_VALUE if value == "AWS::NoValue" else self.ref(value)
            if key == "Fn::GetAtt":
                logical_id, attribute = value.split(".", 1) if isinstance(value, str) else value
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                return self._sub(value)
            if key == "Fn::If":
                condition, if_true, if_false = value
                chosen = if_true if evaluate_condition(self.cfn, condition, self.parameters) else if_false
                return self._resolve(chosen)
            if key == "Fn::Join":
                separator, items = value
                return str(separator).join(str(item) for item in self.resolve_list(items))
            if key == "Fn::Select":
                index, items = value
                return self.resolve_list(items)[int(self.resolve(index))]
            if key.startswith("Fn::"):
                raise TemplateError(f"{key}: not resolved by the audit")
        resolved = {k: self._resolve(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.stack.resources:
            return self.stack.resources[name]
        raise TemplateError(f"Ref {name}: no such parameter or created resource")

    def get_att(self, logical_id: str, attribute: str) -> str:
        physical = self.ref(logical_id)
        kind = self.stack.types.get(logical_id, "")
        if attribute == "Arn" and physical.startswith("arn:"):
            return physical  # state machines, secrets, layers, topics: their Ref is the ARN
        if attribute == "Arn" and kind in ARN_FORMATS:
            return ARN_FORMATS[kind].format(
                partition=self.stack.partition,
                region=self.stack.region,
                account=self.stack.account_id,
                physical=physical,
                queue_name=_queue_name(physical),
            )
        if kind == "AWS::SQS::Queue" and attribute == "QueueName":
            return _queue_name(physical)
        if kind == "AWS::SQS::Queue" and attribute == "QueueUrl":
            return physical
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} ({kind or 'unknown type'}): not resolved")

    def _sub(self, value: Any) -> str:
        text, variables = (value, {}) if isinstance(value, str) else value
        local = {name: str(self.resolve(node)) for name, node in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} stays ${Literal}
                return "${" + name[1:] + "}"
            if name in local:
                return local[name]
            if "." in name and name.split(".", 1)[0] not in self.pseudo:
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}]+)\}", replace, str(text))


def _queue_name(queue_url: str) -> str:
    return urlsplit(queue_url).path.rstrip("/").rsplit("/", 1)[-1]
