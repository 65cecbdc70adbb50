#!/usr/bin/env bash
# The FLaS test command (README, .ci/run): installs what the suite needs, builds, runs the whole ctest
# suite (unit, mpi, slurm, sites, e2e, oracle), prints the check and ctest totals, and verifies that
# nothing the suite started is left running.
#   bash tests/run.sh                  everything
#   bash tests/run.sh --sanitize       the same, built with ASan + UBSan (build dir build-asan)
#   bash tests/run.sh -- -L unit       pass arguments to ctest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=build
cmake_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --sanitize)
        build=build-asan
        cmake_args+=(-DFLAS_SANITIZE=ON)
        # For every FLaS process the suite starts, also the ones inside Slurm jobs (the bed's sshd and
        # sbatch pass these on): full stacks, so that allocations MPI and OpenSSL keep for the life of
        # the process are recognised by tests/lsan.supp. Tests that set their own options keep them.
        export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0
        export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0" ;;
    --) shift; break ;;
    *) echo "usage: tests/run.sh [--sanitize] [-- CTEST_ARGS...]" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "tests/run.sh: run as root (the test bed starts daemons and namespaces)" >&2; exit 1; }

t0=$(date +%s)
bash tests/bed/install-deps.sh
cmake -S . -B "$build" "${cmake_args[@]}"
cmake --build "$build" -j"$(nproc)"

status=0
(cd "$build" && ctest --output-on-failure --timeout 1500 "$@") || status=$?

# check's own totals, summed over every check runner that ran ("100%: Checks: N, Failures: F, Errors: E").
log="$build/Testing/Temporary/LastTest.log"
if [ -f "$log" ]; then
    { grep -Eo 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" || true; } |
        awk -F'[:,] *' '{c += $2; f += $4; e += $6; n++}
            END {printf "check totals: %d runners, %d checks, %d failures, %d errors\n", n, c, f, e}'
fi

# Nothing the suite started may outlive it: every daemon of the bed down, no namespace left behind.
leftover=0
if bash tests/bed/flas-bed status all >/tmp/flas-bed-status.$$ 2>&1 || grep -q ' up ' /tmp/flas-bed-status.$$; then
    echo "tests/run.sh: test-bed daemons are still running after the suite:" >&2
    grep ' up ' /tmp/flas-bed-status.$$ >&2 || true
    leftover=1
fi
rm -f /tmp/flas-bed-status.$$
if grep -q '^flas-' <<<"$(ip netns list 2>/dev/null)"; then
    echo "tests/run.sh: network namespaces left behind: $(ip netns list | grep '^flas-' | tr '\n' ' ')" >&2
    leftover=1
fi
[ $leftover = 0 ] && echo "test bed: no daemon and no namespace left behind"
echo "tests/run.sh: finished in $(($(date +%s) - t0)) s"
[ $status = 0 ] && [ $leftover = 0 ]
