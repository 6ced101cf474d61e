"""``bench/gpu_check.py``: the steps run in order of value, each step's output is
streamed to its log as it runs, a step past its limit is cut with its output kept,
and the summary is rewritten after every step, so a check killed mid-step leaves
the log of that step and the numbers of every step before it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402


def test_the_headline_numbers_come_first():
    names = [n for n, _ in gpu_check.STEPS]
    assert names[:4] == ["smoke", "headline", "epoch", "train"]
    assert names.index("kernel_tests_fixed") < names.index("kernel_tests") < names.index("bench")
    assert names.index("bench") < names.index("conv_tests") < names.index("cifar10_conv")
    args = type("A", (), dict(dry_run=True, epochs=1, conv_epochs=1, skip_conv=False))()
    cmds = gpu_check.commands(args, str(REPO), Path("/tmp/out"))
    assert set(cmds) == set(names)  # every step has a command (or says why it is skipped)
    limits = dict(gpu_check.STEPS)
    assert sum(limits[n] for n in names[:4]) <= 540  # the headline steps fit one device call


def run_check(out: Path, steps: list, commands: dict) -> subprocess.Popen:
    """Start the check in a subprocess with its steps and commands replaced."""
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import gpu_check as g; "
            f"g.STEPS = {steps!r}; g.commands = lambda args, data, out: {commands!r}; "
            f"sys.exit(g.main(['--dry-run', '--out', {str(out)!r}]))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def summary(out: Path) -> dict:
    (path,) = out.glob("gpu-check-*.json")
    return json.loads(path.read_text())


def test_a_check_killed_mid_step_keeps_that_steps_log_and_the_steps_before(tmp_path):
    py = sys.executable
    cmds = {"first": [py, "-c", "print('first done')"],
            "second": [py, "-c", "import time; print('second started', flush=True); time.sleep(20)"],
            "third": [py, "-c", "print('never')"]}
    p = run_check(tmp_path, [("first", 60), ("second", 60), ("third", 60)], cmds)
    log = tmp_path / "second.log"
    try:
        deadline = time.time() + 60
        while not (log.is_file() and "second started" in log.read_text()):
            assert time.time() < deadline and p.poll() is None, p.stdout.read().decode()
            time.sleep(0.1)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    steps = summary(tmp_path)["steps"]
    assert steps["first"]["rc"] == 0 and "first done" in steps["first"]["tail"]
    assert "second" not in steps and "third" not in steps
    assert "second started" in log.read_text()
    assert not (tmp_path / "third.log").exists()


def test_a_step_past_its_limit_is_cut_with_its_output_and_the_next_runs(tmp_path):
    py = sys.executable
    cmds = {"slow": [py, "-c", "import sys, time; print('to stdout', flush=True); "
                               "print('to stderr', file=sys.stderr, flush=True); time.sleep(60)"],
            "next": [py, "-c", "print('next done')"]}
    p = run_check(tmp_path, [("slow", 3), ("next", 60)], cmds)
    out, _ = p.communicate(timeout=90)
    assert p.returncode == 1, out.decode()  # a step timed out
    steps = summary(tmp_path)["steps"]
    assert steps["slow"]["rc"] == "timeout" and steps["next"]["rc"] == 0
    text = (tmp_path / "slow.log").read_text()
    assert "to stdout" in text and "to stderr" in text
    assert "KeyboardInterrupt" in text  # SIGINT first: the step says where it was


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_a_failed_smoke_step_ends_the_check(tmp_path):
    py = sys.executable
    cmds = {"smoke": [py, "-c", "raise SystemExit(3)"], "headline": [py, "-c", "print('never')"]}
    p = run_check(tmp_path, [("smoke", 30), ("headline", 30)], cmds)
    p.communicate(timeout=60)
    steps = summary(tmp_path)["steps"]
    assert steps["smoke"]["rc"] == 3 and "headline" not in steps
