"""One benchmark on this checkout and on a baseline checkout, in turns, in one run: ratios.

Absolute times move 2x between machines of this kind; a ratio measured side by side does not.
The baseline is another checkout of this repository (e.g. the commit before a change):

    git worktree add /tmp/baseline <commit>
    .venv/bin/python bench/side_by_side.py --baseline /tmp/baseline throughput
    .venv/bin/python bench/side_by_side.py --baseline /tmp/baseline --rounds 1 detection_delay -- --jobs 200
    .venv/bin/python bench/side_by_side.py --baseline /tmp/baseline local_up
    .venv/bin/python bench/side_by_side.py --baseline /tmp/baseline demo

Both run with this venv's interpreter; the baseline's own code comes first on its path. Rounds
alternate baseline, current (so a drift of the machine hits both); the medians are compared.
`local_up` times `imagejobs local up` from start to its ready banner; `demo` times
`imagejobs local demo` end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import JSON_PREFIX, REPO

# Figures compared for each benchmark: (key path in BENCH_JSON figures, label, better when higher?)
COMPARED: dict[str, list[tuple[str, str, bool]]] = {
    "throughput": [
        ("jobsPerSecond", "jobs/s", True),
        ("peakRssMB", "peak RSS MB (every stack process)", False),
        ("cpuSeconds", "CPU seconds", False),
    ],
    "detection_delay": [
        ("delaySeconds.p50", "detection delay p50 s", False),
        ("delaySeconds.p95", "detection delay p95 s", False),
        ("peakRssMB", "peak RSS MB (every stack process)", False),
    ],
    "local_up": [("readySeconds", "local up: start to ready banner s", False)],
    "demo": [("seconds", "make demo (imagejobs local demo) s", False)],
}


def environment(checkout: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(checkout / "src"), str(checkout / "layers" / "shared")])
    return env


def run_bench(checkout: Path, name: str, extra: list[str]) -> dict[str, Any]:
    script = checkout / "bench" / f"{name}.py"
    done = subprocess.run(
        [sys.executable, str(script), *extra],
        cwd=checkout,
        env=environment(checkout),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(JSON_PREFIX)]
    if done.returncode != 0 or not lines:
        tail = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        raise SystemExit(f"{script} failed ({done.returncode}):\n{tail}")
    figures: dict[str, Any] = json.loads(lines[-1][len(JSON_PREFIX) :])["figures"]
    return figures


def time_local_up(checkout: Path) -> dict[str, Any]:
    """Seconds from `imagejobs local up` starting to its ready banner; then SIGTERM."""
    with tempfile.TemporaryDirectory() as state:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "imagejobs_tools", "local", "up", "--state-file", f"{state}/s.json"],
            cwd=checkout,
            env=environment(checkout),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        ready = None
        for line in process.stdout:
            if "Ctrl-C stops everything" in line:
                ready = time.perf_counter() - started
                break
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    if ready is None:
        raise SystemExit(f"local up in {checkout} printed no ready banner")
    return {"readySeconds": ready}


def time_demo(checkout: Path) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "imagejobs_tools", "local", "demo"],
        cwd=checkout,
        env=environment(checkout),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"demo in {checkout} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return {"seconds": time.perf_counter() - started}


def measure(checkout: Path, name: str, extra: list[str]) -> dict[str, Any]:
    if name == "local_up":
        return time_local_up(checkout)
    if name == "demo":
        return time_demo(checkout)
    return run_bench(checkout, name, extra)


def figure(figures: dict[str, Any], path: str) -> float:
    value: Any = figures
    for part in path.split("."):
        value = value[part]
    return float(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="a checkout to compare against")
    p.add_argument("--rounds", type=int, default=1, help="baseline/current pairs (default 1)")
    p.add_argument("benchmark", choices=sorted(COMPARED))
    p.add_argument("extra", nargs="*", help="arguments for the benchmark (after --)")
    args = p.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    for _ in range(args.rounds):
        runs["baseline"].append(measure(args.baseline.resolve(), args.benchmark, args.extra))
        runs["current"].append(measure(REPO, args.benchmark, args.extra))
    print(f"\n{args.benchmark}: current ({REPO}) vs baseline ({args.baseline}), {args.rounds} round(s)")
    print(f"{'figure':40} {'baseline':>10} {'current':>10} {'ratio':>8}")
    result: dict[str, Any] = {}
    for path, label, higher_is_better in COMPARED[args.benchmark]:
        base = statistics.median(figure(f, path) for f in runs["baseline"])
        current = statistics.median(figure(f, path) for f in runs["current"])
        ratio = current / base if base else float("nan")
        better = "higher is better" if higher_is_better else "lower is better"
        print(f"{label:40} {base:10.2f} {current:10.2f} {ratio:7.2f}x  ({better})")
        result[path] = {"baseline": base, "current": current, "ratio": round(ratio, 3)}
    print(JSON_PREFIX + json.dumps({"benchmark": f"side_by_side.{args.benchmark}", "figures": result}))


if __name__ == "__main__":
    main()
