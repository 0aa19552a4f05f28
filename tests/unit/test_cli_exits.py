"""Every command ends cleanly on Ctrl-C and on a closed pipe: one line or none, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A command that writes until its reader goes away, or is interrupted, run through the real main().
SCRIPT = """
import argparse, sys
from imagejobs_tools import cli

def chatty(args):
    if args.interrupt:
        raise KeyboardInterrupt
    for n in range(1_000_000):
        print(f"line {n}")

def parser():
    p = argparse.ArgumentParser(prog="imagejobs")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("chatty")
    c.add_argument("--interrupt", action="store_true")
    c.set_defaults(func=chatty)
    return p

cli.build_parser = parser
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_closed_pipe_exits_141_without_a_traceback() -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "chatty"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == b"line 0\n"
    writer.stdout.close()  # what `| head -1` does
    assert writer.wait(timeout=30) == 141
    assert writer.stderr is not None
    assert writer.stderr.read() == b""


@pytest.mark.parametrize("argv", [["chatty", "--interrupt"]])
def test_ctrl_c_exits_130_with_one_line(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 130
    assert done.stderr == "imagejobs chatty: interrupted\n"
