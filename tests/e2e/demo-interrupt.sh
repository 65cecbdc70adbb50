#!/usr/bin/env bash
# The demo stops everything it started when it is interrupted: SIGTERM to the demo's shell alone (a
# batch system or `kill`), and SIGINT to its whole process group (Ctrl-C in a terminal), each sent
# while the federated rounds run (jobs at the sites, flas-coordinator polling). Afterwards no daemon of
# the bed, no namespace, no coordinator and no job step may be left, and the demo exits non-zero.
# usage: demo-interrupt.sh        (the bed installed; the sites may be up or down, they end down)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BEDCTL="$ROOT/tests/bed/flas-bed"
eval "$("$BEDCTL" paths | sed 's/^/P_/')"
BED=$P_bed
LOG="$BED/demo-interrupt"
install -d -m 755 "$LOG"

fail() { echo "FAIL: $*" >&2; "$BEDCTL" stop sites >/dev/null 2>&1 || true; exit 1; }
pass() { echo "PASS: $*"; }

leftovers() { # prints what of the demo is still alive
    "$BEDCTL" status sites 2>/dev/null | grep ' up ' || true
    ip netns list 2>/dev/null | grep '^flas-' || true
    # processes, not zombies (an exited daemon waits for PID 1 to reap it)
    local procs
    procs=$(ps -eo pid=,stat=,args=) # taken first, so the filter does not see itself
    awk -v c="flas-coordinator run $BED/demo/" '$2 !~ /^Z/ && (index($0, c) || $3 ~ /slurmstepd/)' <<<"$procs" || true
}

interrupt() { # SIGNAL WHOM(shell|group) EXPECTED-EXIT
    local sig=$1 whom=$2 want=$3 out="$LOG/$1.out" pid i rc=0 left
    # The demo leads its own process group, as in a terminal. A background job of a script starts with
    # SIGINT ignored (and bash cannot trap a signal ignored at entry): give it the default back, as a
    # terminal's foreground job has it.
    /usr/bin/python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execv(sys.argv[1], sys.argv[1:])' "$ROOT/slurm-examples/demo/flas-demo.sh" --skip-build --rounds 3 --steps 2000 \
        >"$out" 2>&1 &
    pid=$!
    # wait until round 0's jobs run at both sites under the coordinator
    for i in $(seq 1200); do
        if [ -f "$BED/demo/fedavg/journal" ] &&
            [ -n "$(SLURM_CONF=$P_leonardo_conf squeue -h -t R -o %i 2>/dev/null)" ] &&
            [ -n "$(SLURM_CONF=$P_karolina_conf squeue -h -t R -o %i 2>/dev/null)" ]; then
            break
        fi
        kill -0 $pid 2>/dev/null || fail "the demo ended before its rounds ran: $(tail -5 "$out")"
        sleep 0.25
    done
    [ -f "$BED/demo/fedavg/journal" ] || fail "the rounds never started: $(tail -5 "$out")"
    if [ "$whom" = group ]; then kill -"$sig" -- -"$pid"; else kill -"$sig" "$pid"; fi
    # the demo must end promptly (stopping the sites takes seconds), not after its rounds
    for i in $(seq 600); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    kill -0 $pid 2>/dev/null && fail "the demo still runs 60 s after SIG$sig"
    wait $pid || rc=$?
    [ "$rc" = "$want" ] || fail "SIG$sig: the demo exited $rc, expected $want: $(tail -5 "$out")"
    grep -q "stopping the sites" "$out" || fail "SIG$sig: the demo did not stop the sites: $(tail -5 "$out")"
    sleep 1
    left=$(leftovers)
    [ -z "$left" ] || fail "after SIG$sig to the $whom these are still alive: $left"
    pass "SIG$sig to the demo's $whom during round 0: exit $rc, sites stopped, nothing left running"
}

interrupt TERM shell 143
interrupt INT group 130
