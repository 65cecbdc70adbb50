#!/usr/bin/python3
"""flas-train stops in time and checkpoints when told to (ctest label: mpi).

  walltime  --time-budget and SLURM_JOB_END_TIME: a round far too long for the time given stops by
            itself, validates, writes its checkpoint and exits 0 before the deadline; the checkpoint
            says why (stop_reason walltime) and how much was trained
  signal    SIGUSR1 to mpirun (which forwards it to the ranks, as srun does), SIGTERM to a single
            process, and SIGUSR1 to only ONE of two ranks: the step finishes, the checkpoint is written,
            exit 0 with stop_reason signal; the checkpoint resumes

usage: test_train_walltime.py FLAS_TRAIN FIXTURE MPIEXEC WORKDIR walltime|signal"""
import json
import math
import os
import signal
import subprocess
import sys
import time

from trainlib import ROOT_ENV, Env, attrs, check_complete, events, fail, ok

PER_STEP = 2 * 32 * 2  # batch x seq x dp of the 2-rank runs


def args_for(e, out, extra=()):
    return ["--global", e.glob, "--data", e.data, "--valid", e.valid, "--valid-batches", "20", "--batch", "2",
            "--seq", "32", "--steps", "10000000", "--threads", "1", "--site", "test", "--peak-gflops", "100",
            "--log-every", "100", "--output", out, "--metrics", out + ".jsonl"] + list(extra)


def fresh(*paths):
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)


def stopped(e, out, reason, per_step):
    step = check_complete(out)
    a, m = attrs(out), attrs(out, "metrics")
    if m["stop_reason"] != reason:
        fail(f"{out}: stop_reason {m['stop_reason']!r}, expected {reason!r}")
    if not 0 < step < 10000000 or a["tokens_trained"] != step * per_step:
        fail(f"{out}: step {step}, tokens_trained {a['tokens_trained']} (expected step x {per_step})")
    end = events(out + ".jsonl", "end")
    if not end or end[-1]["reason"] != reason or not end[-1]["ok"]:
        fail(f"{out}.jsonl: end event {end}")
    return step, m


def case_walltime(e):
    budget = 6.0
    out = e.path("walltime.h5")
    fresh(out, out + ".jsonl")
    t0 = time.time()
    e.run(args_for(e, out, ["--time-budget", str(budget)]), 2)
    took = time.time() - t0
    step, m = stopped(e, out, "walltime", PER_STEP)
    # The budget counts from flas-train's start: the checkpoint (its last write is its mtime) must be
    # complete by then, allowing for mpirun's start-up; MPI_Finalize (and a sanitizer build's exit-time
    # leak check) come on top of the whole run.
    written = os.path.getmtime(out) - t0
    if written > budget + 1.5:
        fail(f"--time-budget {budget}: the checkpoint was complete {written:.1f} s after the start")
    if took > budget + 3.5:
        fail(f"--time-budget {budget}: the run took {took:.1f} s")
    if took < budget * 0.5:
        fail(f"--time-budget {budget}: stopped after {took:.1f} s, far too early")
    if not m["valid_tokens"] > 0 or not math.isfinite(m["valid_loss"]):
        fail(f"no validation before the walltime stop: {m}")
    ok(f"--time-budget {budget} s: stopped by itself after {step} steps, validated ({m['valid_loss']:.4f}) and "
       f"checkpointed; exit 0 after {took:.1f} s")
    out = e.path("jobend.h5")
    fresh(out, out + ".jsonl")
    t0 = time.time()
    end = int(t0) + 7
    e.run(args_for(e, out), 1, env={"SLURM_JOB_END_TIME": str(end)})
    done = time.time()
    step, m = stopped(e, out, "walltime", 2 * 32)
    # What must beat the job's end is the checkpoint: its last write (the completion marker) is its
    # mtime. The process exit comes after MPI_Finalize (and a sanitizer build's leak check).
    written = os.path.getmtime(out)
    if written > end:
        fail(f"SLURM_JOB_END_TIME {end}: the checkpoint was complete {written - end:.2f} s after the job's end")
    if done > end + 1.5:
        fail(f"SLURM_JOB_END_TIME {end}: the process ended {done - end:.1f} s after the job's end")
    ok(f"SLURM_JOB_END_TIME (in 7 s): stopped after {step} steps, checkpoint complete {end - written:.1f} s "
       f"before the end, exit {done - end:+.1f} s from it")


def wait_for_step(proc, at_least):
    """Reads progress lines until step >= at_least; returns the step seen."""
    for line in proc.stdout:
        if line.startswith("step "):
            step = int(line.split()[1].split("/")[0])
            if step >= at_least:
                return step
    fail(f"flas-train ended before step {at_least}: exit {proc.wait()}")


def signalled(e, name, ranks, how):
    out = e.path(name + ".h5")
    fresh(out, out + ".jsonl")
    proc = subprocess.Popen(e.cmd(args_for(e, out), ranks), env=dict(os.environ, **ROOT_ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = wait_for_step(proc, 200)
    t0 = time.time()
    how(proc)
    try:
        rest, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail(f"{name}: flas-train did not stop within 60 s of the signal")
    if proc.returncode != 0:
        fail(f"{name}: exit {proc.returncode} after the signal:\n{rest}\n{err}")
    step, m = stopped(e, out, "signal", 2 * 32 * (ranks if ranks <= 2 else 1))
    if step < seen or "signal received" not in rest:
        fail(f"{name}: checkpoint at step {step} (progress showed {seen}); output: {rest}")
    return step, time.time() - t0


def ranks_of(proc):
    """The flas-train processes under mpirun (same session, not mpirun itself)."""
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != proc.pid:
            try:
                if os.getsid(int(p)) == proc.pid and "flas-train" in open(f"/proc/{p}/cmdline").read():
                    pids.append(int(p))
            except (OSError, ProcessLookupError):
                pass
    return sorted(pids)


def case_signal(e):
    step, secs = signalled(e, "sigusr1", 2, lambda p: os.kill(p.pid, signal.SIGUSR1))
    ok(f"SIGUSR1 to mpirun (forwarded to both ranks): checkpoint at step {step} and exit 0 {secs:.1f} s later")
    step, secs = signalled(e, "sigterm", 1, lambda p: os.kill(p.pid, signal.SIGTERM))
    ok(f"SIGTERM to a single flas-train: checkpoint at step {step} and exit 0 {secs:.1f} s later")

    def one_rank(p):
        pids = ranks_of(p)
        if len(pids) != 2:
            fail(f"expected 2 flas-train ranks, found {pids}")
        os.kill(pids[-1], signal.SIGUSR1)
    step, secs = signalled(e, "onerank", 2, one_rank)
    ok(f"SIGUSR1 to only one of 2 ranks: both stop after step {step}, checkpoint written, exit 0 ({secs:.1f} s)")
    out = e.path("onerank.h5")
    p = e.run(args_for(e, out, ["--resume", out, "--steps", str(step + 3)]), 2)
    if check_complete(out) != step + 3:
        fail(f"the signal checkpoint did not resume: {p.stdout}")
    ok("the checkpoint written at the signal resumes")


def main():
    e = Env(sys.argv)
    e.ensure_fixture()
    {"walltime": case_walltime, "signal": case_signal}[e.case](e)


if __name__ == "__main__":
    main()
