#!/bin/sh
# The GPU checks of the CUDA path, as ONE script for a GPU machine that has only the CUDA toolkit (nvcc,
# cuBLAS; no cmake build, no Debian HDF5/MPI/OpenBLAS):
#   tests/gpu/device-check.sh [STATES_DIR]        (default: .gpu-states, written by device-prep.sh)
# It builds the harnesses with nvcc alone (tests/gpu/build-harness.sh), records nvidia-smi and the CUDA
# versions and devices (flas-gpu-info's report), then runs test_kernels and test_step on every
# STATES_DIR/*.state. Every log goes under $OUT (default ./gpu-out); summary.txt has one line per check.
# Environment: OUT, BUILD (default ./build-harness), ARCH (sm_90: H100/H200), WERROR (default 0 here: a
# newer toolkit's new warning must not cost a device run; the CPU machine's build keeps warnings errors),
# BUDGET_S (default 420: total seconds; a test that would start later is counted as failed).
# Exit: 0 every check ran and passed; 1 a check failed, timed out, or was skipped while others ran
# (a check that did not run is never a pass); 77 nothing could run (no GPU: every harness said so).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
states=${1:-$root/.gpu-states}
build=${BUILD:-$root/build-harness}
ARCH=${ARCH:-sm_90}
BUDGET_S=${BUDGET_S:-420}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
export NVCC ARCH
summary="$OUT/summary.txt"
: >"$summary"
start=$(date +%s)
passed=0
failed=0
notrun=0

note() { echo "$*" | tee -a "$summary"; }
elapsed() { echo $(($(date +%s) - start)); }

# ---- the machine ----
{
    echo "== nvidia-smi"
    nvidia-smi 2>&1
    echo "== nvidia-smi --query-gpu"
    nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    echo "== nvcc --version"
    "$NVCC" --version 2>&1
    echo "== gcc --version"
    ${CC:-gcc} --version 2>&1 | head -1
} >"$OUT/machine.txt" 2>&1
note "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"

# ---- build ----
t0=$(date +%s)
if WERROR=${WERROR:-0} timeout -k 10 300 sh "$here/build-harness.sh" "$build" >"$OUT/build.log" 2>&1; then
    note "build: ok in $(($(date +%s) - t0)) s ($(grep -c 'warning' "$OUT/build.log") warning lines; build.log)"
else
    note "build: FAILED after $(($(date +%s) - t0)) s; the end of build.log:"
    tail -30 "$OUT/build.log" | tee -a "$summary"
    exit 1
fi
# flas-gpu-info's report (runtime/cuda/gpu_info.cu needs NCCL's header and library: informative only).
if "$NVCC" -arch="$ARCH" -o "$build/flas-gpu-info" runtime/cuda/gpu_info.cu -lnccl >"$OUT/gpu-info.log" 2>&1; then
    "$build/flas-gpu-info" >>"$OUT/gpu-info.log" 2>&1
    note "flas-gpu-info: exit $? ($(tail -1 "$OUT/gpu-info.log"))"
else
    note "flas-gpu-info: not built (no NCCL here?), see gpu-info.log; informative only"
fi

# ---- the checks ----
# run NAME CAP_S COMMAND...: its output in $OUT/NAME.log; 0 pass, 77 not run, anything else a failure.
run() {
    name=$1
    cap=$2
    shift 2
    left=$((BUDGET_S - $(elapsed)))
    if [ "$left" -lt 20 ]; then
        note "$name: FAIL (not started: the ${BUDGET_S} s budget is spent)"
        failed=$((failed + 1))
        return
    fi
    [ "$cap" -le "$left" ] || cap=$left
    t=$(date +%s)
    timeout -k 10 "$cap" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    secs=$(($(date +%s) - t))
    case $rc in
    0)
        passed=$((passed + 1))
        note "$name: PASS in $secs s ($(tail -1 "$OUT/$name.log"))"
        ;;
    77)
        notrun=$((notrun + 1))
        note "$name: not run ($(head -1 "$OUT/$name.log"))"
        ;;
    124 | 137)
        failed=$((failed + 1))
        note "$name: FAIL (timed out after $cap s)"
        ;;
    *)
        failed=$((failed + 1))
        note "$name: FAIL (exit $rc in $secs s); its failed lines:"
        grep -E 'FAIL|error' "$OUT/$name.log" | head -20 | tee -a "$summary"
        ;;
    esac
    # the worst lines and replay summaries, whatever the result
    grep -E '^(worst|replay:|replay losses|loss |first step)' "$OUT/$name.log" 2>/dev/null | sed "s/^/    /" |
        tee -a "$summary"
}

run test_kernels 120 "$build/test_kernels"
nstates=0
for f in "$states"/*.state; do
    [ -f "$f" ] || continue
    nstates=$((nstates + 1))
    run "test_step-$(basename "$f" .state)" 240 "$build/test_step" "$f"
done
if [ "$nstates" = 0 ]; then
    note "test_step: FAIL (no state files in $states: run tests/gpu/device-prep.sh there first)"
    failed=$((failed + 1))
fi

note "total: $passed passed, $failed failed, $notrun not run, in $(elapsed) s"
if [ "$failed" -gt 0 ]; then
    exit 1
fi
if [ "$passed" = 0 ]; then
    note "nothing ran: exit 77"
    exit 77
fi
if [ "$notrun" -gt 0 ]; then
    note "some checks did not run while others did: exit 1"
    exit 1
fi
exit 0
