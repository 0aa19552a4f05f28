"""`LocalStack`: the whole pipeline on this machine, built from `template.yaml`.

moto's `ThreadedMotoServer` on 127.0.0.1 serves every AWS API; its
CloudFormation creates the stack translated from the SAM template; its Step
Functions interpreter runs the state machine; Lambda invocations are
run in worker processes, one per execution environment (workers.py); SQS event sources are emulated
with Lambda's semantics; the provider simulator runs in-process unless a
provider URL is given. See docs/local-stack.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import socket
import string
import sys
import threading
import time
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import boto3
import requests
from botocore.config import Config

from imagejobs_tools.endpoints import connect_problem
from imagejobs_tools.local import moto_fixes, moto_speedups, samlocal, server_tuning
from imagejobs_tools.local.aws_faults import AwsFaults, FaultRule
from imagejobs_tools.local.dispatch import LambdaDispatcher
from imagejobs_tools.local.event_observer import EventObserver
from imagejobs_tools.local.iam_audit import REPORT_DIR_VARIABLE, AuditReport, FunctionCallAudit, write_report
from imagejobs_tools.local.iam_policies import DeployedStack
from imagejobs_tools.local.logview import FunctionLogLine
from imagejobs_tools.local.patching import Patch, apply_all
from imagejobs_tools.local.pollers import DEFAULT_CONCURRENCY, SqsMapping, SqsPoller
from imagejobs_tools.local.stream_pollers import StreamMapping, StreamPoller
from imagejobs_tools.local.template import (
    RESOLVE_OUTPUT_PREFIX,
    FunctionSource,
    PreparedTemplate,
    StreamEventSource,
    TemplateError,
    evaluate_condition,
    notification_api_config,
    parameter_problem,
    prepare_template,
    resolve_deferred,
    split_unsupported,
    substitute_references,
)
from imagejobs_tools.local.workers import FunctionSpec, WorkerOptions, WorkerPlugin

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

LOG = logging.getLogger(__name__)

FAKE_ACCOUNT_ID = "123456789012"
BOOTSTRAP_BUCKET = "imagejobs-local-bootstrap"
BOOTSTRAP_KEY = "code/placeholder.zip"
# Parameters the local stack sets when the template declares them.
PARAM_PROVIDER_URL = "ProviderBaseUrl"
PARAM_POLL_INTERVAL = "PollIntervalSeconds"
PARAM_ALLOW_HOSTS = "UrlAllowHosts"
# Local stand-in for the account's unreserved concurrency, per function. 1,000 jobs (bench/throughput.py,
# 2 cores): 4 -> 1,506 MB for every stack process, 1.10x the one-process stack's jobs/s; 2 -> 1,241 MB,
# 1.07x (the moto server, one GIL, is the bottleneck either way). Workers are ~75 MB each.
DEFAULT_FUNCTION_CONCURRENCY = 2
RECENT_LOG_LINES = 20_000
# Where invocations run: worker processes (no Docker), or `sam local start-lambda` containers.
LambdaRuntime = Literal["workers", "sam"]
# Process-wide things (os.environ, moto's backends and hooks) allow one stack per process.
_ACTIVE_LOCK = threading.Lock()
# Every patch of moto the stack applies while it runs, in order (undone in reverse by stop()):
# cheaper requests (module listing cached, keep-alive, quiet interpreter logs), the moto bugs it
# hits (moto_fixes.py), moto's hot spots under load (moto_speedups.py); then the stack's AWS faults.
MOTO_PATCHES: tuple[Patch, ...] = (server_tuning.install, *moto_fixes.FIXES, *moto_speedups.SPEEDUPS)


def generated_secret(spec: Any) -> str:
    """A value for a secret CloudFormation would generate: alphanumeric (so that it also reads as
    base64, as the webhook signing secret must), of the template's PasswordLength (default 32)."""
    length = spec.get("PasswordLength", 32) if isinstance(spec, dict) else 32
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(int(length)))


class LocalStackError(RuntimeError):
    """The local stack could not start; the message says which step and why."""


@dataclass
class LocalStackConfig:
    template_path: Path = Path("template.yaml")
    stack_name: str = "imagejobs-local"
    region: str = "us-east-1"
    port: int = 0  # moto server port; 0 = a free one
    # The address moto and the simulator listen on: loopback, or Docker's bridge so that containers
    # (`sam local`) can reach them (samlocal.bridge_address()).
    host: str = "127.0.0.1"
    lambda_runtime: LambdaRuntime = "workers"
    # The --env-vars file `lambda_runtime="sam"` writes for start-lambda (as `local sam-env` does).
    sam_env_file: Path = samlocal.DEFAULT_SAM_ENV_FILE
    # Provider: an external URL, else the in-process simulator (or none at all, for templates without one).
    provider_url: str | None = None
    start_simulator: bool = True
    sim_port: int = 0
    sim_latency: tuple[float, float] = (0.05, 0.1)
    api_key: str = "sk_test_local"
    api_key_credits: int = 1000
    poll_interval_seconds: float | None = None
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    # host:port entries exempt from the URL checks besides the simulator's (a test's webhook receiver).
    extra_allow_hosts: tuple[str, ...] = ()
    # Set on top of the functions' environment (local-only knobs, e.g. POWERTOOLS_METRICS_DISABLED).
    environment_overrides: dict[str, str] = field(default_factory=dict)
    sqs_concurrency: int = DEFAULT_CONCURRENCY  # pollers per queue when ScalingConfig is absent
    # Execution environments per function without a reserved or SQS maximum concurrency.
    function_concurrency: int = DEFAULT_FUNCTION_CONCURRENCY
    # Per function (logical id), over both: e.g. PollFunction with PollsPerInvocation > 1, whose
    # every polling job holds an environment (AWS would run one instance per job).
    concurrency_overrides: dict[str, int] = field(default_factory=dict)
    # Per function (logical id), over the template's Timeout: e.g. a short S3IntakeFunction, whose
    # batches then pause for time and resume as on AWS when a long batch outlasts 15 minutes
    # (the workers runtime; `sam local` containers keep the template's).
    timeout_overrides: dict[str, int] = field(default_factory=dict)
    # Test tooling the functions' runtimes load after the handler (workers.WorkerPlugin).
    worker_plugins: tuple[WorkerPlugin, ...] = ()
    # Record every function's AWS calls and decide them against its role (LocalStack.iam_report()).
    iam_audit: bool = True
    # Where the audit is written when the stack stops (iam_audit.combine_reports reads them).
    iam_report_dir: Path | None = field(default_factory=lambda: _path_from_environment(REPORT_DIR_VARIABLE))
    # AWS-side faults (throttling, 5xx, resets, latency) per service and operation, from the end of
    # start(); changed at run time with `LocalStack.aws_faults.set_rules(...)` (aws_faults.py).
    # Needs the IAM audit on (without it the functions sign with the tooling's key, never faulted).
    aws_faults: tuple[FaultRule, ...] = ()
    # Every line a function writes (None: kept only in the stack's recent-lines buffer).
    log_sink: Callable[[FunctionLogLine], None] | None = None
    state_file: Path | None = None  # e.g. .imagejobs/local-stack.json


@dataclass
class StackInfo:
    """What `start()` created: for printing, tests and the state file."""

    endpoint_url: str
    region: str
    simulator_url: str | None
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id
    resource_types: dict[str, str]  # logical id -> type
    functions: dict[str, str]  # logical id -> physical function name
    queues: dict[str, str]  # logical id -> queue url
    parameters: dict[str, str]
    timings: dict[str, float]
    stack_name: str

    def state_document(self) -> dict[str, Any]:
        return {
            "endpointUrl": self.endpoint_url,
            "region": self.region,
            "stackName": self.stack_name,
            "simulatorUrl": self.simulator_url,
            "outputs": self.outputs,
        }


class LocalStack:
    """Context manager: `with LocalStack(config) as stack: stack.info.outputs[...]`."""

    def __init__(self, config: LocalStackConfig | None = None) -> None:
        self.config = config or LocalStackConfig()
        # The most recent lines the functions wrote, for tests and tooling.
        self.iam_audit: FunctionCallAudit | None = None
        self.function_logs: deque[FunctionLogLine] = deque(maxlen=RECENT_LOG_LINES)
        self.aws_faults = AwsFaults()  # the config's rules take effect once the stack is up
        self.dispatcher = LambdaDispatcher(
            WorkerOptions(plugins=self.config.worker_plugins), self._log_line, self.aws_faults
        )
        self.pollers: list[SqsPoller] = []
        self.stream_pollers: list[StreamPoller] = []
        self.events: EventObserver | None = None  # what the stack publishes on EventBridge
        self.simulator: Any = None
        self._server: Any = None
        self._info: StackInfo | None = None
        self._saved_environ: dict[str, str | None] = {}
        self._saved_moto_config: dict[str, Any] | None = None
        self._holds_lock = False
        self._moto_patches = ExitStack()  # undone by stop()
        self._session: boto3.Session | None = None
        self._endpoint: str | None = None
        self.start_lambda: samlocal.StartLambda | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def info(self) -> StackInfo:
        if self._info is None:
            raise LocalStackError("the local stack is not running")
        return self._info

    @property
    def endpoint_url(self) -> str:
        if self._endpoint is None:
            raise LocalStackError("the local stack is not running")
        return self._endpoint

    def client(self, service: str, credentials: dict[str, str] | None = None) -> Any:
        """A boto3 client for the local endpoint (what a user of the stack would build); signed with
        `credentials` (environment-variable names, as a function's environment holds them) if given."""
        if self._session is None:
            raise LocalStackError("the local stack is not running")
        session = self._session
        if credentials is not None:
            session = boto3.Session(
                aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
                region_name=self.config.region,
            )
        return session.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            config=Config(retries={"max_attempts": 2}, read_timeout=120),
        )

    def start(self) -> StackInfo:
        if not _ACTIVE_LOCK.acquire(blocking=False):
            raise LocalStackError("another LocalStack is already running in this process")
        self._holds_lock = True
        timings: dict[str, float] = {}
        started = time.perf_counter()
        try:
            self._refuse_a_running_stack_in_the_state_file()
            self._check_ports_free()
            endpoint = self._start_moto()
            timings["motoServerSeconds"] = time.perf_counter() - started
            provider_url, simulator_url = self._start_provider()
            step = time.perf_counter()
            prepared, parameters = self._prepare(provider_url, endpoint)
            timings["translateSeconds"] = time.perf_counter() - step
            step = time.perf_counter()
            with self._stable_names(endpoint):
                outputs, resources, types = self._create_stack(prepared, parameters)
            timings["createStackSeconds"] = time.perf_counter() - step
            step = time.perf_counter()
            self._fix_state_machines(prepared, outputs, resources)
            self._remove_moto_event_source_mappings()
            self._start_iam_audit(prepared, parameters, resources, types)
            if self.config.lambda_runtime == "sam":
                sam_started = time.perf_counter()
                self._start_sam_local()
                timings["samLocalSeconds"] = time.perf_counter() - sam_started
            functions = self._load_functions(prepared, resources)
            self._set_api_key_secret(resources, types)
            self._apply_bucket_notifications(prepared, outputs, resources)
            queues = {lid: pid for lid, pid in resources.items() if types[lid] == "AWS::SQS::Queue"}
            self._start_pollers(prepared, resources, functions)
            observed = f"{self.config.stack_name}-observed"
            self.events = EventObserver(self.client("events"), self.client("sqs"), FAKE_ACCOUNT_ID, observed)
            # Faults only from here on: the set-up's own calls (the pollers' lookups) are not the pipeline's.
            self.aws_faults.set_rules(self.config.aws_faults)
            timings["wiringSeconds"] = time.perf_counter() - step
            timings["totalSeconds"] = time.perf_counter() - started
            public_outputs = {
                key: local_queue_url(value, endpoint)
                for key, value in outputs.items()
                if not key.startswith(RESOLVE_OUTPUT_PREFIX)
            }
            queues = {lid: local_queue_url(url, endpoint) for lid, url in queues.items()}
            self._info = StackInfo(
                endpoint_url=endpoint,
                region=self.config.region,
                simulator_url=simulator_url,
                outputs=public_outputs,
                resources=resources,
                resource_types=types,
                functions=functions,
                queues=queues,
                parameters=parameters,
                timings=timings,
                stack_name=self.config.stack_name,
            )
            self._write_state_file()
            LOG.info("local stack up in %.2fs: %s", timings["totalSeconds"], endpoint)
            return self._info
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice or after a failed start."""
        for poller in self.pollers:
            poller.stop()
        self.pollers.clear()
        for stream_poller in self.stream_pollers:
            stream_poller.stop()
        self.stream_pollers.clear()
        if self._server is not None:
            self._stop_running_executions()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
        if self._server is not None:
            self._reset_moto()
            self._server.stop()
            # ThreadedMotoServer.stop() shuts the loop down but leaves the socket bound.
            inner = getattr(self._server, "_server", None)
            if inner is not None:
                inner.server_close()
            self._server = None
        self.dispatcher.uninstall()
        if self.start_lambda is not None:
            self.start_lambda.stop()
            self.start_lambda = None
        if self.iam_audit is not None:
            self.iam_audit.uninstall()  # what it recorded stays, for iam_report() after the stop
            if self.config.iam_report_dir is not None and self._info is not None:
                write_report(self.config.iam_report_dir, self.config.template_path, self.iam_audit.report())
        self._moto_patches.close()
        self._restore_environ()
        if self.config.state_file is not None and self._info is not None and self._owns_state_file():
            self.config.state_file.unlink(missing_ok=True)
        self._info = None
        self._session = None
        self._endpoint = None
        if self._holds_lock:
            self._holds_lock = False
            _ACTIVE_LOCK.release()

    def update_function_environment(self, logical_id: str, values: Mapping[str, str]) -> None:
        """Change a function's environment variables while the stack runs, as a deploy of a changed
        parameter would (e.g. a raised CreditBudgetPerDay): later invocations get fresh environments."""
        pools = [pool for pool in self.dispatcher.pools.values() if pool.spec.logical_id == logical_id]
        if not pools:
            raise LocalStackError(f"{logical_id}: no such function runs in worker processes")
        for pool in pools:
            pool.update_environment(values)

    def _log_line(self, line: FunctionLogLine) -> None:
        self.function_logs.append(line)
        if self.config.log_sink is not None:
            self.config.log_sink(line)

    # -- steps -----------------------------------------------------------------------------

    def _set_environ(self, values: dict[str, str], remove: tuple[str, ...] = ()) -> None:
        for key in (*values, *remove):
            self._saved_environ.setdefault(key, os.environ.get(key))
        for key in remove:
            os.environ.pop(key, None)
        os.environ.update(values)

    def _restore_environ(self) -> None:
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ.clear()

    def _start_moto(self) -> str:
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        self._moto_patches.callback(apply_all((*MOTO_PATCHES, self.aws_faults.install)))
        self._server = ThreadedMotoServer(self.config.host, self.config.port, verbose=False)
        self._server.start()
        _, port = self._server.get_host_and_port()
        endpoint = self._endpoint = f"http://{self.config.host}:{port}"
        # werkzeug logs every request at INFO: far too chatty next to the handlers' own logs.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # Handlers build plain boto3 clients: point them (and moto's interpreter) at this server.
        self._set_environ(
            {
                "MOTO_PORT": str(port),
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": self.config.region,
                "AWS_REGION": self.config.region,
            },
            remove=("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SECURITY_TOKEN"),
        )
        self._session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=self.config.region
        )
        self._saved_moto_config = {"stepfunctions": dict(default_user_config.get("stepfunctions", {}))}
        response = requests.post(
            f"{endpoint}/moto-api/config", json={"stepfunctions": {"execute_state_machine": True}}, timeout=10
        )
        response.raise_for_status()
        self.dispatcher.install()
        return endpoint

    def _start_provider(self) -> tuple[str | None, str | None]:
        if self.config.provider_url:
            return self.config.provider_url.rstrip("/"), self.config.provider_url.rstrip("/")
        if not self.config.start_simulator:
            return None, None
        from imagejobs_tools.sim import SimulatorConfig, start_simulator

        self.simulator = start_simulator(
            SimulatorConfig(
                host=self.config.host,
                port=self.config.sim_port,
                api_keys={self.config.api_key: self.config.api_key_credits},
                latency=self.config.sim_latency,
            )
        )
        url = str(self.simulator.url).rstrip("/")
        return url, url

    def _prepare(self, provider_url: str | None, endpoint: str) -> tuple[PreparedTemplate, dict[str, str]]:
        template_path = self.config.template_path.resolve()
        if not template_path.is_file():
            raise LocalStackError(f"template not found: {template_path}")
        s3 = self.client("s3")
        s3.create_bucket(Bucket=BOOTSTRAP_BUCKET)
        s3.put_object(Bucket=BOOTSTRAP_BUCKET, Key=BOOTSTRAP_KEY, Body=_placeholder_zip())
        declared = _declared_parameters(template_path)
        parameters: dict[str, str] = {}
        allow_hosts = [urlsplit(endpoint).netloc, *self.config.extra_allow_hosts]
        if provider_url:
            allow_hosts.insert(0, urlsplit(provider_url).netloc)
            if PARAM_PROVIDER_URL in declared:
                parameters[PARAM_PROVIDER_URL] = provider_url
        if PARAM_ALLOW_HOSTS in declared:
            parameters[PARAM_ALLOW_HOSTS] = ",".join(allow_hosts)
        if self.config.poll_interval_seconds is not None and PARAM_POLL_INTERVAL in declared:
            parameters[PARAM_POLL_INTERVAL] = _format_number(self.config.poll_interval_seconds)
        for name, value in self.config.parameter_overrides.items():
            if name not in declared:
                raise LocalStackError(f"parameter override {name!r}: the template declares no such parameter")
            parameters[name] = str(value)
        for name, value in parameters.items():
            problem = parameter_problem(name, declared[name], value)
            if problem is not None:
                raise LocalStackError(problem)
        try:
            prepared = prepare_template(template_path, BOOTSTRAP_BUCKET, BOOTSTRAP_KEY, parameters)
        except TemplateError as exc:
            raise LocalStackError(str(exc)) from exc
        return prepared, parameters

    @contextlib.contextmanager
    def _stable_names(self, endpoint: str) -> Iterator[None]:
        """With a fixed --port, the same physical names (random suffixes from moto's seedable random
        source) on every start, so the commands `local up` prints keep working after a restart."""
        if not self.config.port:
            yield
            return
        _seed_moto(endpoint, zlib.crc32(f"{self.config.stack_name}:{self.config.port}".encode()))
        try:
            yield
        finally:
            # Only the names: SQS message ids are a job's default id, and a restarted stack must not
            # hand out the last run's job ids again (downloads are kept by job id).
            _seed_moto(endpoint, secrets.randbits(64))

    def _create_stack(
        self, prepared: PreparedTemplate, parameters: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        cfn = self.client("cloudformation")
        name = self.config.stack_name
        external, external_types = self._create_unsupported_resources(prepared, parameters)
        cfn.create_stack(
            StackName=name,
            TemplateBody=json.dumps(prepared.cfn),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            events = cfn.describe_stack_events(StackName=name)["StackEvents"]
            failures = [
                f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
                for e in events
                if "FAILED" in e.get("ResourceStatus", "")
            ]
            raise LocalStackError(f"stack {name} is {stack['StackStatus']}: {'; '.join(failures)}")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        resources: dict[str, str] = {}
        types: dict[str, str] = {}
        paginator = cfn.get_paginator("list_stack_resources")
        for page in paginator.paginate(StackName=name):
            for summary in page["StackResourceSummaries"]:
                resources[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
                types[summary["LogicalResourceId"]] = summary["ResourceType"]
        resources.update(external)
        types.update(external_types)
        expected = {lid for lid, r in prepared.cfn["Resources"].items() if "Condition" not in r}
        missing = sorted(expected - set(resources))
        if missing:
            raise LocalStackError(f"moto's CloudFormation did not create: {', '.join(missing)}")
        return outputs, resources, types

    def _create_unsupported_resources(
        self, prepared: PreparedTemplate, parameters: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Resources moto's CloudFormation cannot create: secrets are made through their API, the rest
        (alarms, policies: nothing to emulate) are skipped; references to them become literals."""
        from moto.cloudformation.parsing import get_model_map

        unsupported = split_unsupported(prepared.cfn, set(get_model_map()))
        physical: dict[str, str] = {}
        types: dict[str, str] = {}
        values: dict[str, dict[str, str]] = {}
        secrets_client = self.client("secretsmanager")
        for logical_id, resource in unsupported.items():
            kind = resource.get("Type", "")
            props = resource.get("Properties") or {}
            condition = resource.get("Condition")
            if condition and not evaluate_condition(prepared.cfn, condition, parameters):
                values[logical_id] = {"Ref": f"local-not-created-{logical_id}"}
                continue
            if kind == "AWS::SecretsManager::Secret":
                secret_name = self._literal(props.get("Name")) or f"{self.config.stack_name}-{logical_id}"
                secret_value = self._literal(props.get("SecretString")) or generated_secret(
                    props.get("GenerateSecretString")
                )
                arn = secrets_client.create_secret(Name=secret_name, SecretString=secret_value)["ARN"]
                values[logical_id] = {"Ref": arn, "Id": arn}
                physical[logical_id] = arn
                types[logical_id] = kind
            else:
                LOG.info("local stack: skipping %s (%s): not emulated", logical_id, kind)
                values[logical_id] = {
                    "Ref": f"local-unsupported-{logical_id}",
                    "Arn": f"local-unsupported-{logical_id}",
                }
        prepared.cfn = substitute_references(prepared.cfn, values)
        return physical, types

    def _literal(self, value: Any) -> str | None:
        """A plain string, or a `Fn::Sub` over pseudo parameters only; None for anything else."""
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
            text = value["Fn::Sub"]
            for pseudo, literal in (
                ("AWS::StackName", self.config.stack_name),
                ("AWS::Region", self.config.region),
                ("AWS::AccountId", FAKE_ACCOUNT_ID),
                ("AWS::Partition", "aws"),
            ):
                text = text.replace("${" + pseudo + "}", literal)
            return None if "${" in text else text
        return None

    def _fix_state_machines(
        self, prepared: PreparedTemplate, outputs: dict[str, str], resources: dict[str, str]
    ) -> None:
        """Re-create each state machine through the Step Functions API with its substitutions applied.

        CloudFormation's copy lives in moto's non-executing backend and ignores
        DefinitionSubstitutions. The API copy gets the same name, hence the same
        ARN, so environment variables that reference it stay valid.
        """
        sfn = self.client("stepfunctions")
        for logical_id, keys in prepared.state_machines.items():
            definition = outputs[keys.definition_key]
            for placeholder, output_key in keys.substitution_keys.items():
                definition = definition.replace("${" + placeholder + "}", outputs[output_key])
            arn = resources[logical_id]
            name = arn.rsplit(":", 1)[-1]
            role = outputs.get(
                keys.role_key or "", f"arn:aws:iam::{FAKE_ACCOUNT_ID}:role/local-stepfunctions"
            )
            kind = outputs.get(keys.type_key or "", "STANDARD")
            created = sfn.create_state_machine(name=name, definition=definition, roleArn=role, type=kind)
            if created["stateMachineArn"] != arn:
                raise LocalStackError(f"{logical_id}: re-created ARN {created['stateMachineArn']} != {arn}")

    def _remove_moto_event_source_mappings(self) -> None:
        """moto's SQS mapping runs functions inside SendMessage and drops failures, its stream mapping
        inside the write that made the record (then empties the stream); the pollers replace both."""
        lambda_client = self.client("lambda")
        for mapping in lambda_client.list_event_source_mappings().get("EventSourceMappings", []):
            # Disable first: moto's queue keeps its own reference, which a delete leaves behind.
            lambda_client.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
            lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])
        # A table's reference survives both, and its stream ignores Enabled: drop it (moto runs here).
        from moto.dynamodb.models import dynamodb_backends

        for table in dynamodb_backends[FAKE_ACCOUNT_ID][self.config.region].tables.values():
            table.lambda_event_source_mappings.clear()

    def _load_functions(self, prepared: PreparedTemplate, resources: dict[str, str]) -> dict[str, str]:
        """Register each function's pool of execution environments (started on first use)."""
        lambda_client = self.client("lambda")
        concurrency = _sqs_maximum_concurrency(prepared)
        functions = {}
        for logical_id, source in prepared.functions.items():
            configuration = lambda_client.get_function_configuration(FunctionName=resources[logical_id])
            properties = prepared.cfn["Resources"][logical_id].get("Properties") or {}
            reserved = properties.get("ReservedConcurrentExecutions")
            spec = FunctionSpec(
                logical_id=logical_id,
                name=configuration["FunctionName"],
                arn=configuration["FunctionArn"],
                handler=source.handler,
                code_dir=source.code_dir,
                memory_mb=int(configuration.get("MemorySize", 128)),
                timeout_seconds=int(
                    self.config.timeout_overrides.get(logical_id) or configuration.get("Timeout", 3)
                ),
                environment=self._function_environment(prepared, configuration, source),
                max_concurrency=int(
                    self.config.concurrency_overrides.get(logical_id)
                    or (
                        reserved
                        if isinstance(reserved, int)
                        else concurrency.get(logical_id) or self.config.function_concurrency
                    )
                ),
            )
            containers = (
                None if self.start_lambda is None else samlocal.SamLocalFunction(spec, self.start_lambda)
            )
            self.dispatcher.register(spec, containers)
            functions[logical_id] = configuration["FunctionName"]
        return functions

    def _start_sam_local(self) -> None:
        """`sam build` (cached) for this machine, the --env-vars file, and start-lambda's warm containers."""
        architecture = samlocal.machine_architecture()
        try:
            built = samlocal.build(self.config.template_path, architecture)
            samlocal.write_json(
                self.config.sam_env_file,
                samlocal.sam_env_document(
                    self.client("lambda"),
                    self.client("cloudformation"),
                    self.config.stack_name,
                    self.endpoint_url,
                ),
            )
            self.start_lambda = samlocal.StartLambda(
                built, self.config.sam_env_file, architecture, self._sam_log_line
            )
            self.start_lambda.wait_ready()
        except samlocal.SamLocalError as exc:
            raise LocalStackError(str(exc)) from exc

    def _sam_log_line(self, text: str) -> None:
        """start-lambda's own lines and its containers' output, which it interleaves on one stream."""
        self._log_line(FunctionLogLine("sam", "sam local start-lambda", 0, None, "stdout", text, time.time()))

    def _function_environment(
        self, prepared: PreparedTemplate, configuration: dict[str, Any], source: FunctionSource
    ) -> dict[str, str]:
        """A worker's whole environment: the function's variables, then what the Lambda service sets.

        Nothing of this process's environment leaks in. Local additions: the endpoint (boto3 reads
        AWS_ENDPOINT_URL), no X-Ray daemon (POWERTOOLS_TRACE_DISABLED), no ~/.aws files, unbuffered
        output (the pool reads it line by line), and the config's environment_overrides.
        """
        name = configuration["FunctionName"]
        variables = {
            k: str(v) for k, v in (configuration.get("Environment") or {}).get("Variables", {}).items()
        }
        service = {
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(configuration.get("MemorySize", 128)),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{secrets.token_hex(16)}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{configuration.get('Runtime', 'python3.12')}",
            "AWS_REGION": self.config.region,
            "AWS_DEFAULT_REGION": self.config.region,
            "_HANDLER": source.handler,
            "LAMBDA_TASK_ROOT": str(source.code_dir),
            "TZ": ":UTC",
            "LANG": "en_US.UTF-8",
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin")),
            "PYTHONPATH": os.pathsep.join(str(layer) for layer in prepared.layer_dirs),
            **self._function_credentials(source.logical_id),
        }
        local = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        return {**variables, **service, **local, **self.config.environment_overrides}

    def _function_credentials(self, logical_id: str) -> dict[str, str]:
        """The credentials a function's environment gets, as on Lambda: a session of its own role
        (from moto's STS, so the IAM audit knows whose calls they are)."""
        if self.iam_audit is None:
            return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        return self.iam_audit.credentials_for(logical_id)

    def _start_iam_audit(
        self,
        prepared: PreparedTemplate,
        parameters: dict[str, str],
        resources: dict[str, str],
        types: dict[str, str],
    ) -> None:
        if not self.config.iam_audit:
            return
        deployed = DeployedStack(
            self.config.stack_name, self.config.region, FAKE_ACCOUNT_ID, parameters, resources, types
        )
        self.iam_audit = FunctionCallAudit.from_template(prepared.cfn, deployed)
        self.iam_audit.install(self.endpoint_url)

    def iam_report(self) -> AuditReport:
        """Every call a function made so far, decided against its role (denied, unused, unmapped)."""
        if self.iam_audit is None:
            raise LocalStackError("the IAM audit is off (LocalStackConfig.iam_audit)")
        return self.iam_audit.report()

    def _apply_bucket_notifications(
        self, prepared: PreparedTemplate, outputs: dict[str, str], resources: dict[str, str]
    ) -> None:
        """S3 → SQS/Lambda notifications from the template, through the S3 API (moto's CFN drops them).

        moto delivers them as AWS does (an s3:TestEvent first); S3 → SQS then reaches
        functions through the pollers, S3 → Lambda through the dispatcher.
        """
        s3 = self.client("s3")
        for logical_id, deferred in prepared.bucket_notifications.items():
            config = notification_api_config(resolve_deferred(deferred, outputs))
            s3.put_bucket_notification_configuration(
                Bucket=resources[logical_id], NotificationConfiguration=config
            )

    def _set_api_key_secret(self, resources: dict[str, str], types: dict[str, str]) -> None:
        secrets = [lid for lid, kind in types.items() if kind == "AWS::SecretsManager::Secret"]
        if not secrets or not (self.simulator is not None or self.config.provider_url):
            return
        named = [lid for lid in secrets if "apikey" in lid.lower().replace("_", "")]
        targets = named or (secrets if len(secrets) == 1 else [])
        client = self.client("secretsmanager")
        for logical_id in targets:
            client.put_secret_value(SecretId=resources[logical_id], SecretString=self.config.api_key)

    def _start_pollers(
        self, prepared: PreparedTemplate, resources: dict[str, str], functions: dict[str, str]
    ) -> None:
        for source in prepared.sqs_sources:
            if not source.enabled:
                continue
            # The event source mapping reads the queue and polls it with the function's role, as on AWS.
            sqs_client = self.client("sqs", self._function_credentials(source.function_logical_id))
            queue_url = resources[source.queue_logical_id]
            queue_arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            function_name = functions.get(source.function_logical_id)
            if function_name is None:
                raise LocalStackError(
                    f"{source.function_logical_id}: SQS source for a function with no handler"
                )
            lambda_client = self._invoke_client(function_name)
            mapping = SqsMapping(
                queue_url=queue_url,
                queue_arn=queue_arn,
                function_name=function_name,
                batch_size=source.batch_size,
                max_batching_window_seconds=source.max_batching_window_seconds,
                report_batch_item_failures=source.report_batch_item_failures,
                concurrency=source.maximum_concurrency or self.config.sqs_concurrency,
            )
            poller = SqsPoller(mapping, sqs_client, lambda_client, self.config.region)
            poller.start()
            self.pollers.append(poller)
        for stream_source in prepared.stream_sources:
            if stream_source.enabled:
                self._start_stream_poller(stream_source, resources, functions)

    def _start_stream_poller(
        self, source: StreamEventSource, resources: dict[str, str], functions: dict[str, str]
    ) -> None:
        """The table's stream read with the function's role, as the Lambda service reads it."""
        credentials = self._function_credentials(source.function_logical_id)
        function_name = functions.get(source.function_logical_id)
        if function_name is None:
            raise LocalStackError(
                f"{source.function_logical_id}: stream source for a function with no handler"
            )
        table_name = resources[source.table_logical_id]
        stream_arn = self.client("dynamodb").describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        mapping = StreamMapping(
            stream_arn=stream_arn,
            table_name=table_name,
            function_name=function_name,
            function_arn=self.dispatcher.functions[function_name].arn,
            starting_position=source.starting_position,
            batch_size=source.batch_size,
            max_batching_window_seconds=source.max_batching_window_seconds,
            report_batch_item_failures=source.report_batch_item_failures,
            maximum_retry_attempts=source.maximum_retry_attempts,
            on_failure_queue_url=resources.get(source.on_failure_logical_id or ""),
        )
        poller = StreamPoller(
            mapping,
            self.client("dynamodbstreams", credentials),
            self._invoke_client(function_name),
            self.client("sqs", credentials),
            self.config.region,
        )
        poller.start()
        self.stream_pollers.append(poller)

    def _invoke_client(self, function_name: str) -> LambdaClient:
        """The event source's Lambda client: no retries of its own (a failed batch is the poller's to
        retry), and a read timeout past the function's Timeout."""
        timeout = self.dispatcher.functions[function_name].timeout_seconds
        return self._session.client(  # type: ignore[union-attr]
            "lambda",
            endpoint_url=self.endpoint_url,
            config=Config(retries={"max_attempts": 0}, read_timeout=timeout + 60, max_pool_connections=20),
        )

    def _check_ports_free(self) -> None:
        """A port in use fails at once, by name (moto's server thread would die and leave start()
        waiting for ever)."""
        host = self.config.host
        for option, port in (("--port", self.config.port), ("--sim-port", self.config.sim_port)):
            if port and not port_is_free(port, host):
                raise LocalStackError(f"{option} {port}: {host}:{port} is already in use")

    def _refuse_a_running_stack_in_the_state_file(self) -> None:
        """Never strand a running stack: its state file is how the CLI finds it."""
        path = self.config.state_file
        endpoint = _state_file_endpoint(path)
        if endpoint is not None and connect_problem(endpoint) is None:
            raise LocalStackError(
                f"a local stack is already running at {endpoint} (state file {path}); stop it first, "
                "or start this one with another --state-file"
            )

    def _owns_state_file(self) -> bool:
        endpoint = _state_file_endpoint(self.config.state_file)
        return endpoint is not None and self._info is not None and endpoint == self._info.endpoint_url

    def _write_state_file(self) -> None:
        path = self.config.state_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info.state_document(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    def _stop_running_executions(self) -> None:
        try:
            sfn = self.client("stepfunctions")
            for machine in sfn.list_state_machines().get("stateMachines", []):
                running = sfn.list_executions(
                    stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING"
                )
                for execution in running.get("executions", []):
                    sfn.stop_execution(executionArn=execution["executionArn"], error="LocalStackStopped")
        except Exception:  # best effort: the server is going away anyway
            LOG.debug("could not stop running executions", exc_info=True)

    def _reset_moto(self) -> None:
        """Free moto's (process-global) backends and restore its config for whoever runs next."""
        try:
            endpoint = self.endpoint_url
            if self._saved_moto_config is not None:
                requests.post(f"{endpoint}/moto-api/config", json=self._saved_moto_config, timeout=10)
            requests.post(f"{endpoint}/moto-api/reset", timeout=30)
        except Exception:
            LOG.debug("could not reset moto", exc_info=True)


_AWS_QUEUE_URL = re.compile(r"^https://sqs\.[a-z0-9-]+\.amazonaws\.com/(\d{12}/[^/]+)$")


def _state_file_endpoint(path: Path | None) -> str | None:
    """The endpoint a state file names, or None (no file, or one nothing can use)."""
    if path is None:
        return None
    try:
        endpoint = json.loads(path.read_text(encoding="utf-8"))["endpointUrl"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return endpoint if isinstance(endpoint, str) else None


def _seed_moto(endpoint: str, seed: int) -> None:
    """Seed moto's `mock_random`, the source of its generated names and ids."""
    requests.post(f"{endpoint}/moto-api/seed", params={"a": str(seed)}, timeout=10).raise_for_status()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether host:port can be bound as werkzeug binds it (SO_REUSEADDR: TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def local_queue_url(value: str, endpoint: str) -> str:
    """moto's CloudFormation returns AWS-looking queue URLs; show users ones that point at the stack."""
    match = _AWS_QUEUE_URL.match(value)
    return f"{endpoint}/{match.group(1)}" if match else value


def _path_from_environment(variable: str) -> Path | None:
    value = os.environ.get(variable, "").strip()
    return Path(value) if value else None


def _sqs_maximum_concurrency(prepared: PreparedTemplate) -> dict[str, int]:
    """Function logical id -> its SQS source's ScalingConfig.MaximumConcurrency (the most, if several)."""
    found: dict[str, int] = {}
    for source in prepared.sqs_sources:
        if source.enabled and source.maximum_concurrency:
            found[source.function_logical_id] = max(
                found.get(source.function_logical_id, 0), source.maximum_concurrency
            )
    return found


def _declared_parameters(template_path: Path) -> dict[str, dict[str, Any]]:
    from imagejobs_tools.local.template import load_sam_template

    return dict(load_sam_template(template_path).get("Parameters") or {})


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _placeholder_zip() -> bytes:
    """The code moto stores for every function: never run (the workers run the checkout's code)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "imagejobs local stack: handlers run from the checkout\n")
    return buffer.getvalue()
