#!/usr/bin/python3
"""SIGKILL flas-train (mpirun and both ranks) at random moments while it writes checkpoints (ctest
label: mpi). A 10.7 M-parameter model (129 MB per checkpoint with the AdamW moments) writes a
checkpoint after every step, so most of the run is spent writing. Each trial resumes (--resume auto)
from whatever the previous trial left, waits until a write is under way (its hidden temporary exists),
sleeps a random 0-150 ms and kills the whole job. After every trial:
  - the destination is the previous checkpoint, byte for byte, or a newer one that is complete
    (h5py opens it, completion marker set, every tensor readable and finite, a later step);
  - at most one unfinished temporary is left (the next start removes it).
Trials continue until at least 20 kills landed during a write. Finally a normal run resumes the
survivor, finishes, and leaves no temporary behind.

usage: test_train_kill.py FLAS_TRAIN FIXTURE MPIEXEC WORKDIR   (FLAS_TEST_KILLS=20, FLAS_TEST_SEED)"""
import glob
import os
import random
import re
import signal
import subprocess
import sys
import time

from trainlib import ROOT_ENV, Env, check_complete, fail, ok, sha256

MODEL = ["--dim", "384", "--layers", "6", "--heads", "6", "--vocab", "128", "--seq-len", "64"]


def session(sid):
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getsid(int(pid)) == sid:
                    out.append(int(pid))
            except (ProcessLookupError, PermissionError):
                pass
    return out


def kill_session(proc):
    """SIGKILL mpirun and both ranks (one session), then wait until they are gone."""
    for pid in session(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    t0 = time.time()
    while session(proc.pid) and time.time() - t0 < 10:
        time.sleep(0.01)


def writers(paths):
    """The writers (\".<name>.tmp-<host>-<pid>.<random>\") that left these files. A killed parallel writer
    can leave a companion of its temporary, Open MPI's lock probe \"<temporary>.locktest.<rank>\", which a
    rank still dying may create just after the check; flas-train removes both at its next start."""
    return {re.sub(r"^(.*\.tmp-.*?-\d+\.[0-9a-f]+).*$", r"\1", os.path.basename(p)) for p in paths}


def main():
    e = Env(sys.argv)
    min_kills = int(os.environ.get("FLAS_TEST_KILLS", "20"))
    e.ensure_fixture()
    g, out = e.path("kill-global.h5"), e.path("kill-local.h5")
    for p in glob.glob(out) + glob.glob(e.path(".kill-local.h5.tmp-*")):
        os.unlink(p)
    if not os.path.exists(g):
        e.run(["--init"] + MODEL + ["--output", g])
    args = ["--global", g, "--data", e.data, "--batch", "1", "--seq", "16", "--threads", "1", "--site", "kill",
            "--checkpoint-every", "1", "--peak-gflops", "100", "--log-every", "1000", "--output", out]
    e.run(args + ["--steps", "2"], 2)  # the previous checkpoint of trial 1
    seed = int(os.environ.get("FLAS_TEST_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    landed = trials = 0
    temps = e.path(".kill-local.h5.tmp-*")
    sha, step = sha256(out), check_complete(out)
    while landed < min_kills:
        trials += 1
        if trials > 4 * min_kills:
            fail(f"only {landed} of {trials} kills landed during a write (seed {seed})")
        prev_sha, prev_step = sha, step
        before = writers(glob.glob(temps))
        proc = subprocess.Popen(e.cmd(args + ["--steps", "1000000", "--resume", "auto"], 2),
                                env=dict(os.environ, **ROOT_ENV), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        ino = os.stat(out).st_ino

        def wait(cond):
            while not cond() and proc.poll() is None and time.time() - t0 < 60:
                time.sleep(0.002)

        new_temp = lambda: bool(writers(glob.glob(temps)) - before)  # noqa: E731
        wait(new_temp)
        # Half of the trials kill the second write of the run: it replaces a checkpoint this same run
        # committed a moment ago (a new inode at the destination), not the previous trial's survivor.
        if rng.random() < 0.5:
            wait(lambda: os.stat(out).st_ino != ino)
            wait(new_temp)
        if proc.poll() is not None:
            fail(f"trial {trials}: flas-train exited {proc.returncode} before writing")
        time.sleep(rng.uniform(0, 0.15))
        writing = bool(writers(glob.glob(temps)) - before)
        kill_session(proc)
        landed += writing
        step = check_complete(out)
        sha = sha256(out)
        if sha != prev_sha and step <= prev_step:
            fail(f"trial {trials}: the destination changed but holds step {step} <= {prev_step}")
        left = glob.glob(temps)
        if len(writers(left)) > 1:
            fail(f"trial {trials}: temporaries accumulate: {left}")
        print(f"trial {trials}: kill {'during a write' if writing else 'between writes'}; destination "
              f"{'unchanged (step %d)' % step if sha == prev_sha else 'advanced to step %d (complete)' % step}; "
              f"{len(left)} temporary left", flush=True)
    p = e.run(args + ["--steps", str(check_complete(out) + 2), "--resume", "auto"], 2)
    if glob.glob(temps):
        fail(f"temporaries left after a clean run: {glob.glob(temps)}")
    if "removed" not in p.stdout and landed:
        print("note: the last kill left no temporary")
    ok(f"{landed} SIGKILLs during checkpoint writes ({trials} trials, seed {seed}): the destination was always "
       f"the previous checkpoint or a newer complete one; the survivor resumes and finishes cleanly")


if __name__ == "__main__":
    main()
