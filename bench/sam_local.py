"""`sam local` figures (docs/performance.md, "`sam local` (issue 14)"): `make sam-local-setup` when
everything is cached, `sam local invoke` (a new container each time) and start-lambda's warm
containers, and one job end to end on containers beside the same job on the worker processes.

    .venv/bin/python bench/sam_local.py             # needs a Docker engine (make sam-local-setup)

Each stack runs in this process, one after the other, with the same parameters (poll interval 1 s,
simulator latency 0.1 s). Not part of the test suite's `--smoke` runs: it needs Docker and minutes;
tests/samlocal exercise the same paths.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, emit, local_stack, parser, wait_until

from imagejobs_tools.local import samlocal

POLL_INTERVAL = 1
SIM_LATENCY = (0.1, 0.1)
INVOKES = 3  # sam local invoke runs
WARM_INVOKES = 20  # invocations of a warm start-lambda container


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=samlocal.sam_environment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def one_job(stack: Any, job_id: str) -> float:
    """Seconds from SendMessage to a COMPLETED record."""
    sqs = stack.client("sqs")
    dynamodb = stack.client("dynamodb")
    started = time.perf_counter()
    sqs.send_message(
        QueueUrl=stack.info.outputs["JobsQueueUrl"],
        MessageBody=json.dumps({"jobId": job_id, "prompt": "a lighthouse at dawn", "aspectRatio": "1:1"}),
    )

    def completed() -> bool:
        item = dynamodb.get_item(
            TableName=stack.info.outputs["JobsTableName"], Key={"jobId": {"S": job_id}}, ConsistentRead=True
        ).get("Item")
        return item is not None and item["status"]["S"] == "COMPLETED"

    wait_until(completed, 300, f"{job_id} COMPLETED", interval=0.05)
    return time.perf_counter() - started


def main() -> None:
    parser(__doc__ or "").parse_args()
    architecture = samlocal.machine_architecture()
    bridge = samlocal.bridge_address()
    setup_seconds = timed([str(REPO / "scripts" / "sam-local-setup")])
    built = REPO / samlocal.BUILD_DIR / "template.yaml"
    workdir = Path(tempfile.mkdtemp(prefix="imagejobs-bench-sam-"))
    env_file = workdir / "sam-env.json"
    event = REPO / "events" / "finalize_failed.json"

    common: dict[str, Any] = {"poll_interval": POLL_INTERVAL, "sim_latency": SIM_LATENCY}
    with local_stack(**common, host=bridge) as stack:
        workers_job = one_job(stack, "bench-workers-cold")
        workers_warm_job = one_job(stack, "bench-workers-warm")
        samlocal.write_json(
            env_file,
            samlocal.sam_env_document(
                stack.client("lambda"),
                stack.client("cloudformation"),
                stack.info.stack_name,
                stack.endpoint_url,
            ),
        )
        invoke = [samlocal.sam_executable(), "local", "invoke", "FinalizeFunction", "-e", str(event)]
        invoke += ["--env-vars", str(env_file), *samlocal.container_options(built, architecture)]
        # The first run after SAM's image is gone builds it from the base image; later runs rebuild only
        # the layer on top (SAM always does for a layer in the template), then start a container.
        subprocess.run(
            "docker images -q 'samcli/lambda-python' | xargs -r docker rmi -f",
            shell=True,
            check=False,
            capture_output=True,
        )
        invoke_seconds = [timed(invoke) for _ in range(INVOKES)]

    with local_stack(
        **common, host=bridge, lambda_runtime="sam", sam_env_file=workdir / "start-env.json"
    ) as stack:
        start_seconds = stack.info.timings["samLocalSeconds"]
        sam_job = one_job(stack, "bench-sam-cold")
        sam_warm_job = one_job(stack, "bench-sam-warm")
        start_lambda = stack.start_lambda
        assert start_lambda is not None
        body = event.read_text(encoding="utf-8").replace("demo-cat-0001", "bench-sam-warm")
        warm = []
        for _ in range(WARM_INVOKES):
            started = time.perf_counter()
            start_lambda.invoke("FinalizeFunction", body, 30)
            warm.append(time.perf_counter() - started)

    figures = {
        "architecture": architecture,
        "setupCachedSeconds": round(setup_seconds, 2),
        "samLocalInvokeSeconds": [round(s, 2) for s in invoke_seconds],
        "startLambdaStartSeconds": round(start_seconds, 2),
        "startLambdaFirstInvokeSeconds": round(warm[0], 4),
        "startLambdaWarmInvokeMedianSeconds": round(statistics.median(warm[1:]), 4),
        "jobSeconds": {
            "workers": {"first": round(workers_job, 2), "warm": round(workers_warm_job, 2)},
            "containers": {"first": round(sam_job, 2), "warm": round(sam_warm_job, 2)},
        },
    }
    rows = [
        ("setup, all cached", figures["setupCachedSeconds"], "make sam-local-setup, second run"),
        ("sam local invoke, first", invoke_seconds[0], "SAM builds its image from the base image"),
        (
            "sam local invoke, next",
            statistics.median(invoke_seconds[1:]),
            "layer image rebuilt, new container",
        ),
        ("start-lambda start", start_seconds, "sam build (cached) + 5 warm containers"),
        (
            "start-lambda invoke, warm",
            figures["startLambdaWarmInvokeMedianSeconds"],
            "FinalizeFunction, median",
        ),
        ("job, worker processes", workers_job, f"first job; next {workers_warm_job:.2f} s"),
        ("job, containers", sam_job, f"first job; next {sam_warm_job:.2f} s"),
    ]
    emit("sam_local", rows, figures, smoke=False)


if __name__ == "__main__":
    main()
