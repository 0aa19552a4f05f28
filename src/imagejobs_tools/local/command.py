"""`imagejobs local up|demo|sam-env`: the whole pipeline on this machine (docs/local-stack.md)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imagejobs_tools.local import samlocal
from imagejobs_tools.local.logview import LOG_FORMATS, CurrentStdout, LogView

DEFAULT_STATE_FILE = Path(".imagejobs/local-stack.json")
LAMBDA_RUNTIMES = ("workers", "sam")


def parse_latency(text: str) -> tuple[float, float]:
    """`MIN:MAX` seconds (or a single number) for the simulator's generation latency."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sim-latency: expected MIN:MAX seconds, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or values[0] < 0 or values[1] < values[0]:
        raise argparse.ArgumentTypeError(f"--sim-latency: expected 0 <= MIN <= MAX, got {text!r}")
    return values[0], values[1]


def parse_parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--parameter: expected Name=Value, got {text!r}")
    return name, value


# Step Functions waits whole seconds; the template allows 0-300 (0 only for tests).
MAX_POLL_INTERVAL_SECONDS = 300


def whole_seconds(text: str) -> int:
    """`--poll-interval`: whole seconds 0-300, as the template's PollIntervalSeconds accepts."""
    if not text.strip().isdigit() or int(text) > MAX_POLL_INTERVAL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected whole seconds from 0 to {MAX_POLL_INTERVAL_SECONDS} (Step Functions waits whole "
            f"seconds), got {text!r}"
        )
    return int(text)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("local", help="run the whole pipeline on this machine (no AWS, no Docker)")
    commands = parser.add_subparsers(dest="local_command", required=True, metavar="up|demo|sam-env")

    def common(sub: argparse.ArgumentParser, latency: str, poll: int) -> None:
        sub.add_argument("--template", type=Path, default=Path("template.yaml"), help="SAM template")
        sub.add_argument(
            "--port",
            type=int,
            default=0,
            help="AWS endpoint port (default: a free one); the same port gives the same resource names",
        )
        sub.add_argument("--sim-port", type=int, default=0, help="simulator port (default: a free one)")
        sub.add_argument(
            "--sim-latency",
            type=parse_latency,
            default=parse_latency(latency),
            metavar="MIN:MAX",
            help=f"simulated generation time in seconds (default {latency})",
        )
        sub.add_argument(
            "--poll-interval",
            type=whole_seconds,
            default=poll,
            metavar="SECONDS",
            help=f"PollIntervalSeconds for the wait-loop (default {poll:g})",
        )
        sub.add_argument("--provider-url", help="use this provider instead of the in-process simulator")
        sub.add_argument(
            "--api-key", default="sk_test_local", help="provider API key put into the stack's secret"
        )
        sub.add_argument(
            "--parameter",
            type=parse_parameter,
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="override a template parameter (repeatable)",
        )
        sub.add_argument("--stack-name", default="imagejobs-local", help="CloudFormation stack name in moto")

    up = commands.add_parser(
        "up",
        help="start the stack and keep it running until Ctrl-C",
        description="Start moto (every AWS API on one local port), the provider simulator and every "
        "resource template.yaml declares; print the endpoints and copy-paste aws CLI commands; run "
        "until Ctrl-C or SIGTERM. Records and outputs live in memory and go when it stops.",
    )
    common(up, "3:8", 2)
    up.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE, help="where to write endpoints")
    up.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="the functions' logs: one short line per event (text, default) or their own JSON, one "
        "object per line on stdout with everything else on stderr (json)",
    )
    up.add_argument(
        "--show-metrics", action="store_true", help="also show the EMF metric lines Powertools Metrics prints"
    )
    up.add_argument(
        "--show-events",
        action="store_true",
        help="also show each event the stack publishes on EventBridge (docs/events.md), a line each",
    )
    up.add_argument(
        "--lambda",
        dest="lambda_runtime",
        choices=LAMBDA_RUNTIMES,
        default="workers",
        help="where the functions run: worker processes (default, no Docker) or `sam local start-lambda` "
        "containers from the `sam build` artifacts (sam; needs `make sam-local-setup`)",
    )
    up.add_argument(
        "--host",
        help="address the AWS endpoint and the simulator listen on (default 127.0.0.1; with --lambda sam, "
        "this machine's address on Docker's bridge, which containers can reach)",
    )
    up.set_defaults(func=_run_up)

    sam_env = commands.add_parser(
        "sam-env",
        help="write `sam local --env-vars` for the running local stack",
        description="Write an --env-vars file for `sam local invoke|start-lambda` from the running local "
        "stack: each function's variables as the stack resolved them, and AWS_ENDPOINT_URL at the stack. "
        "Containers reach the stack only on an address that is not loopback: start it with "
        "`imagejobs local up --host ADDRESS`, ADDRESS this machine's on Docker's bridge "
        "(`docker network inspect bridge -f '{{(index .IPAM.Config 0).Gateway}}'`).",
    )
    sam_env.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE, help="the running stack's")
    sam_env.add_argument("--out", type=Path, default=samlocal.DEFAULT_SAM_ENV_FILE, help="the file to write")
    sam_env.set_defaults(func=_run_sam_env)

    demo = commands.add_parser(
        "demo",
        help="start the stack, run a demo batch, check every outcome",
        description="Start the local stack, send a demo batch (text-to-image at four aspect ratios, "
        "image-to-image, an S3 photo upload, a JSONL batch, an invalid job), save the images and exit "
        "0 only if every job ended as expected.",
    )
    common(demo, "1:3", 2)
    demo.add_argument("--fast", action="store_true", help="poll every second instead of every 2 s")
    demo.add_argument("--output-dir", type=Path, default=Path("demo-output"), help="where images are saved")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every job")
    demo.set_defaults(func=_run_demo)


def build_config(args: argparse.Namespace, **extra: Any) -> Any:
    from imagejobs_tools.local import LocalStackConfig

    return LocalStackConfig(
        template_path=args.template,
        stack_name=args.stack_name,
        port=args.port,
        provider_url=args.provider_url,
        sim_port=args.sim_port,
        sim_latency=args.sim_latency,
        api_key=args.api_key,
        poll_interval_seconds=args.poll_interval,
        parameter_overrides=dict(args.parameter),
        **extra,
    )


def _run_up(args: argparse.Namespace) -> int:
    from rich.console import Console

    from imagejobs_tools.local import LocalStack, LocalStackError

    # JSON logs are for jq or a log shipper: stdout carries them alone, the rest goes to stderr. Text
    # goes through whatever sys.stdout is at the time, so rich's spinner can print it above itself.
    json_logs = args.log_format == "json"
    console_stream = sys.stderr if json_logs else sys.stdout
    # Not a terminal (CI, a pipe): rich would wrap the tables at 80 columns and truncate job ids.
    console = Console(emoji=False, stderr=json_logs, width=None if console_stream.isatty() else 160)
    log_view = LogView(sys.stdout if json_logs else CurrentStdout(), args.log_format, args.show_metrics)
    # SIGTERM (CI, `kill`, a supervisor) stops cleanly, also while the stack is still starting: the
    # exception interrupts the start, and the event ends the wait even if something caught it.
    terminated = threading.Event()

    def on_sigterm(*_: Any) -> None:
        terminated.set()
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    config = build_config(args, state_file=args.state_file, log_sink=log_view)
    config.lambda_runtime = args.lambda_runtime
    try:
        config.host = args.host or _default_host(args.lambda_runtime)
    except samlocal.SamLocalError as exc:  # no Docker engine answers
        console.print(f"[red]imagejobs local up: {exc}[/red]")
        return 2
    # A stack left running records every request it serves for the IAM audit: only when a test
    # session collects the audits (IMAGEJOBS_IAM_REPORT_DIR), or its memory would grow for ever.
    config.iam_audit = config.iam_report_dir is not None
    stack = LocalStack(config)
    try:
        with console.status("starting the local stack…"):
            stack.start()
        if not terminated.is_set():
            print_summary(console, stack, args.state_file)
        while not terminated.wait(0.5):
            if args.show_events and stack.events is not None:
                for event in stack.events.drain():
                    console.print(event_line(event), markup=False, highlight=False)
        return 0
    except Terminated:
        return 0
    except LocalStackError as exc:
        console.print(f"[red]imagejobs local up: {exc}[/red]")
        return 2
    finally:
        console.print("stopping…")
        stack.stop()
        signal.signal(signal.SIGTERM, previous)


def event_line(event: dict[str, Any]) -> str:
    """One published event as `local up --show-events` prints it."""
    detail = event.get("detail") or {}
    change = f"{detail.get('previousStatus') or '(new)'} -> {detail.get('status')}"
    return f"event  {event.get('detail-type')}  {detail.get('eventId')}  {change}"


def _default_host(lambda_runtime: str) -> str:
    return samlocal.bridge_address() if lambda_runtime == "sam" else "127.0.0.1"


def _run_sam_env(args: argparse.Namespace) -> int:
    import boto3

    try:
        state = json.loads(args.state_file.read_text(encoding="utf-8"))
        endpoint, region, stack_name = state["endpointUrl"], state["region"], state["stackName"]
    except (OSError, ValueError, KeyError) as exc:
        print(
            f"imagejobs local sam-env: no running local stack in {args.state_file} ({exc})", file=sys.stderr
        )
        return 2
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost" or (host.replace(".", "").isdigit() and ipaddress.ip_address(host).is_loopback):
        print(
            f"imagejobs local sam-env: the stack listens on {endpoint}, which containers cannot reach: "
            "start it with `imagejobs local up --lambda sam` (or --host ADDRESS on Docker's bridge)",
            file=sys.stderr,
        )
        return 2
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    document = samlocal.sam_env_document(
        session.client("lambda", endpoint_url=endpoint),
        session.client("cloudformation", endpoint_url=endpoint),
        stack_name,
        endpoint,
    )
    samlocal.write_json(args.out, document)
    architecture = samlocal.machine_architecture()
    built = samlocal.BUILD_DIR / "template.yaml"
    build = shlex.join(["sam", "build", *samlocal.build_options(Path("template.yaml"), architecture)])
    event = ["IntakeFunction", "-e", "events/sqs_job.json", "--env-vars", str(args.out)]
    invoke = shlex.join(["sam", "local", "invoke", *event, *samlocal.container_options(built, architecture)])
    print(f"wrote {args.out}: {', '.join(document)} at {endpoint}\nthen:\n  {build}\n  {invoke}")
    return 0


class Terminated(BaseException):
    """SIGTERM arrived: stop the stack and exit 0. A BaseException, as KeyboardInterrupt is, so that
    no `except Exception` in the code it interrupts (moto, botocore, ...) can swallow it."""


def print_summary(console: Any, stack: Any, state_file: Path | None) -> None:
    from rich.table import Table

    info = stack.info
    table = Table(title="imagejobs local stack", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("AWS endpoint", info.endpoint_url)
    table.add_row("region", info.region)
    if info.simulator_url:
        table.add_row("provider simulator", info.simulator_url)
    for key, value in sorted(info.outputs.items()):
        table.add_row(key, value)
    table.add_row("started in", f"{info.timings['totalSeconds']:.1f} s")
    if state_file is not None:
        table.add_row("state file", str(state_file))
    console.print(table)
    endpoint = info.endpoint_url
    queue = info.outputs.get("JobsQueueUrl") or next(iter(info.queues.values()), "QUEUE_URL")
    bucket = info.outputs.get("OutputBucketName", "BUCKET")
    table_name = info.outputs.get("JobsTableName", "TABLE")
    aws = f"aws --endpoint-url {endpoint}"
    body = shlex.quote('{"prompt": "a lighthouse at dawn, watercolor", "aspectRatio": "16:9"}')
    console.print("\n[bold]Try it with the plain aws CLI[/bold] (any credentials work):")
    lines = [
        f"export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION={info.region}",
        f"{aws} sqs send-message --queue-url {queue} --message-body {body}",
        f"{aws} dynamodb scan --table-name {table_name}",
        f"{aws} s3 ls s3://{bucket}/outputs/ --recursive",
        f"{aws} s3 cp s3://{bucket}/outputs/ ./outputs --recursive",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    console.print("\nCtrl-C stops everything.")


def _run_demo(args: argparse.Namespace) -> int:
    from imagejobs_tools.local.demo import demo_stack_options, run_demo

    if args.fast:
        args.poll_interval = 1
    config = build_config(args, **demo_stack_options())
    return run_demo(config, output_dir=args.output_dir, timeout=args.timeout)
