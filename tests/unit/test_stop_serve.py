"""Stopping scripts/serve.sh: TERM to the script alone (it stops its children in order), the
whole group killed only when it does not exit in time. Real processes, no Label Studio."""

from __future__ import annotations

import os
import subprocess
import time

from scripts.lib import lslocal

# The stand-ins write the child's pid only once their trap is set: the test sends TERM as soon
# as it reads the pid, and a TERM before the trap would end the script the default way.
# a stand-in for serve.sh: a child in its group, stopped by the script's own TERM trap, last
ORDERLY = """
sleep 300 & child=$!
trap 'kill "$child"; wait "$child"; echo stopped-in-order > "$2"; exit 143' TERM
echo "$child" > "$1"
wait "$child"
"""
# one that ignores TERM: only the group kill ends it
STUBBORN = """
trap '' TERM
sleep 300 & echo "$!" > "$1"
while true; do sleep 0.1; done
"""


def start(script: str, tmp_path) -> tuple[subprocess.Popen, int]:
    pid_file, done_file = tmp_path / "child.pid", tmp_path / "done"
    process = subprocess.Popen(
        ["bash", "-c", script, "serve", str(pid_file), str(done_file)], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the stand-in did not start its child"
        time.sleep(0.05)
    return process, int(pid_file.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            # a zombie of an exited parent waits for init to reap it: gone all the same
            return stat.read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_the_script_alone_gets_term_and_stops_its_children_itself(tmp_path):
    process, child = start(ORDERLY, tmp_path)
    lslocal.stop_serve(process, timeout_s=20)
    assert process.returncode == 143  # its own trap ran: not killed
    assert (tmp_path / "done").read_text().strip() == "stopped-in-order"
    assert not alive(child)


def test_a_script_that_ignores_term_is_killed_with_its_group(tmp_path):
    process, child = start(STUBBORN, tmp_path)
    started = time.monotonic()
    lslocal.stop_serve(process, timeout_s=1)
    assert process.returncode == -9 and time.monotonic() - started < 20
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)  # the group went with it


def test_an_exited_script_is_left_alone(tmp_path):
    process = subprocess.Popen(["true"], start_new_session=True)
    process.wait()
    lslocal.stop_serve(process)
    assert process.returncode == 0
