"""Cold start: import time of each handler module (median of N `python -X importtime` runs), each
function's first invocation in the local stack's execution environments (Lambda's REPORT line:
Init Duration, Duration) and the shared layer's built size (`sam build` into a temporary directory).

    .venv/bin/python bench/cold_start.py            # 5 runs per handler + sam build of the layer
    .venv/bin/python bench/cold_start.py --smoke    # 1 run per handler, no sam build

Each run is a fresh interpreter with the environment a Lambda runtime gives
(`LAMBDA_TASK_ROOT`, `AWS_LAMBDA_FUNCTION_NAME`, a value for every variable the functions
read: each parses its settings at import), so Powertools Tracer behaves as with
`Tracing: Active`. The figure is the `app` line's cumulative import time (the interpreter's
own start-up is excluded).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from _common import REPO, emit, local_stack, parser, scan_records, send_jobs, wait_until

TARGET_MS = 300.0
FUNCTIONS = sorted(p.parent.name for p in (REPO / "functions").glob("*/app.py"))


def lambda_like_env(function: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "functions" / function), str(REPO / "layers" / "shared")]
            ),
            "LAMBDA_TASK_ROOT": str(REPO / "functions" / function),
            "AWS_LAMBDA_FUNCTION_NAME": f"imagejobs-{function}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_SERVICE_NAME": "imagejobs",
            "POWERTOOLS_METRICS_NAMESPACE": "ImageJobs",
            "JOBS_TABLE": "jobs",
            "OUTPUT_BUCKET": "bucket",
            "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:imagejobs-jobs",
            "PROVIDER_BASE_URL": "https://provider.example.com",
            "PROVIDER_API_KEY_SECRET": "secret",
            "JOBS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs",
            "UPLOADS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/uploads",
            "EVENT_BUS_NAME": "imagejobs-events",
            "WEBHOOK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/webhooks",
            "WEBHOOK_DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/webhooks-dlq",
            "WEBHOOK_SIGNING_SECRET": "signing-secret",
            "BATCH_RESULTS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/batch-results",
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def import_ms(function: str) -> tuple[float, float, list[tuple[str, float]]]:
    """(cumulative ms of `import app`, CPU ms of the whole child, the heaviest imports under it)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app"],
        env=lambda_like_env(function),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO / "functions" / function,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ms = 1000 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    total = 0.0
    children: list[tuple[str, float]] = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if not cumulative.strip().isdigit():
            continue
        depth = len(name) - len(name.lstrip(" "))
        if name.strip() == "app" and depth == 1:
            total = int(cumulative) / 1000.0
        elif depth <= 3:
            children.append((name.strip(), int(cumulative) / 1000.0))
    children.sort(key=lambda item: -item[1])
    return total, cpu_ms, children[:4]


DEFERRED_SNIPPET = """
import time
import app
started = time.perf_counter()
import boto3
boto3.client("sts")
print(round((time.perf_counter() - started) * 1000, 1))
"""


def deferred_ms(function: str) -> float:
    """What the lazy import moved to the first invocation: boto3 + one client."""
    result = subprocess.run(
        [sys.executable, "-c", DEFERRED_SNIPPET],
        env=lambda_like_env(function),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO / "functions" / function,
    )
    return float(result.stdout.strip().splitlines()[-1])


def build_layer() -> dict[str, float | str]:
    """`sam build SharedLayer` into a temp dir; unzipped and zipped sizes of the result."""
    sam = shutil.which("sam", path=str(REPO / ".venv" / "bin")) or shutil.which("sam")
    if sam is None:
        return {"status": "sam not found"}
    with tempfile.TemporaryDirectory(prefix="imagejobs-layer-") as tmp:
        build_dir = Path(tmp) / "build"
        env = {
            **os.environ,
            "SAM_CLI_TELEMETRY": "0",
            "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sam, "build", "SharedLayer", "--template", str(REPO / "template.yaml"),
             "--build-dir", str(build_dir), "--cache-dir", str(Path(tmp) / "cache")],
            env=env, cwd=tmp, capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            return {"status": f"sam build failed: {done.stderr.strip().splitlines()[-1:]}"}
        layer_dir = build_dir / "SharedLayer"
        files = [p for p in layer_dir.rglob("*") if p.is_file()]
        unzipped = sum(p.stat().st_size for p in files)
        archive = Path(tmp) / "layer.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.relative_to(layer_dir))
        biggest: dict[str, int] = {}
        for path in files:
            parts = path.relative_to(layer_dir).parts
            top = parts[1] if len(parts) > 2 and parts[0] == "python" else parts[0]
            biggest[top] = biggest.get(top, 0) + path.stat().st_size
        top = sorted(biggest.items(), key=lambda item: -item[1])[:5]
        return {
            "status": "built",
            "buildSeconds": round(seconds, 1),
            "unzippedMB": round(unzipped / 1e6, 1),
            "zippedMB": round(archive.stat().st_size / 1e6, 1),
            "largestMB": ", ".join(f"{name} {size / 1e6:.1f}" for name, size in top),
        }


REPORT_FIELD = re.compile(r"(Init Duration|Duration): ([0-9.]+) ms")


def stack_cold_starts() -> dict[str, dict[str, float]]:
    """Each function's first invocation in the local stack's execution environments, from the REPORT
    line Lambda writes: `Init Duration` (a fresh interpreter, then the handler's import with its own
    environment) and `Duration` (that first invocation, building its clients and connections)."""
    with local_stack(poll_interval=1, sim_latency=(0.2, 0.3)) as stack:
        send_jobs(stack, [{"jobId": "cold-start-1", "prompt": "a lighthouse at dawn, cold start"}])
        wait_until(
            lambda: any(r.get("status") == "COMPLETED" for r in scan_records(stack)),
            timeout=120,
            what="the job COMPLETED",
        )
        lines = list(stack.function_logs)
    figures: dict[str, dict[str, float]] = {}
    for line in lines:
        if line.text.startswith("REPORT") and "Init Duration" in line.text and line.logical_id not in figures:
            fields = dict(REPORT_FIELD.findall(line.text))
            figures[line.logical_id] = {
                "initMs": float(fields["Init Duration"]),
                "firstInvocationMs": float(fields["Duration"]),
            }
    return figures


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    runs = 1 if args.smoke else 5
    rows: list[tuple[str, object, str]] = []
    handlers: dict[str, dict[str, object]] = {}
    for function in FUNCTIONS:
        samples, cpu = [], []
        heaviest: list[tuple[str, float]] = []
        for _ in range(runs):
            total, cpu_ms, heaviest = import_ms(function)
            samples.append(total)
            cpu.append(cpu_ms)
        median = statistics.median(samples)
        deferred = deferred_ms(function)
        handlers[function] = {
            "medianMs": round(median, 1),
            "deferredToFirstUseMs": deferred,
            "runsMs": [round(s, 1) for s in samples],
            "minMs": round(min(samples), 1),
            # CPU of the whole child (interpreter start-up + imports): less skewed by a busy machine.
            "processCpuMedianMs": round(statistics.median(cpu), 1),
            "heaviest": [f"{name} {ms:.0f}ms" for name, ms in heaviest],
        }
        verdict = "ok" if median <= TARGET_MS else f"MISSED by {median - TARGET_MS:.0f} ms"
        rows.append(
            (f"import {function}/app.py (median of {runs}) ms", round(median, 1), f"<= 300: {verdict}")
        )
        rows.append(
            (
                f"  min of {runs} / process CPU median ms",
                f"{min(samples):.0f} / {statistics.median(cpu):.0f}",
                "CPU incl. interpreter start-up",
            )
        )
        rows.append((f"  + deferred to first use ({function}) ms", deferred, "boto3 + a client"))
    environments = stack_cold_starts()
    for logical_id, figures in sorted(environments.items()):
        rows.append(
            (
                f"local stack {logical_id}: init / first invocation ms",
                f"{figures['initMs']:.0f} / {figures['firstInvocationMs']:.0f}",
                "REPORT: interpreter + import / first call",
            )
        )
    layer: dict[str, float | str] = {"status": "skipped (--smoke)"} if args.smoke else build_layer()
    if layer.get("status") == "built":
        rows.append(
            ("layer built size, unzipped MB", layer["unzippedMB"], "Lambda limit 250 (all layers + code)")
        )
        rows.append(("layer built size, zipped MB", layer["zippedMB"], str(layer["largestMB"])))
    else:
        rows.append(("layer built size", str(layer["status"]), ""))
    emit(
        "cold_start",
        rows,
        {
            "targetMs": TARGET_MS,
            "runs": runs,
            "handlers": handlers,
            "environments": environments,
            "layer": layer,
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
