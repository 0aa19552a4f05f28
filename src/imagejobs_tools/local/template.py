"""Turn a SAM `template.yaml` into a CloudFormation template moto can create.

Everything the local stack creates is derived from the template: local
`CodeUri`/`ContentUri` are rewritten to a bootstrap S3 object (as
`sam package` would), `DefinitionUri` is inlined, then samtranslator runs
offline. The code locations are remembered so Lambda invocations can be
dispatched to the handler files in this checkout.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SERVERLESS_LAYER = "AWS::Serverless::LayerVersion"
SERVERLESS_STATE_MACHINE = "AWS::Serverless::StateMachine"
# Prefix of the outputs the local stack adds so moto's CloudFormation resolves
# intrinsics it would otherwise drop (DefinitionSubstitutions).
RESOLVE_OUTPUT_PREFIX = "ZzLocalResolve"


class TemplateError(ValueError):
    """The template cannot be run locally; the message names the resource and field."""


@dataclass(frozen=True)
class FunctionSource:
    """Where a function's handler lives in this checkout."""

    logical_id: str
    code_dir: Path
    handler: str  # "module.attribute", e.g. "app.lambda_handler"

    @property
    def module_file(self) -> Path:
        module, _, _ = self.handler.rpartition(".")
        return self.code_dir / (module.replace(".", "/") + ".py")

    @property
    def handler_attribute(self) -> str:
        return self.handler.rpartition(".")[2]


@dataclass(frozen=True)
class SqsEventSource:
    """An SQS → Lambda mapping as declared in the template."""

    function_logical_id: str
    queue_logical_id: str
    batch_size: int = 10
    max_batching_window_seconds: int = 0
    report_batch_item_failures: bool = False
    maximum_concurrency: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class StreamEventSource:
    """A DynamoDB Streams → Lambda mapping as declared in the template."""

    function_logical_id: str
    table_logical_id: str
    starting_position: str = "LATEST"
    batch_size: int = 100
    max_batching_window_seconds: int = 0
    report_batch_item_failures: bool = False
    maximum_retry_attempts: int = -1  # -1: until the record expires (24 h), as on AWS
    on_failure_logical_id: str | None = None  # an SQS queue of this stack
    enabled: bool = True


@dataclass
class PreparedTemplate:
    """The translated CloudFormation template plus what the local runtime needs from the SAM one."""

    cfn: dict[str, Any]
    functions: dict[str, FunctionSource] = field(default_factory=dict)
    layer_dirs: list[Path] = field(default_factory=list)
    sqs_sources: list[SqsEventSource] = field(default_factory=list)
    stream_sources: list[StreamEventSource] = field(default_factory=list)
    # state machine logical id -> output keys holding its definition / substitutions / role
    state_machines: dict[str, StateMachineOutputs] = field(default_factory=dict)
    # bucket logical id -> its NotificationConfiguration with intrinsics deferred to outputs
    bucket_notifications: dict[str, Any] = field(default_factory=dict)


@dataclass
class StateMachineOutputs:
    definition_key: str
    role_key: str | None
    type_key: str | None
    substitution_keys: dict[str, str]  # ${Name} -> output key


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation short-form tags (!Ref, !GetAtt, !Sub, ...)."""


def _construct_tag(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_sam_template(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=_CfnLoader)
    if not isinstance(loaded, dict) or not isinstance(loaded.get("Resources"), dict):
        raise TemplateError(f"{path}: not a SAM template (no Resources mapping)")
    return loaded


def logical_id_of(reference: Any) -> str | None:
    """The logical id behind `!Ref X` / `!GetAtt X.Arn`, or None for anything else."""
    if isinstance(reference, dict) and len(reference) == 1:
        ((key, value),) = reference.items()
        if key == "Ref" and isinstance(value, str):
            return value
        if key == "Fn::GetAtt":
            parts = value.split(".", 1) if isinstance(value, str) else value
            if isinstance(parts, list) and parts and isinstance(parts[0], str):
                return parts[0]
    return None


def prepare_template(
    template_path: Path, code_bucket: str, code_key: str, parameter_values: dict[str, str]
) -> PreparedTemplate:
    """Rewrite local paths, translate with samtranslator, and add the helper outputs."""
    base_dir = template_path.parent.resolve()
    sam = copy.deepcopy(load_sam_template(template_path))
    globals_function = sam.get("Globals", {}).get("Function", {}) or {}
    code_uri_s3 = f"s3://{code_bucket}/{code_key}"
    functions: dict[str, FunctionSource] = {}
    layer_dirs: list[Path] = []

    for logical_id, resource in sam["Resources"].items():
        kind = resource.get("Type")
        props = resource.setdefault("Properties", {})
        if kind == SERVERLESS_FUNCTION:
            code_uri = props.get("CodeUri", globals_function.get("CodeUri"))
            handler = props.get("Handler", globals_function.get("Handler"))
            if not isinstance(code_uri, str) or code_uri.startswith("s3://"):
                raise TemplateError(f"{logical_id}.CodeUri: must be a local directory, got {code_uri!r}")
            if not isinstance(handler, str) or "." not in handler:
                raise TemplateError(f"{logical_id}.Handler: expected 'module.function', got {handler!r}")
            source = FunctionSource(logical_id, (base_dir / code_uri).resolve(), handler)
            if not source.module_file.is_file():
                raise TemplateError(f"{logical_id}.Handler: {source.module_file} does not exist")
            functions[logical_id] = source
            props["CodeUri"] = code_uri_s3
        elif kind == SERVERLESS_LAYER:
            content_uri = props.get("ContentUri")
            if isinstance(content_uri, str) and not content_uri.startswith("s3://"):
                layer_dirs.append((base_dir / content_uri).resolve())
                props["ContentUri"] = code_uri_s3
        elif kind == SERVERLESS_STATE_MACHINE and isinstance(props.get("DefinitionUri"), str):
            definition_path = base_dir / props.pop("DefinitionUri")
            try:
                props["Definition"] = json.loads(definition_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TemplateError(
                    f"{logical_id}.DefinitionUri: cannot read {definition_path}: {exc}"
                ) from exc

    cfn = translate(sam, parameter_values)
    prepared = PreparedTemplate(
        cfn,
        functions,
        layer_dirs,
        _sqs_sources(cfn, parameter_values),
        _stream_sources(cfn, parameter_values),
    )
    _add_state_machine_outputs(prepared)
    _defer_bucket_notifications(prepared)
    return prepared


def _defer_bucket_notifications(prepared: PreparedTemplate) -> None:
    """moto's CloudFormation ignores NotificationConfiguration: it is applied through the S3 API later."""
    outputs = prepared.cfn.setdefault("Outputs", {})
    for logical_id, resource in prepared.cfn["Resources"].items():
        if resource.get("Type") != "AWS::S3::Bucket":
            continue
        config = (resource.get("Properties") or {}).get("NotificationConfiguration")
        if config:
            prepared.bucket_notifications[logical_id] = defer_intrinsics(
                config, outputs, f"{logical_id}Notify"
            )


def _event_source_mappings(
    cfn: dict[str, Any], parameter_values: dict[str, str], source_type: str
) -> Iterator[tuple[str, str, str, dict[str, Any], Callable[[Any, str], Any]]]:
    """(mapping id, function id, source id, properties, literal) of every event-source mapping
    whose source is a resource of `source_type` in this stack (external sources are not emulated)."""
    resources = cfn["Resources"]
    declared = cfn.get("Parameters") or {}

    def literal(node: Any, where: str) -> Any:
        if isinstance(node, dict) and set(node) == {"Ref"} and node["Ref"] in declared:
            return parameter_values.get(node["Ref"], declared[node["Ref"]].get("Default"))
        if isinstance(node, dict):
            raise TemplateError(f"{where}: the local stack needs a literal or a parameter Ref, got {node!r}")
        return node

    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Lambda::EventSourceMapping":
            continue
        props = resource.get("Properties", {})
        source_id = logical_id_of(props.get("EventSourceArn"))
        function_id = logical_id_of(props.get("FunctionName"))
        if source_id is None or resources.get(source_id, {}).get("Type") != source_type:
            continue
        if function_id is None or function_id not in resources:
            raise TemplateError(f"{logical_id}.FunctionName: the local stack needs !Ref <Function>")
        yield logical_id, function_id, source_id, props, literal


def _mapping_options(
    logical_id: str, props: dict[str, Any], literal: Callable[[Any, str], Any]
) -> dict[str, Any]:
    """What SQS and stream mappings share: batching window, partial batch responses, Enabled."""
    return {
        "max_batching_window_seconds": int(
            literal(props.get("MaximumBatchingWindowInSeconds", 0), f"{logical_id}.MaximumBatchingWindow")
        ),
        "report_batch_item_failures": "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
        "enabled": literal(props.get("Enabled", True), f"{logical_id}.Enabled")
        not in (False, "false", "False"),
    }


def _stream_sources(cfn: dict[str, Any], parameter_values: dict[str, str]) -> list[StreamEventSource]:
    """Every DynamoDB Streams → Lambda mapping of a table of this stack (SAM `Events: DynamoDB`)."""
    sources = []
    for logical_id, function_id, table_id, props, literal in _event_source_mappings(
        cfn, parameter_values, "AWS::DynamoDB::Table"
    ):
        on_failure = ((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        sources.append(
            StreamEventSource(
                function_logical_id=function_id,
                table_logical_id=table_id,
                starting_position=str(
                    literal(props.get("StartingPosition", "LATEST"), f"{logical_id}.StartingPosition")
                ),
                batch_size=int(literal(props.get("BatchSize", 100), f"{logical_id}.BatchSize")),
                maximum_retry_attempts=int(
                    literal(props.get("MaximumRetryAttempts", -1), f"{logical_id}.MaximumRetryAttempts")
                ),
                on_failure_logical_id=logical_id_of(on_failure),
                **_mapping_options(logical_id, props, literal),
            )
        )
    return sources


def _sqs_sources(cfn: dict[str, Any], parameter_values: dict[str, str]) -> list[SqsEventSource]:
    """Every SQS → Lambda event-source mapping in the translated template (SAM `Events: SQS` or raw)."""
    sources = []
    for logical_id, function_id, queue_id, props, literal in _event_source_mappings(
        cfn, parameter_values, "AWS::SQS::Queue"
    ):
        scaling = props.get("ScalingConfig") or {}
        concurrency = literal(scaling.get("MaximumConcurrency"), f"{logical_id}.ScalingConfig")
        sources.append(
            SqsEventSource(
                function_logical_id=function_id,
                queue_logical_id=queue_id,
                batch_size=int(literal(props.get("BatchSize", 10), f"{logical_id}.BatchSize")),
                maximum_concurrency=int(concurrency) if concurrency is not None else None,
                **_mapping_options(logical_id, props, literal),
            )
        )
    return sources


def translate(sam: dict[str, Any], parameter_values: dict[str, str]) -> dict[str, Any]:
    """samtranslator, offline: managed policies are not looked up (moto does not enforce IAM)."""
    from samtranslator.translator.transform import transform

    class _OfflinePolicyLoader:
        def load(self) -> dict[str, str]:
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        return transform(sam, dict(parameter_values), _OfflinePolicyLoader(), None)
    except Exception as exc:  # samtranslator raises InvalidDocumentException with causes
        causes = getattr(exc, "causes", None) or []
        detail = "; ".join(str(c) for c in causes) or str(exc)
        raise TemplateError(f"samtranslator rejected the template: {detail}") from exc


def _add_state_machine_outputs(prepared: PreparedTemplate) -> None:
    """moto's CloudFormation ignores DefinitionSubstitutions: have it resolve them as outputs instead."""
    outputs = prepared.cfn.setdefault("Outputs", {})
    for logical_id, resource in prepared.cfn["Resources"].items():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        props = resource.get("Properties", {})
        prefix = f"{RESOLVE_OUTPUT_PREFIX}{logical_id}"
        if "DefinitionString" in props:
            outputs[f"{prefix}Definition"] = {"Value": props["DefinitionString"]}
        elif "Definition" in props:
            outputs[f"{prefix}Definition"] = {"Value": json.dumps(props["Definition"])}
        else:
            raise TemplateError(f"{logical_id}: no Definition/DefinitionString after translation")
        role_key = None
        if "RoleArn" in props:
            role_key = f"{prefix}Role"
            outputs[role_key] = {"Value": props["RoleArn"]}
        type_key = None
        if "StateMachineType" in props:
            type_key = f"{prefix}Type"
            outputs[type_key] = {"Value": props["StateMachineType"]}
        substitutions = {}
        for index, (name, value) in enumerate(sorted((props.get("DefinitionSubstitutions") or {}).items())):
            key = f"{prefix}Sub{index}"
            outputs[key] = {"Value": value}
            substitutions[name] = key
        prepared.state_machines[logical_id] = StateMachineOutputs(
            f"{prefix}Definition", role_key, type_key, substitutions
        )


def split_unsupported(cfn: dict[str, Any], supported_types: set[str]) -> dict[str, dict[str, Any]]:
    """Remove (and return) the resources moto's CloudFormation cannot create."""
    resources = cfn["Resources"]
    unsupported = {lid: r for lid, r in resources.items() if r.get("Type") not in supported_types}
    for logical_id in unsupported:
        del resources[logical_id]
    for resource in resources.values():
        depends = resource.get("DependsOn")
        if isinstance(depends, str) and depends in unsupported:
            del resource["DependsOn"]
        elif isinstance(depends, list):
            resource["DependsOn"] = [d for d in depends if d not in unsupported]
    return unsupported


def substitute_references(node: Any, values: dict[str, dict[str, str]]) -> Any:
    """Replace `Ref`/`Fn::GetAtt`/`${X}` in `Fn::Sub` for resources created outside CloudFormation.

    `values[logical_id]` maps "Ref" and attribute names ("Arn", "Id", ...) to literal strings.
    """
    if isinstance(node, list):
        return [substitute_references(item, values) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref" and value in values:
            return values[value]["Ref"]
        if key == "Fn::GetAtt":
            parts = value.split(".", 1) if isinstance(value, str) else value
            if parts[0] in values:
                return values[parts[0]].get(parts[1], values[parts[0]]["Ref"])
        if key == "Fn::Sub":
            if isinstance(value, str):
                return {"Fn::Sub": _substitute_sub_string(value, values)}
            text, variables = value
            return {
                "Fn::Sub": [_substitute_sub_string(text, values), substitute_references(variables, values)]
            }
    return {key: substitute_references(item, values) for key, item in node.items()}


def _substitute_sub_string(text: str, values: dict[str, dict[str, str]]) -> str:
    for logical_id, attributes in values.items():
        text = text.replace("${" + logical_id + "}", attributes["Ref"])
        for attribute, literal in attributes.items():
            text = text.replace("${" + logical_id + "." + attribute + "}", literal)
    return text


def evaluate_condition(cfn: dict[str, Any], name: str, parameters: dict[str, str]) -> bool:
    """Evaluate a template condition over parameter values (Equals/Not/And/Or/Condition, Ref to parameters).

    Only needed for resources created outside moto's CloudFormation; anything it
    cannot evaluate raises TemplateError naming the condition.
    """
    declared = cfn.get("Parameters") or {}

    def value(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Ref"}:
            ref = node["Ref"]
            if ref in parameters:
                return parameters[ref]
            if ref in declared:
                return str(declared[ref].get("Default", ""))
            raise TemplateError(f"Conditions.{name}: cannot resolve Ref {ref} locally")
        if isinstance(node, dict):
            return truth(node)
        return str(node)

    def truth(node: Any) -> bool:
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict) or len(node) != 1:
            raise TemplateError(f"Conditions.{name}: unsupported expression {node!r}")
        ((key, args),) = node.items()
        if key == "Fn::Equals":
            return str(value(args[0])) == str(value(args[1]))
        if key == "Fn::Not":
            return not truth(args[0])
        if key == "Fn::And":
            return all(truth(a) for a in args)
        if key == "Fn::Or":
            return any(truth(a) for a in args)
        if key == "Condition":
            return evaluate_condition(cfn, args, parameters)
        raise TemplateError(f"Conditions.{name}: unsupported function {key}")

    conditions = cfn.get("Conditions") or {}
    if name not in conditions:
        raise TemplateError(f"Condition {name}: not defined in the template")
    return truth(conditions[name])


def defer_intrinsics(node: Any, outputs: dict[str, Any], prefix: str) -> Any:
    """Replace every intrinsic in `node` by a marker and add an output that moto resolves for it.

    Used for the properties moto's CloudFormation ignores (bucket notifications):
    `resolve_deferred(marked, stack_outputs)` puts the resolved values back.
    """
    if isinstance(node, list):
        return [defer_intrinsics(item, outputs, prefix) for item in node]
    if isinstance(node, dict):
        if len(node) == 1 and (next(iter(node)) == "Ref" or next(iter(node)).startswith("Fn::")):
            index = sum(1 for k in outputs if k.startswith(RESOLVE_OUTPUT_PREFIX + prefix))
            key = f"{RESOLVE_OUTPUT_PREFIX}{prefix}{index}"
            outputs[key] = {"Value": node}
            return {_DEFERRED: key}
        return {k: defer_intrinsics(v, outputs, prefix) for k, v in node.items()}
    return node


def resolve_deferred(node: Any, stack_outputs: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [resolve_deferred(item, stack_outputs) for item in node]
    if isinstance(node, dict):
        if set(node) == {_DEFERRED}:
            return stack_outputs[node[_DEFERRED]]
        return {k: resolve_deferred(v, stack_outputs) for k, v in node.items()}
    return node


_DEFERRED = "__local_deferred__"


def notification_api_config(cfn_config: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation `NotificationConfiguration` → `put_bucket_notification_configuration` shape."""

    def filter_of(entry: dict[str, Any]) -> dict[str, Any]:
        rules = ((entry.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
        if not rules:
            return {}
        return {"Filter": {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}}

    api: dict[str, Any] = {}
    for source, target, arn_key, cfn_arn_key in (
        ("QueueConfigurations", "QueueConfigurations", "QueueArn", "Queue"),
        ("LambdaConfigurations", "LambdaFunctionConfigurations", "LambdaFunctionArn", "Function"),
        ("TopicConfigurations", "TopicConfigurations", "TopicArn", "Topic"),
    ):
        entries = cfn_config.get(source) or []
        if entries:
            api[target] = [
                {arn_key: entry[cfn_arn_key], "Events": [entry["Event"]], **filter_of(entry)}
                for entry in entries
            ]
    if cfn_config.get("EventBridgeConfiguration") is not None:
        api["EventBridgeConfiguration"] = {}
    return api


REPO_TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"
# CreateTable takes these JobsTable properties as CloudFormation spells them; PITR and SSE are
# separate API calls (or differently spelled) and change nothing a test or suite observes.
_CREATE_TABLE_PROPERTIES = ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "BillingMode")


def jobs_table_definition(template_path: Path = REPO_TEMPLATE) -> dict[str, Any]:
    """CreateTable arguments (all but TableName) for the jobs table as template.yaml declares it, so
    suites and tests that make the table outside the local stack never keep a second copy of it."""
    properties = load_sam_template(template_path)["Resources"]["JobsTable"]["Properties"]
    return copy.deepcopy({name: properties[name] for name in _CREATE_TABLE_PROPERTIES if name in properties})


def parameter_problem(name: str, definition: dict[str, Any], value: str) -> str | None:
    """Why CloudFormation would refuse ``value`` for parameter ``name`` (None: it would accept it).

    moto's CloudFormation checks none of these constraints, so the local stack checks them itself:
    a bad value fails at start, naming the parameter and what it accepts, as `sam deploy` would.
    """
    constraint = definition.get("ConstraintDescription")
    allowed = definition.get("AllowedValues")
    if allowed is not None and value not in [str(v) for v in allowed]:
        return f"parameter {name}: {value!r} is not one of {', '.join(str(v) for v in allowed)}"
    pattern = definition.get("AllowedPattern")
    if pattern is not None and re.fullmatch(str(pattern), value) is None:
        return f"parameter {name}: {value!r} is not allowed ({constraint or 'must match ' + str(pattern)})"
    if definition.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return f"parameter {name}: {value!r} is not a number"
        low, high = definition.get("MinValue"), definition.get("MaxValue")
        if (low is not None and number < float(low)) or (high is not None and number > float(high)):
            return f"parameter {name}: {value!r} is outside {low}..{high}"
    return None
