"""Copy: one large provider output streamed into S3 (imagejobs.copier, multipart) against a naive
read-all-then-put baseline, on loopback (moto server + the simulator).

    .venv/bin/python bench/copy_output.py            # 200 MB
    .venv/bin/python bench/copy_output.py --smoke    # 12 MB (still two multipart parts)

moto (which keeps objects in memory) and the simulator run in this process;
each copy runs in a fresh child process that reports its own RSS, so the
growth measured is the copier's alone.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from typing import Any

from _common import REPO, emit, parser, peak_rss_mb, rss_mb

TARGET_GROWTH_MB = 32.0
API_KEY = "sk_test_bench"


def worker(mode: str, url: str, endpoint: str, bucket: str, allow: str) -> None:
    """Child process: copy `url` to S3 one way and print a JSON line of figures."""
    import boto3
    import requests
    from imagejobs.copier import OutputCopier

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    session = requests.Session()
    s3.put_object(Bucket=bucket, Key="warmup", Body=b"x")  # client built before the baseline
    session.get(url.rsplit("/files/", 1)[0] + "/_sim/health", timeout=5).raise_for_status()
    peak = {"rss": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak["rss"] = max(peak["rss"], rss_mb())

    baseline = rss_mb()
    baseline_hwm = peak_rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    if mode == "streamed":
        copier = OutputCopier(session, s3, bucket, max_bytes=1 << 40, allow_hosts=[allow])
        stored = copier.copy_one(url, "bench/streamed")
        size, key = stored.bytes, stored.key
    else:
        data = session.get(url, timeout=(3.05, 300)).content
        size, key = len(data), "bench/naive.png"
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/png")
        del data
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    head = s3.head_object(Bucket=bucket, Key=key)
    hwm = peak_rss_mb()
    # VmHWM is exact but includes pre-baseline peaks; the 5 ms sampler is a lower bound.
    peak_seen = max(peak["rss"], hwm if hwm > baseline_hwm else 0.0)
    print(
        json.dumps(
            {
                "mode": mode,
                "bytes": size,
                "storedBytes": head["ContentLength"],
                "seconds": round(elapsed, 3),
                "mbPerSecond": round(size / 1e6 / elapsed, 1),
                "baselineRssMB": round(baseline, 1),
                "peakRssMB": round(peak_seen, 1),
                "rssGrowthMB": round(max(0.0, peak_seen - baseline), 1),
            }
        )
    )


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--mb", type=float, help="output size in MB (default 200, smoke 12)")
    p.add_argument(
        "--worker", nargs=5, metavar=("MODE", "URL", "ENDPOINT", "BUCKET", "ALLOW"), help=argparse_hide()
    )
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    size = int((args.mb or (12 if args.smoke else 200)) * 1_000_000)

    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    from imagejobs_tools.sim import SimulatorConfig, start_simulator

    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    _, port = server.get_host_and_port()
    endpoint = f"http://127.0.0.1:{port}"
    sim = start_simulator(SimulatorConfig(api_keys={API_KEY: 1000}, latency=(0.0, 0.0)))
    try:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        bucket = "imagejobs-bench-copy"
        s3.create_bucket(Bucket=bucket)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        task = requests.post(
            f"{sim.url}/api/ai/image/generate",
            json={"prompt": "bench", "providerInput": {"simOutputBytes": size}},
            headers=headers,
            timeout=10,
        ).json()["taskId"]
        sim.admin.release(task)
        snapshot = requests.get(f"{sim.url}/api/ai/tasks/{task}", headers=headers, timeout=10).json()
        url = snapshot["outputImageUrls"][0]
        allow = f"127.0.0.1:{sim.port}"
        results: dict[str, dict[str, Any]] = {}
        for mode in ("streamed", "naive"):
            done = subprocess.run(
                [sys.executable, __file__, "--worker", mode, url, endpoint, bucket, allow],
                capture_output=True, text=True, cwd=REPO, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"{mode} copy failed:\n{done.stderr[-3000:]}")
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        sim.stop()
        server.stop()
    streamed, naive = results["streamed"], results["naive"]
    verdict = "ok" if streamed["rssGrowthMB"] <= TARGET_GROWTH_MB else "MISSED"
    rows = [
        ("output size MB", round(size / 1e6, 1), "PNG from the simulator (simOutputBytes)"),
        ("streamed: peak RSS growth MB", streamed["rssGrowthMB"], f"<= {TARGET_GROWTH_MB:.0f}: {verdict}"),
        ("streamed: MB/s", streamed["mbPerSecond"], "multipart, 8 MiB parts, loopback"),
        ("naive: peak RSS growth MB", naive["rssGrowthMB"], "read all, then one PutObject"),
        ("naive: MB/s", naive["mbPerSecond"], ""),
    ]
    emit(
        "copy_output",
        rows,
        {"bytes": size, "targetGrowthMB": TARGET_GROWTH_MB, "streamed": streamed, "naive": naive},
        args.smoke,
    )


def argparse_hide() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
