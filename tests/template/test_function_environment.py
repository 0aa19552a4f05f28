"""Each function's template environment is exactly what its code reads: observed, not listed.

Every handler is imported as Lambda's init imports it (a fresh interpreter, its code directory and
the layer on sys.path, its template environment) with ``os.environ`` replaced by a mapping that
records every variable read and whether our code or a library read it. Handlers parse their settings
at import, so the import is where configuration is read. The variables read must be the variables
the template declares for the function (Globals merged in): none missing, none unused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO_ROOT, Template, function_environments, load_sam_template, resources_of_type

pytestmark = pytest.mark.template

# Runs in the fresh interpreter: argv = code directory, layer directory, handler module file.
_IMPORT_RECORDING_READS = r"""
import importlib.util
import json
import os
import sys
from collections.abc import MutableMapping

code_dir, layer_dir, module_file = sys.argv[1:4]
sys.path[:0] = [code_dir, layer_dir]


class RecordingEnviron(MutableMapping):
    def __init__(self, values):
        self.values = dict(values)
        self.reads = {}  # variable -> "project" once our code read it, else "library"
        self.iterated = False

    def _reader(self):
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename.startswith("<"):  # os, Mapping.get, ...
            frame = frame.f_back
        ours = frame is not None and frame.f_code.co_filename.startswith((code_dir, layer_dir))
        return "project" if ours else "library"

    def __getitem__(self, key):  # get, getenv and `in` come through here
        if self.reads.get(key) != "project":
            self.reads[key] = self._reader()
        return self.values[key]

    def __setitem__(self, key, value):
        self.values[key] = value

    def __delitem__(self, key):
        del self.values[key]

    def __iter__(self):
        self.iterated = True
        return iter(self.values)

    def __len__(self):
        return len(self.values)

    def copy(self):
        return dict(self.values)


environ = os.environ = RecordingEnviron(os.environ)
error = None
try:
    spec = importlib.util.spec_from_file_location("imagejobs_fn_probe", module_file)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
except BaseException as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"reads": environ.reads, "iterated": environ.iterated, "error": error}))
"""

# Set by the Lambda runtime in every function (AWS_REGION, AWS_LAMBDA_FUNCTION_NAME, _HANDLER, ...):
# not the template's to declare.
RUNTIME_PREFIXES = ("AWS_", "_AWS_", "LAMBDA_", "_X_AMZN_")
RUNTIME_NAMES = {"_HANDLER"}
LAMBDA_RUNTIME_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "_HANDLER": "app.lambda_handler",
}


# Read by a library for us: the functions rely on them, so they must be declared.
READ_ON_OUR_BEHALF = {"LOG_LEVEL"}
# Declared, with these values, only so that `sam local --env-vars` can set them (sam local overrides
# declared variables alone; `imagejobs local sam-env`). Read by botocore, never by our code: an empty
# AWS_ENDPOINT_URL is unset, so the deployed functions use AWS's endpoints. The import below cannot
# tell such a read from botocore's look-up of its other optional knobs, hence the explicit list.
DECLARED_FOR_SAM_LOCAL = {"AWS_ENDPOINT_URL": ""}
# Botocore's retry policy for every client of every function, read when a client is made (after
# the import below): "standard" retries SQS's RequestThrottled (HTTP 400), "legacy" does not.
BOTOCORE_RETRIES = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "5"}


def counts(variable: str, reader: str, declared: set[str]) -> bool:
    """Whether a read says the function uses the variable."""
    if variable.startswith(RUNTIME_PREFIXES) or variable in RUNTIME_NAMES:
        return False
    # Libraries look up their optional knobs on import whether or not they are set (Powertools'
    # POWERTOOLS_DEV, botocore's BOTO_DISABLE_CRT, wrapt's WRAPT_DISABLE_EXTENSIONS, HOME for
    # ~/.aws): unset, they keep the defaults the functions want. Such a variable is used once our
    # code reads it or the template sets it (LOG_LEVEL, which Powertools reads on our behalf).
    return reader == "project" or variable in declared or variable in READ_ON_OUR_BEHALF


def _function_code(sam_template: Template) -> dict[str, tuple[Path, Path]]:
    """Logical id -> (handler module file, layer directory), as the template lays them out."""
    handler_default = sam_template["Globals"]["Function"]["Handler"]
    [layer] = resources_of_type(sam_template, "AWS::Serverless::LayerVersion").values()
    layer_dir = REPO_ROOT / layer["Properties"]["ContentUri"]
    code = {}
    for name, function in resources_of_type(sam_template, "AWS::Serverless::Function").items():
        properties = function["Properties"]
        module = properties.get("Handler", handler_default).rsplit(".", 1)[0]
        code[name] = (REPO_ROOT / properties["CodeUri"] / f"{module}.py", layer_dir)
    return code


def _import_recording_reads(
    module_file: Path, layer_dir: Path, environment: dict[str, str]
) -> dict[str, Any]:
    code_dir = str(module_file.parent.resolve())
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_RECORDING_READS, code_dir, str(layer_dir.resolve()), str(module_file)],
        env={"PATH": "/usr/bin:/bin", **LAMBDA_RUNTIME_ENV, "LAMBDA_TASK_ROOT": code_dir, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "function", sorted(resources_of_type(load_sam_template(), "AWS::Serverless::Function"))
)
def test_the_template_declares_exactly_the_variables_the_function_reads(
    function: str, sam_template: Template, translated_template: Template
) -> None:
    environment = function_environments(translated_template)[function]
    assert {name: environment.get(name) for name in DECLARED_FOR_SAM_LOCAL} == DECLARED_FOR_SAM_LOCAL
    assert {name: environment.get(name) for name in BOTOCORE_RETRIES} == BOTOCORE_RETRIES
    declared = set(environment) - set(DECLARED_FOR_SAM_LOCAL) - set(BOTOCORE_RETRIES)
    # Values from sam local's events/env.json (test_events.py keeps its names the template's).
    samples = json.loads((REPO_ROOT / "events" / "env.json").read_text(encoding="utf-8"))[function]
    module_file, layer_dir = _function_code(sam_template)[function]
    result = _import_recording_reads(
        module_file, layer_dir, {name: samples.get(name, "") for name in declared}
    )

    assert not result["iterated"], f"{function} walks the whole environment: its reads cannot be told apart"
    used = {name for name, reader in result["reads"].items() if counts(name, reader, declared)}
    # "read, not declared": the function would fail (or fall back to a default) on AWS;
    # "declared, never read": the template hands the function something it does not use.
    assert {
        "read, not declared": sorted(used - declared),
        "declared, never read": sorted(declared - used),
    } == {
        "read, not declared": [],
        "declared, never read": [],
    }, f"{function} (its init: {result['error'] or 'ok'}; a failed init stops reading)"
    assert result["error"] is None, f"{function} fails its init with its template environment"
