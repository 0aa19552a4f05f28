"""Properties of the CloudFormation that template.yaml becomes (offline samtranslator translation)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from imagejobs.uploads import classify

from .conftest import (
    REPO_ROOT,
    Template,
    architecture_section,
    as_list,
    iam_statements,
    resources_of_type,
    translate,
)

pytestmark = pytest.mark.template

# Actions that AWS only authorises on Resource "*" (no resource-level permissions).
# Anything else with Resource "*" is a least-privilege defect.
RESOURCE_STAR_ALLOWED_ACTIONS = {
    # Step Functions log delivery to CloudWatch Logs (vended logs).
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    # X-Ray and custom metrics: not inline today (Tracer: AWSXrayWriteOnlyAccess; Metrics: EMF logs).
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "cloudwatch:PutMetricData",
}

# AWS managed policies a role may carry: Lambda's basic logging and X-Ray writes (both "*" by necessity),
# and the stream reads SAM adds for JobEventsFunction's DynamoDB event source (what Lambda's poller calls).
ALLOWED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "service-role/AWSLambdaDynamoDBExecutionRole",
}


CUSTOMER_KEY = {"Ref": "KmsKeyArn"}
NO_VALUE = {"Ref": "AWS::NoValue"}


def _with_customer_key(value: Any) -> dict[str, Any]:
    return {"Fn::If": ["UseCustomerKey", value, NO_VALUE]}


def _assert_queue_encrypted(properties: dict[str, Any]) -> None:
    """SSE-SQS by default; the customer key instead when KmsKeyArn is set (SQS refuses both at once)."""
    assert properties["SqsManagedSseEnabled"] == {"Fn::If": ["UseCustomerKey", False, True]}
    assert properties["KmsMasterKeyId"] == _with_customer_key(CUSTOMER_KEY)


def _function(template: Template, name: str) -> dict[str, Any]:
    resource = template["Resources"][name]
    assert resource["Type"] == "AWS::Lambda::Function"
    properties: dict[str, Any] = resource["Properties"]
    return properties


def _statements_of(template: Template, role: str) -> list[dict[str, Any]]:
    return [statement for name, statement in iam_statements(template) if name == role]


def _actions_of(template: Template, role: str) -> set[str]:
    return {
        action
        for statement in _statements_of(template, role)
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    }


def test_no_iam_statement_allows_a_wildcard_action(translated_template: Template) -> None:
    offenders = [
        (role, action)
        for role, statement in iam_statements(translated_template)
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
        if "*" in action
    ]
    assert offenders == []


def test_resource_star_only_for_actions_aws_requires_it(translated_template: Template) -> None:
    offenders = [
        (role, action)
        for role, statement in iam_statements(translated_template)
        if statement["Effect"] == "Allow" and "*" in as_list(statement["Resource"])
        for action in as_list(statement["Action"])
        if action not in RESOURCE_STAR_ALLOWED_ACTIONS
    ]
    assert offenders == []


def test_roles_only_carry_allow_listed_managed_policies(translated_template: Template) -> None:
    for name, role in resources_of_type(translated_template, "AWS::IAM::Role").items():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            text = arn["Fn::Sub"] if isinstance(arn, dict) else arn
            policy = re.sub(r"^arn:[^:]+:iam::aws:policy/", "", text.replace("${AWS::Partition}", "aws"))
            assert policy in ALLOWED_MANAGED_POLICIES, f"{name} carries managed policy {text}"


def test_no_function_can_delete_or_scan_records_or_outputs(translated_template: Template) -> None:
    for role in (
        "IntakeFunctionRole",
        "PollFunctionRole",
        "StoreOutputsFunctionRole",
        "FinalizeFunctionRole",
        "JobEventsFunctionRole",
        "S3IntakeFunctionRole",
        "WebhookFunctionRole",
    ):
        actions = _actions_of(translated_template, role)
        assert actions, f"{role} has no inline permissions"
        assert not {a for a in actions if re.match(r"(dynamodb|s3):.*(Delete|Scan|BatchWrite)", a)}, role


def test_each_function_gets_only_what_its_step_needs(translated_template: Template) -> None:
    intake = _actions_of(translated_template, "IntakeFunctionRole")
    assert {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "states:StartExecution",
        "secretsmanager:GetSecretValue",
    } <= intake
    assert "dynamodb:PutItem" in intake
    assert not {a for a in intake if a.startswith("s3:Put")}
    poll = _actions_of(translated_template, "PollFunctionRole")
    assert "secretsmanager:GetSecretValue" in poll
    assert not {a for a in poll if a.startswith(("s3:", "states:", "sqs:", "dynamodb:"))}
    store = _actions_of(translated_template, "StoreOutputsFunctionRole")
    assert {"s3:PutObject", "s3:AbortMultipartUpload"} <= store
    assert not {a for a in store if a.startswith(("secretsmanager:", "states:", "sqs:"))}
    finalize = _actions_of(translated_template, "FinalizeFunctionRole")
    assert finalize == {"dynamodb:GetItem", "dynamodb:UpdateItem"}
    state_machine = _actions_of(translated_template, "JobStateMachineRole")
    assert "lambda:InvokeFunction" in state_machine
    invoked = {
        statement["Resource"]["Fn::Sub"][1]["functionName"]["Ref"]
        for statement in _statements_of(translated_template, "JobStateMachineRole")
        if statement["Action"] == ["lambda:InvokeFunction"]
    }
    assert invoked == {"PollFunction", "StoreOutputsFunction", "FinalizeFunction"}


def test_output_bucket_denies_insecure_transport(translated_template: Template) -> None:
    [policy] = resources_of_type(translated_template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "OutputBucket"}
    denies = [
        statement
        for statement in as_list(policy["Properties"]["PolicyDocument"]["Statement"])
        if statement["Effect"] == "Deny"
        and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
    ]
    assert len(denies) == 1
    assert denies[0]["Principal"] == "*"
    resources = json.dumps(denies[0]["Resource"])
    assert '"Fn::GetAtt": ["OutputBucket", "Arn"]' in resources  # the bucket
    assert "${OutputBucket.Arn}/*" in resources  # and its objects


def test_output_bucket_is_private_encrypted_and_cleans_up_multipart(translated_template: Template) -> None:
    bucket = translated_template["Resources"]["OutputBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    condition, [with_key], [default] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][
        "Fn::If"
    ]
    assert condition == "UseCustomerKey"
    assert default["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert with_key["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": CUSTOMER_KEY,
    }
    assert with_key["BucketKeyEnabled"] is True
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert any(
        r["Status"] == "Enabled" and r["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
        for r in bucket["LifecycleConfiguration"]["Rules"]
        if "NoncurrentVersionExpiration" in r
    )
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert any(
        r["Status"] == "Enabled" and "AbortIncompleteMultipartUpload" in r
        for r in bucket["LifecycleConfiguration"]["Rules"]
    )


def test_outputs_of_failed_copies_are_tagged_then_expired_not_deleted(translated_template: Template) -> None:
    from imagejobs.copier import ORPHAN_TAG

    rules = translated_template["Resources"]["OutputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    [expiry] = [r for r in rules if r.get("TagFilters")]
    assert expiry["Status"] == "Enabled" and expiry["ExpirationInDays"] == 1
    assert expiry["TagFilters"] == [{"Key": ORPHAN_TAG, "Value": "true"}]
    store = _actions_of(translated_template, "StoreOutputsFunctionRole")
    assert "s3:PutObjectTagging" in store and not {a for a in store if a.startswith("s3:Delete")}


def _mapping_of(template: Template, function: str) -> dict[str, Any]:
    [mapping] = [
        m
        for m in resources_of_type(template, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": function}
    ]
    return mapping


def test_sqs_event_reports_batch_item_failures_with_bounded_concurrency(
    translated_template: Template,
) -> None:
    mapping = _mapping_of(translated_template, "IntakeFunction")
    properties = mapping["Properties"]
    assert properties["FunctionName"] == {"Ref": "IntakeFunction"}
    assert properties["EventSourceArn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BatchSize"] == 10
    assert properties["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaxProviderConcurrency"}}


def test_queue_visibility_timeout_covers_six_intake_timeouts(translated_template: Template) -> None:
    mapping = _mapping_of(translated_template, "IntakeFunction")
    window = mapping["Properties"].get("MaximumBatchingWindowInSeconds", 0)
    intake_timeout = _function(translated_template, "IntakeFunction")["Timeout"]
    visibility = translated_template["Resources"]["JobsQueue"]["Properties"]["VisibilityTimeout"]
    # A parameter (the local stack lowers it); its default is what AWS deployments get.
    parameter = translated_template["Parameters"][visibility["Ref"]]
    assert int(parameter["Default"]) >= 6 * intake_timeout + window


def test_jobs_queue_redrives_to_an_encrypted_dead_letter_queue(translated_template: Template) -> None:
    resources = translated_template["Resources"]
    queue = resources["JobsQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "JobsMaxReceiveCount"},
    }
    # The same parameter tells intake which receive is the last (it notes the DLQ on the record).
    assert translated_template["Parameters"]["JobsMaxReceiveCount"]["Default"] == 5
    environment = resources["IntakeFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["JOBS_MAX_RECEIVE_COUNT"] == {"Ref": "JobsMaxReceiveCount"}
    dlq = resources["JobsDeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    for properties in (queue, dlq):
        _assert_queue_encrypted(properties)


def _documented_environment() -> dict[str, tuple[set[str] | None, str | None]]:
    """Variable -> (functions reading it, None for every function; fixed value or None), from the
    table in docs/architecture.md."""
    section = architecture_section("Function environment")
    documented: dict[str, tuple[set[str] | None, str | None]] = {}
    for variables, readers in re.findall(r"^\| (`[A-Z].*?) \| (.*?) \|", section, flags=re.M):
        functions = (
            None
            if readers.startswith("every function")
            else {f"{name.strip()}Function" for name in readers.split(",")}
        )
        for name, value in re.findall(r"`([A-Z][A-Z0-9_]+)(?:=([^`]*))?`", variables):
            documented[name] = (functions, value or None)
    assert len(documented) >= 10, "could not read the variable table from docs/architecture.md"
    return documented


def test_the_documented_environment_is_each_functions_template_environment(
    translated_template: Template,
) -> None:
    documented = _documented_environment()
    functions = resources_of_type(translated_template, "AWS::Lambda::Function")
    assert len(functions) == 8
    for name, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        expected = {v for v, (readers, _) in documented.items() if readers is None or name in readers}
        assert set(variables) == expected, name
        for variable in expected:
            value = documented[variable][1]
            if value is not None:
                assert variables[variable] == value, f"{name}: {variable}"


def test_state_machine_arn_variable_names_the_state_machine(translated_template: Template) -> None:
    resources = translated_template["Resources"]
    name = resources["JobStateMachine"]["Properties"]["StateMachineName"]["Fn::Sub"]
    env_arn = _function(translated_template, "IntakeFunction")["Environment"]["Variables"][
        "STATE_MACHINE_ARN"
    ]
    assert env_arn["Fn::Sub"].endswith(f":stateMachine:{name}")
    start = next(
        s
        for s in _statements_of(translated_template, "IntakeFunctionRole")
        if s["Action"] == "states:StartExecution"
    )
    assert start["Resource"] == env_arn


def test_functions_share_runtime_architecture_tracing_and_layer(translated_template: Template) -> None:
    [layer_name] = resources_of_type(translated_template, "AWS::Lambda::LayerVersion")
    layer = translated_template["Resources"][layer_name]["Properties"]
    # One parameter for the layer and every function: arm64 as deployed, x86_64 for sam local on x86_64.
    architecture = {"Ref": "Architecture"}
    assert translated_template["Parameters"]["Architecture"]["Default"] == "arm64"
    assert layer["CompatibleArchitectures"] == [architecture]
    assert layer["CompatibleRuntimes"] == ["python3.12"]
    log_groups = {
        json.dumps(group["Properties"]["LogGroupName"]): group["Properties"]
        for group in resources_of_type(translated_template, "AWS::Logs::LogGroup").values()
    }
    for name, function in resources_of_type(translated_template, "AWS::Lambda::Function").items():
        properties = function["Properties"]
        assert properties["Runtime"] == "python3.12", name
        assert properties["Architectures"] == [architecture], name
        assert properties["Handler"] == "app.lambda_handler", name
        assert properties["TracingConfig"] == {"Mode": "Active"}, name
        assert properties["Layers"] == [{"Ref": layer_name}], name
        group = log_groups.get(json.dumps({"Fn::Sub": f"/aws/lambda/${{{name}}}"}))
        assert group is not None and "RetentionInDays" in group, f"{name} has no log group with retention"


def test_code_locations_are_the_function_folders(sam_template: Template) -> None:
    for name, resource in sam_template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            code_uri = resource["Properties"]["CodeUri"]
            assert re.fullmatch(r"functions/[a-z0-9_]+/", code_uri), name
            assert (REPO_ROOT / code_uri).is_dir(), f"{name}: {code_uri} does not exist"
    layer = sam_template["Resources"]["SharedLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/shared/"
    assert layer["Metadata"]["BuildMethod"] == "python3.12"


def test_state_machine_substitutes_exactly_the_definition_placeholders(translated_template: Template) -> None:
    properties = translated_template["Resources"]["JobStateMachine"]["Properties"]
    definition = (REPO_ROOT / "statemachine" / "job.asl.json").read_text(encoding="utf-8")
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", definition))
    assert set(properties["DefinitionSubstitutions"]) == placeholders
    assert properties["DefinitionSubstitutions"]["PollFunctionArn"] == {"Fn::GetAtt": ["PollFunction", "Arn"]}
    assert properties["StateMachineType"] == {"Ref": "WorkflowType"}
    assert properties["TracingConfiguration"] == {"Enabled": True}
    logging = properties["LoggingConfiguration"]
    # ERROR for EXPRESS too: ALL events cost a quarter of an EXPRESS job (docs/performance.md).
    assert logging["Level"] == "ERROR"
    assert logging["IncludeExecutionData"] is False


def test_handover_variable_is_120_for_express_0_for_standard_unless_set(
    sam_template: Template, translated_template: Template
) -> None:
    parameter = sam_template["Parameters"]["HandoverAfterSeconds"]
    assert parameter["Default"] == "auto"
    pattern = re.compile(parameter["AllowedPattern"])
    assert all(pattern.fullmatch(v) for v in ("auto", "0", "2", "240", "299"))
    # Settings refuses 300 and more (the EXPRESS limit): the parameter must refuse them first.
    assert not any(pattern.fullmatch(v) for v in ("300", "1000", "-1", "2.5", ""))
    conditions = translated_template["Conditions"]
    assert conditions["IsExpressWorkflow"] == {"Fn::Equals": [{"Ref": "WorkflowType"}, "EXPRESS"]}
    assert conditions["HasAutoHandover"] == {"Fn::Equals": [{"Ref": "HandoverAfterSeconds"}, "auto"]}
    variable = _function(translated_template, "IntakeFunction")["Environment"]["Variables"][
        "HANDOVER_AFTER_SECONDS"
    ]
    assert variable == {
        "Fn::If": [
            "HasAutoHandover",
            {"Fn::If": ["IsExpressWorkflow", "120", "0"]},
            {"Ref": "HandoverAfterSeconds"},
        ]
    }


def test_state_machine_may_start_only_executions_of_itself(translated_template: Template) -> None:
    """The HandOver state starts `<jobId>-<n>` of this same state machine (STANDARD and EXPRESS)."""
    definition = json.loads((REPO_ROOT / "statemachine" / "job.asl.json").read_text(encoding="utf-8"))
    resources = {state.get("Resource") for state in definition["States"].values()}
    assert "arn:aws:states:::states:startExecution" in resources
    env_arn = _function(translated_template, "IntakeFunction")["Environment"]["Variables"][
        "STATE_MACHINE_ARN"
    ]
    starts = [
        statement
        for statement in _statements_of(translated_template, "JobStateMachineRole")
        if "states:StartExecution" in as_list(statement["Action"])
    ]
    assert [s["Resource"] for s in starts] == [env_arn]
    assert as_list(starts[0]["Action"]) == ["states:StartExecution"]
    assert "Condition" not in translated_template["Resources"]["JobStateMachineRole"]
    actions = _actions_of(translated_template, "JobStateMachineRole")
    assert not {a for a in actions if a.startswith("states:")} - {"states:StartExecution"}


def test_state_machine_may_only_update_job_records(translated_template: Template) -> None:
    """ClaimHandOver writes the hand-over chain into the job record: UpdateItem on the jobs table only."""
    writes = [
        statement
        for statement in _statements_of(translated_template, "JobStateMachineRole")
        if any(a.startswith("dynamodb:") for a in as_list(statement["Action"]))
    ]
    assert [as_list(s["Action"]) for s in writes] == [["dynamodb:UpdateItem"]]
    assert writes[0]["Resource"] == {"Fn::GetAtt": ["JobsTable", "Arn"]}
    machine = translated_template["Resources"]["JobStateMachine"]["Properties"]
    assert machine["DefinitionSubstitutions"]["JobsTableName"] == {"Ref": "JobsTable"}


def test_jobs_table_key_index_and_protection(translated_template: Template) -> None:
    table = translated_template["Resources"]["JobsTable"]
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "jobId", "KeyType": "HASH"}]
    indexes = {index["IndexName"]: index for index in properties["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"ByStatus", "ByBatch"}
    assert indexes["ByStatus"]["KeySchema"] == [
        {"AttributeName": "status", "KeyType": "HASH"},
        {"AttributeName": "updatedAt", "KeyType": "RANGE"},
    ]
    assert indexes["ByStatus"]["Projection"]["ProjectionType"] in {"ALL", "INCLUDE"}
    # A batch's jobs in line order; every attribute a results line reads is projected.
    assert indexes["ByBatch"]["KeySchema"] == [
        {"AttributeName": "batchId", "KeyType": "HASH"},
        {"AttributeName": "batchLine", "KeyType": "RANGE"},
    ]
    from imagejobs.batch_results import RESULT_ATTRIBUTES

    assert set(indexes["ByBatch"]["Projection"]["NonKeyAttributes"]) == set(RESULT_ATTRIBUTES)
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"


def test_alarms_watch_dead_letters_failed_executions_and_intake_errors(translated_template: Template) -> None:
    alarms = resources_of_type(translated_template, "AWS::CloudWatch::Alarm").values()
    watched = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms}
    assert watched >= {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/States", "ExecutionsFailed"),
        ("AWS/States", "ExecutionsTimedOut"),
        ("AWS/Lambda", "Errors"),
        # The quotas docs/scaling.md finds reachable with default parameters.
        ("AWS/States", "ExecutionThrottled"),
        ("AWS/Lambda", "Throttles"),
    }
    for alarm in alarms:
        properties = alarm["Properties"]
        assert properties["Threshold"] == 0
        assert properties["ComparisonOperator"] == "GreaterThanThreshold"
        assert properties["AlarmActions"]["Fn::If"][0] == "HasAlarmTopic"
    dlq_alarm = next(a for a in alarms if a["Properties"]["Namespace"] == "AWS/SQS")
    assert dlq_alarm["Properties"]["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]
    }


def test_outputs_are_the_documented_names(translated_template: Template) -> None:
    documented = set(re.findall(r"`([A-Za-z]+)`", architecture_section("Template outputs")))
    outputs = set(translated_template["Outputs"])
    required_now = {
        "JobsQueueUrl",
        "JobsDeadLetterQueueUrl",
        "JobsTableName",
        "OutputBucketName",
        "StateMachineArn",
        "ApiKeySecretArn",
    }
    assert required_now <= documented, "the architecture doc changed its output names"
    assert required_now <= outputs
    assert outputs <= documented, f"undocumented outputs: {sorted(outputs - documented)}"


def test_api_key_secret_is_created_only_without_an_existing_arn(sam_template: Template) -> None:
    with_secret = translate(sam_template)
    assert with_secret["Resources"]["ApiKeySecret"]["Condition"] == "CreateApiKeySecret"
    assert with_secret["Conditions"]["CreateApiKeySecret"] == {"Fn::Equals": [{"Ref": "ApiKeySecretArn"}, ""]}
    secret = with_secret["Resources"]["ApiKeySecret"]["Properties"]
    assert "SecretString" not in secret and "GenerateSecretString" not in secret  # filled in after deploy
    assert with_secret["Outputs"]["ApiKeySecretArn"]["Value"] == {
        "Fn::If": ["CreateApiKeySecret", {"Ref": "ApiKeySecret"}, {"Ref": "ApiKeySecretArn"}]
    }


# ---------------------------------------------------------------- S3 upload triggers (docs/uploads.md)


def test_uploads_reach_s3_intake_through_a_queue_with_retries(translated_template: Template) -> None:
    properties = _mapping_of(translated_template, "S3IntakeFunction")["Properties"]
    assert properties["EventSourceArn"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    resources = translated_template["Resources"]
    queue = resources["UploadsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["UploadsDeadLetterQueue", "Arn"]}
    _assert_queue_encrypted(queue)
    timeout = _function(translated_template, "S3IntakeFunction")["Timeout"]
    parameter = translated_template["Parameters"][queue["VisibilityTimeout"]["Ref"]]
    assert int(parameter["Default"]) >= 6 * timeout
    alarms = resources_of_type(translated_template, "AWS::CloudWatch::Alarm").values()
    assert any(
        a["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["UploadsDeadLetterQueue", "QueueName"]}
        for a in alarms
    )


def test_bucket_notifies_only_the_trigger_prefixes(translated_template: Template) -> None:
    bucket = translated_template["Resources"]["OutputBucket"]
    assert bucket["DependsOn"] == "UploadsQueuePolicy"  # S3 validates the destination when applied
    configurations = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    for configuration in configurations:
        assert configuration["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
        assert configuration["Event"] == "s3:ObjectCreated:*"
    filters = [
        {rule["Name"]: rule["Value"] for rule in c["Filter"]["S3Key"]["Rules"]} for c in configurations
    ]
    assert {"prefix": {"Ref": "InputsPrefix"}} in filters
    # Prefix only: a batches/ file of any name reaches S3IntakeFunction (REJECTED if not *.jsonl).
    assert {"prefix": {"Ref": "BatchesPrefix"}} in filters
    assert len(filters) == 2  # nothing under OutputPrefix (or anywhere else) notifies
    defaults = {name: translated_template["Parameters"][name]["Default"] for name in
                ("InputsPrefix", "BatchesPrefix", "OutputPrefix", "RecipesPrefix")}  # fmt: skip
    for trigger in ("InputsPrefix", "BatchesPrefix"):
        for other, value in defaults.items():
            if other != trigger:
                assert not value.startswith(defaults[trigger]) and not defaults[trigger].startswith(value)
    # Batch reports are written beside the batch, under the trigger: the function ignores them.
    prefixes: Any = SimpleNamespace(
        batches_prefix=defaults["BatchesPrefix"], inputs_prefix=defaults["InputsPrefix"]
    )
    assert classify(f"{defaults['BatchesPrefix']}x.jsonl.report.json", prefixes)[0] == "ignored"


def test_uploads_queue_accepts_s3_from_this_account_only(translated_template: Template) -> None:
    policy = translated_template["Resources"]["UploadsQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "UploadsQueue"}]
    [statement] = as_list(policy["PolicyDocument"]["Statement"])
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_s3_intake_gets_only_what_it_needs(translated_template: Template) -> None:
    actions = _actions_of(translated_template, "S3IntakeFunctionRole")
    assert actions == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:ListBucket",
        "s3:PutObject",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    statements = _statements_of(translated_template, "S3IntakeFunctionRole")
    send = next(s for s in statements if s["Action"] == "sqs:SendMessage")
    assert send["Resource"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    receive = next(s for s in statements if "sqs:ReceiveMessage" in as_list(s["Action"]))
    assert receive["Resource"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    # On its own queue: a paused batch is sent again, a failed event's retry brought forward.
    assert {"sqs:SendMessage", "sqs:ChangeMessageVisibility"} <= set(receive["Action"])
    # Reports only: never outputs, never the uploads themselves.
    put = next(s for s in statements if s["Action"] == "s3:PutObject")
    assert put["Resource"] == {"Fn::Sub": "${OutputBucket.Arn}/${BatchesPrefix}*.report.json"}
    read = next(s for s in statements if "s3:GetObject" in as_list(s["Action"]))
    assert "${OutputPrefix}" not in json.dumps(read["Resource"])
    role = translated_template["Resources"]["S3IntakeFunction"]["Properties"]["Role"]
    assert role == {"Fn::GetAtt": ["S3IntakeFunctionRole", "Arn"]}


def test_upload_variables_are_in_the_functions_that_read_them(translated_template: Template) -> None:
    upload = {
        "INPUTS_PREFIX": {"Ref": "InputsPrefix"},
        "BATCHES_PREFIX": {"Ref": "BatchesPrefix"},
        "RECIPES_PREFIX": {"Ref": "RecipesPrefix"},
        "MAX_UPLOAD_BYTES": {"Ref": "MaxUploadBytes"},
    }
    readers = {
        "S3IntakeFunction": set(upload),
        # It reads the trigger prefixes only to refuse an OUTPUT_PREFIX under them.
        "StoreOutputsFunction": {"INPUTS_PREFIX", "BATCHES_PREFIX"},
    }
    for name, function in resources_of_type(translated_template, "AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        present = {variable: variables[variable] for variable in upload if variable in variables}
        assert present == {variable: upload[variable] for variable in readers.get(name, ())}, name
    s3_intake = _function(translated_template, "S3IntakeFunction")["Environment"]["Variables"]
    assert s3_intake["JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}


def test_upload_outputs(translated_template: Template) -> None:
    outputs = translated_template["Outputs"]
    assert outputs["InputsPrefix"]["Value"] == {"Ref": "InputsPrefix"}
    assert outputs["BatchesPrefix"]["Value"] == {"Ref": "BatchesPrefix"}
    assert outputs["UploadsQueueUrl"]["Value"] == {"Ref": "UploadsQueue"}


def test_customer_key_encrypts_every_store_and_every_role_may_use_it(translated_template: Template) -> None:
    resources = translated_template["Resources"]
    for name in (
        "JobsQueue",
        "JobsDeadLetterQueue",
        "UploadsQueue",
        "UploadsDeadLetterQueue",
        "JobEventsDeadLetterQueue",
    ):
        _assert_queue_encrypted(resources[name]["Properties"])
    assert resources["JobsTable"]["Properties"]["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": {"Fn::If": ["UseCustomerKey", "KMS", NO_VALUE]},
        "KMSMasterKeyId": _with_customer_key(CUSTOMER_KEY),
    }
    assert resources["ApiKeySecret"]["Properties"]["KmsKeyId"] == _with_customer_key(CUSTOMER_KEY)
    log_groups = resources_of_type(translated_template, "AWS::Logs::LogGroup")
    assert len(log_groups) == 9
    for log_group in log_groups.values():
        assert log_group["Properties"]["KmsKeyId"] == _with_customer_key(CUSTOMER_KEY)
    policy = resources["CustomerKeyAccessPolicy"]
    assert policy["Condition"] == "UseCustomerKey"
    roles = {role["Ref"] for role in policy["Properties"]["Roles"]}
    assert roles == set(resources_of_type(translated_template, "AWS::IAM::Role"))
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Resource"] == CUSTOMER_KEY
    assert set(statement["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    services = json.dumps(statement["Condition"]["StringEquals"]["kms:ViaService"])
    for service in ("sqs", "s3", "dynamodb", "secretsmanager"):
        assert f"{service}.${{AWS::Region}}.amazonaws.com" in services


def test_batch_completions_reach_an_email_or_the_users_topic_as_one_readable_line(
    translated_template: Template,
) -> None:
    from moto.events.utils import EventTemplateParser

    from imagejobs_tools.local.template import evaluate_condition

    def created(parameters: dict[str, str]) -> set[str]:
        return {
            name
            for name in ("BatchCompletedTopic", "BatchCompletedTopicPolicy", "BatchCompletedRule")
            if evaluate_condition(translated_template, resources[name]["Condition"], parameters)
        }

    resources = translated_template["Resources"]
    email, topic = (
        {"BatchCompletedEmail": "ops@example.com"},
        {"BatchCompletedTopicArn": "arn:aws:sns:us-east-1:123456789012:mine"},
    )
    assert created({}) == set()
    assert created(email) == {"BatchCompletedTopic", "BatchCompletedTopicPolicy", "BatchCompletedRule"}
    assert created(topic) == created({**email, **topic}) == {"BatchCompletedRule"}
    assert resources["BatchCompletedTopic"]["Properties"]["Subscription"] == [
        {"Protocol": "email", "Endpoint": {"Ref": "BatchCompletedEmail"}}
    ]
    [grant] = resources["BatchCompletedTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"} and grant["Action"] == "sns:Publish"
    assert grant["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": ["BatchCompletedRule", "Arn"]}
    rule = resources["BatchCompletedRule"]["Properties"]
    assert rule["EventPattern"] == {"source": ["imagejobs"], "detail-type": ["Batch Completed"]}
    [target] = rule["Targets"]
    # What the e-mail says for an event as JobEventsFunction publishes it (moto's transformer, as
    # EventBridge's: moto's EventBridge does not deliver to SNS, so this is checked here).
    from imagejobs.batches import batch_completed

    event = batch_completed(
        {"jobId": "batch#b-1", "batchStatus": "WRITING"},
        {
            "jobId": "batch#b-1", "batchId": "b-1", "batchStatus": "COMPLETED", "bucket": "out",
            "resultsKey": "batches/cat.results.jsonl", "summary": {"jobs": 990, "creditsSpent": 2970},
        },
    )  # fmt: skip
    assert event is not None
    message = EventTemplateParser.parse(
        input_template=target["InputTransformer"]["InputTemplate"],
        input_paths_map=target["InputTransformer"]["InputPathsMap"],
        event={
            "source": "imagejobs",
            "detail-type": event.detail_type,
            "detail": event.detail,
            "ingestion-time": 0,
        },
    )
    assert (
        message
        == "Batch b-1 completed: 990 jobs, 2970 credits spent. Results: s3://out/batches/cat.results.jsonl"
    )
