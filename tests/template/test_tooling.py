"""The template passes AWS's own tooling offline: sam validate --lint, cfn-lint and sam build."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, TEMPLATE_PATH, require_tool, tool_environment

# One xdist worker runs these, so the slow build never runs twice in parallel.
pytestmark = [pytest.mark.template, pytest.mark.xdist_group("sam-cli")]


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=tool_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_sam_validate_with_lint() -> None:
    result = _run([require_tool("sam"), "validate", "--lint", "--template-file", str(TEMPLATE_PATH)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint() -> None:
    result = _run([require_tool("cfn-lint"), str(TEMPLATE_PATH)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_build_puts_domain_package_and_dependencies_in_the_layer(tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    result = _run(
        [
            require_tool("sam"),
            "build",
            # Not cached: a cached build keeps dependencies in .aws-sam/deps inside the repo.
            "--no-cached",
            "--template-file",
            str(TEMPLATE_PATH),
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    layer = build_dir / "SharedLayer" / "python"
    assert (layer / "imagejobs" / "__init__.py").is_file()
    assert (layer / "imagejobs" / "data").is_dir()
    for package in ("requests", "aws_lambda_powertools", "aws_xray_sdk"):
        assert (layer / package / "__init__.py").is_file(), f"{package} missing from the layer"
    # arm64 functions need aarch64 binaries in the layer.
    binaries = [path.name for path in layer.rglob("*.so")]
    assert binaries and all("aarch64" in name for name in binaries), binaries
    for function in (
        "IntakeFunction",
        "PollFunction",
        "StoreOutputsFunction",
        "FinalizeFunction",
        "S3IntakeFunction",
    ):
        assert (build_dir / function / "app.py").is_file(), f"{function} built without its handler"
    size = sum(path.stat().st_size for path in layer.rglob("*") if path.is_file())
    assert size < 250 * 1024 * 1024  # Lambda's unzipped limit for functions + layers
