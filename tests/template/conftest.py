"""Shared helpers for the template tests: the offline samtranslator translation and the sam/cfn-lint tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
ARCHITECTURE_DOC = REPO_ROOT / "docs" / "architecture.md"
ARTIFACT_BUCKET = "imagejobs-template-tests"

Template = dict[str, Any]


def tool_environment() -> dict[str, str]:
    """Environment for sam/cfn-lint: offline, no telemetry, the venv (which has python3.12) first on PATH."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["SAM_CLI_TELEMETRY"] = "0"
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    return env


def require_tool(name: str) -> str:
    """Path of a CLI tool; CI installs them, so a missing one fails (never skips)."""
    path = shutil.which(name, path=tool_environment()["PATH"])
    if path is None:
        pytest.fail(
            f"`{name}` is not installed in this environment: run `pip install -e '.[dev]'` (or `make venv`)"
        )
    return path


def load_sam_template(path: Path = TEMPLATE_PATH) -> Template:
    """The SAM template as data, short-form intrinsics (!Ref, !If, ...) turned into their long form."""
    from samtranslator.yaml_helper import yaml_parse

    template: Template = yaml_parse(path.read_text(encoding="utf-8"))
    return template


def prepare_for_translation(template: Template, base_dir: Path = REPO_ROOT) -> Template:
    """Do what `sam package` would: local code folders become S3 URIs, DefinitionUri is inlined."""
    prepared: Template = json.loads(json.dumps(template))
    for resource in prepared.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Function" and isinstance(properties.get("CodeUri"), str):
            properties["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/{properties['CodeUri'].strip('/')}.zip"
        elif kind == "AWS::Serverless::LayerVersion" and isinstance(properties.get("ContentUri"), str):
            properties["ContentUri"] = f"s3://{ARTIFACT_BUCKET}/{properties['ContentUri'].strip('/')}.zip"
        elif kind == "AWS::Serverless::StateMachine" and isinstance(properties.get("DefinitionUri"), str):
            definition_path = base_dir / properties.pop("DefinitionUri")
            properties["Definition"] = json.loads(definition_path.read_text(encoding="utf-8"))
    return prepared


class _NoManagedPolicies:
    """samtranslator's managed-policy loader without IAM: the template names managed policies by ARN."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template: Template, parameter_values: Mapping[str, Any] | None = None) -> Template:
    """Offline SAM → CloudFormation translation (see docs local-emulation-facts)."""
    from samtranslator.translator.transform import transform

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    translated: Template = transform(
        prepare_for_translation(template), dict(parameter_values or {}), _NoManagedPolicies()
    )
    return translated


def resources_of_type(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == resource_type}


def function_environments(translated: Template) -> dict[str, dict[str, Any]]:
    """Each function's variables as SAM deploys them: Globals' merged into its own Environment."""
    return {
        name: function["Properties"].get("Environment", {}).get("Variables", {})
        for name, function in resources_of_type(translated, "AWS::Lambda::Function").items()
    }


def iam_statements(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    """(resource name, statement) for every inline IAM statement of every role and policy."""
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
        elif resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            documents = [properties["PolicyDocument"]]
        else:
            continue
        for document in documents:
            statements = document["Statement"]
            for statement in statements if isinstance(statements, list) else [statements]:
                yield name, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def architecture_section(title: str) -> str:
    """The text of one `## title` section of docs/architecture.md (the contract between the parts)."""
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    if match is None:
        raise AssertionError(f"docs/architecture.md has no '## {title}' section")
    return match.group(1)


@pytest.fixture(scope="session")
def sam_template() -> Template:
    return load_sam_template()


@pytest.fixture(scope="session")
def translated_template(sam_template: Template) -> Template:
    """The CloudFormation the template becomes, with default parameters (intrinsics left unresolved)."""
    return translate(sam_template)
