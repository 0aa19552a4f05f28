"""`sam local`: the functions in Lambda containers, from the `sam build` artifacts (docs/local-stack.md).

- `build()`: `sam build` of the template for this machine's architecture, into its own build
  directory (`.aws-sam/local`): the deployable build (`.aws-sam/build`, arm64) is never overwritten by
  an x86_64 one;
- `bridge_address()`: the address of this machine on Docker's bridge, where the local stack listens
  so that containers can reach it (they cannot reach this machine's 127.0.0.1);
- `sam_env_document()`: the `--env-vars` file for a running local stack (`imagejobs local sam-env`);
- `StartLambda`: `sam local start-lambda` with warm containers, and the invocations the local stack
  sends it (`imagejobs local up --lambda sam`).

`python -m imagejobs_tools.local.samlocal build` is the last step of `make sam-local-setup`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # the standard library only at import: `imagejobs --help` imports this module
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_lambda import LambdaClient

    from imagejobs_tools.local.workers import FunctionSpec, InvocationOutcome

BUILD_DIR = Path(".aws-sam/local")
# Where `local sam-env` and `local up --lambda sam` write the --env-vars file.
DEFAULT_SAM_ENV_FILE = Path(".imagejobs/sam-env.json")
CACHE_DIR = Path(".aws-sam/local-cache")
# The template parameter that picks the functions' and layer's instruction set.
ARCHITECTURE_PARAMETER = "Architecture"
# botocore's endpoint for every client; the template declares it empty (docs/deploy.md).
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
# EAGER warm containers start one container per function before start-lambda answers.
START_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 60.0
# How long SAM waits for a new container to answer (its default is 20 s).
CONTAINER_CONNECTION_TIMEOUT_SECONDS = 120


class SamLocalError(RuntimeError):
    """`sam local` cannot run here; the message says why."""


def machine_architecture() -> str:
    """The Lambda architecture this machine runs without emulation."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise SamLocalError(f"no Lambda architecture for this machine ({machine})")


def sam_executable() -> str:
    """`sam` from this interpreter's venv (the project pins it), else from PATH."""
    beside = Path(sys.executable).parent / "sam"
    found = str(beside) if beside.is_file() else shutil.which("sam")
    if found is None:
        raise SamLocalError("`sam` is not installed: run `make venv`")
    return found


def sam_environment() -> dict[str, str]:
    """This process's environment for a `sam` subprocess: no telemetry, the venv first on PATH (its
    python3.12 is what `sam build` uses)."""
    environment = dict(os.environ)
    environment["SAM_CLI_TELEMETRY"] = "0"
    # SAM waits 20 s for a new container's runtime API, then reports "No response from invoke
    # container" on stderr and exits 0 with no response: on a loaded 2-core machine (the suite's
    # other worker running a stack) a first container has taken longer than that.
    environment.setdefault("SAM_CLI_CONTAINER_CONNECTION_TIMEOUT", str(CONTAINER_CONNECTION_TIMEOUT_SECONDS))
    environment["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), environment.get("PATH", "")))
    return environment


def parameter_overrides(architecture: str) -> list[str]:
    return ["--parameter-overrides", f"{ARCHITECTURE_PARAMETER}={architecture}"]


def build_options(template: Path, architecture: str) -> list[str]:
    """`sam build`'s options for `sam local` here (what `local sam-env` tells users to run): the build
    and its cache beside the template, whatever the working directory."""
    project = template.parent
    return [
        "--template-file",
        str(template),
        "--build-dir",
        str(project / BUILD_DIR),
        "--cached",
        "--cache-dir",
        str(project / CACHE_DIR),
        *parameter_overrides(architecture),
    ]


def container_options(built_template: Path, architecture: str) -> list[str]:
    """The options every `sam local invoke|start-lambda` here needs."""
    return [
        "--template-file",
        str(built_template),
        # The image is this machine's (pulled once, or the stand-in): never ask a registry.
        "--skip-pull-image",
        # Each container's port is mapped on loopback only, never on the machine's other addresses.
        "--container-host-interface",
        "127.0.0.1",
        *parameter_overrides(architecture),
    ]


# What a build is made of, beside the template: a build from the same bytes is not redone.
BUILD_SOURCES = ("functions", "layers", "statemachine")
BUILD_STAMP = ".imagejobs-inputs"


def build_inputs_digest(template: Path, architecture: str) -> str:
    digest = hashlib.sha256(architecture.encode())
    files = [template, *(f for d in BUILD_SOURCES for f in sorted((template.parent / d).rglob("*")))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(template.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build(template: Path, architecture: str) -> Path:
    """`sam build` (cached) for `architecture`; returns the built template.

    Skipped when the build dir already holds a build of the same inputs: `sam build` empties its
    build dir first, so a second build (the setup run twice, `local up --lambda sam` after it)
    would pull the artifacts from under a `sam local invoke` or start-lambda that uses them."""
    built = template.parent / BUILD_DIR / "template.yaml"
    stamp = template.parent / BUILD_DIR / BUILD_STAMP
    inputs = build_inputs_digest(template, architecture)
    if built.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == inputs:
        return built
    command = [sam_executable(), "build", *build_options(template, architecture)]
    done = subprocess.run(command, env=sam_environment(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SamLocalError(f"sam build failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    stamp.write_text(inputs, encoding="utf-8")
    return built


def bridge_address() -> str:
    """This machine's address on Docker's default bridge (the gateway its containers route to)."""
    done = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    address = done.stdout.strip()
    if done.returncode != 0 or not address:
        raise SamLocalError(
            "no Docker engine answers (`docker network inspect bridge` failed): run `make sam-local-setup`"
        )
    return address


def sam_env_document(
    lambda_client: LambdaClient, cfn_client: CloudFormationClient, stack_name: str, endpoint_url: str
) -> dict[str, Any]:
    """`sam local --env-vars` for the stack: each function's variables as the stack resolved them
    (resource names, the simulator's URL, the key's secret), and AWS_ENDPOINT_URL at the stack."""
    document: dict[str, Any] = {}
    paginator = cfn_client.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_name):
        for resource in page["StackResourceSummaries"]:
            if resource["ResourceType"] != "AWS::Lambda::Function":
                continue
            configuration = lambda_client.get_function_configuration(
                FunctionName=resource["PhysicalResourceId"]
            )
            variables = dict((configuration.get("Environment") or {}).get("Variables", {}))
            variables[ENDPOINT_VARIABLE] = endpoint_url
            document[resource["LogicalResourceId"]] = variables
    return dict(sorted(document.items()))


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class SamLocalFunction:
    """A function's execution environments under `local up --lambda sam`: its warm container."""

    spec: FunctionSpec
    start_lambda: StartLambda

    def invoke(self, event: str) -> InvocationOutcome:
        return self.start_lambda.invoke(self.spec.logical_id, event, self.spec.timeout_seconds)

    def close(self) -> None:
        """Nothing of its own: the stack stops start-lambda, and with it every container."""


class StartLambda:
    """`sam local start-lambda` on 127.0.0.1: one warm container per function, started before it
    answers (EAGER), each container's port mapped on 127.0.0.1 only. Every line it writes goes to
    `log_line`. `invoke` is the Lambda Invoke API's synchronous call, as moto would make it."""

    def __init__(
        self,
        built_template: Path,
        env_vars_file: Path,
        architecture: str,
        log_line: Callable[[str], None],
    ) -> None:
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_line = log_line
        command = [
            sam_executable(),
            "local",
            "start-lambda",
            *container_options(built_template, architecture),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--env-vars",
            str(env_vars_file),
            "--warm-containers",
            "EAGER",
        ]
        self.process = subprocess.Popen(
            command,
            env=sam_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C on `local up` reaches it only through stop()
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        import requests

        self._session = requests.Session()

    def _read(self, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            self._log_line(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SamLocalError(f"sam local start-lambda exited ({self.process.returncode}); see its log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise SamLocalError(f"sam local start-lambda did not answer within {timeout:g} s")

    def invoke(self, logical_id: str, event: str, timeout_seconds: float) -> InvocationOutcome:
        """(payload_json, errored), as the local stack's dispatcher returns them."""
        response = self._session.post(
            f"{self.url}/2015-03-31/functions/{logical_id}/invocations",
            data=event.encode("utf-8"),
            timeout=timeout_seconds + 30,
        )
        errored = response.status_code != 200 or "x-amz-function-error" in response.headers
        return response.text or "null", errored

    def stop(self) -> None:
        """SIGINT, as Ctrl-C: start-lambda then removes its warm containers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagejobs_tools.local.samlocal")
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help=f"sam build for sam local, into {BUILD_DIR}")
    build_parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    build_parser.add_argument("--architecture", default=None, help="default: this machine's")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    architecture = args.architecture or machine_architecture()
    try:
        built = build(args.template, architecture)
    except SamLocalError as exc:
        print(f"sam-local-setup: {exc}", file=sys.stderr)
        return 1
    print(f"sam-local-setup: sam build ({architecture}) -> {built} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
