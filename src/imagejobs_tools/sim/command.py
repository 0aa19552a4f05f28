"""`imagejobs sim` / `python -m imagejobs_tools.sim`: run the provider simulator in the foreground.

The first line on stdout is exactly ``listening on http://HOST:PORT``. Ctrl-C or
SIGTERM stops it. Imports stay inside the functions: `imagejobs --help` loads
this module for every command.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

DESCRIPTION = "run the provider simulator (a local stand-in for the GPT Image 2 API)"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sim", help=DESCRIPTION, description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=_run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted bearer key; repeatable (default: one key, sk_test_local)",
    )
    parser.add_argument("--credits", type=int, default=1000, help="starting credits per key (default 1000)")
    parser.add_argument(
        "--latency",
        default="2:5",
        metavar="MIN:MAX",
        help="seconds an image task stays pending, uniform in MIN..MAX (default 2:5)",
    )
    parser.add_argument(
        "--video-latency",
        default=None,
        metavar="MIN:MAX",
        help="seconds a video task stays pending (default 3x --latency)",
    )
    parser.add_argument(
        "--shape",
        choices=("quickstart", "reference"),
        default="quickstart",
        help="task snapshot shape (default quickstart)",
    )
    parser.add_argument(
        "--output-format", choices=("png", "jpeg"), default="png", help="image output format (default png)"
    )
    parser.add_argument(
        "--public-url", default=None, help="base URL used in output links (default the listen URL)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the fault/latency RNG (repeatable runs)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log one line per request on stderr")
    faults = parser.add_argument_group("fault injection (rates are probabilities 0..1)")
    for name, help_text in (
        ("submit-500-rate", "submissions answered 500, nothing created"),
        ("poll-500-rate", "polls answered 500"),
        ("rate-429", "API requests answered 429 with Retry-After"),
        ("task-failure-rate", "accepted tasks that end failed (refunded)"),
        ("hang-rate", "responses delayed by --hang-seconds (submissions are created first)"),
        ("lost-response-rate", "submissions created and charged, then the connection is dropped"),
    ):
        faults.add_argument(f"--{name}", type=float, default=0.0, metavar="RATE", help=help_text)
    faults.add_argument("--retry-after", type=int, default=1, metavar="SECONDS", help="Retry-After of a 429")
    faults.add_argument(
        "--hang-seconds", type=float, default=30.0, metavar="SECONDS", help="length of a hang"
    )
    faults.add_argument(
        "--failure-codes",
        default="EMPTY_RESULT,STORAGE_ERROR,PROVIDER_NSFW_BLOCKED",
        metavar="CODES",
        help="comma-separated errorCodes cycled through by failed tasks",
    )
    faults.add_argument(
        "--slow-output-bps",
        type=int,
        default=0,
        metavar="BYTES",
        help="serve output files at this many bytes per second (0 = full speed)",
    )


def config_from_args(args: argparse.Namespace) -> Any:
    from imagejobs_tools.sim.config import FaultConfig, SimulatorConfig, parse_latency

    faults = FaultConfig(
        submit_500_rate=args.submit_500_rate,
        poll_500_rate=args.poll_500_rate,
        rate_429=args.rate_429,
        retry_after=args.retry_after,
        task_failure_rate=args.task_failure_rate,
        failure_codes=tuple(code.strip() for code in args.failure_codes.split(",") if code.strip()),
        hang_rate=args.hang_rate,
        hang_seconds=args.hang_seconds,
        lost_response_rate=args.lost_response_rate,
        slow_output_bytes_per_second=args.slow_output_bps,
    )
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=args.api_keys,
        credits=args.credits,
        latency=parse_latency(args.latency),
        video_latency=parse_latency(args.video_latency) if args.video_latency else None,
        shape=args.shape,
        seed=args.seed,
        faults=faults,
        output_format=args.output_format,
        public_base_url=args.public_url,
        log_requests=not args.quiet,
    ).validated()


def _run(args: argparse.Namespace) -> int:
    import signal
    import sys
    import time

    from imagejobs_tools.sim.config import ConfigError
    from imagejobs_tools.sim.server import start_simulator
    from imagejobs_tools.sim.state import mask_key

    try:
        config = config_from_args(args)
    except ConfigError as error:
        print(f"imagejobs sim: {error}", file=sys.stderr)
        return 2
    # The handler only flips a flag: taking a lock (Event.set) inside a signal handler can deadlock
    # against the same lock held by the interrupted main thread. Installed before the
    # listening line is printed, so whoever reads that line can stop us cleanly.
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        simulator = start_simulator(config)
    except OSError as error:
        print(f"imagejobs sim: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"listening on {simulator.url}", flush=True)
    keys = ", ".join(
        f"{mask_key(key)} ({credits} credits)" for key, credits in config.initial_credits().items()
    )
    print(
        f"keys: {keys}; snapshot shape: {config.shape}; admin: {simulator.url}/_sim/stats",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop_requested:
            time.sleep(0.1)
    finally:
        simulator.stop()
    print("simulator stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagejobs_tools.sim", description=DESCRIPTION)
    add_arguments(parser)
    return _run(parser.parse_args(argv))
