#!/bin/sh
# Writes, on the CPU machine (the cmake build), the "FLaS step state" files that tests/gpu/device-check.sh
# runs test_step on, on a GPU machine that cannot build the CPU core:
#   tests/gpu/device-prep.sh OUTDIR [WRITE_STEP_STATE]
# WRITE_STEP_STATE defaults to build-cuda/tests/gpu/write_step_state (cmake --build build-cuda --target
# write_step_state). THREADS (default 2) OpenMP threads of the CPU core. The caller carries OUTDIR to the
# GPU machine (e.g. .gpu-states/, device-check.sh's default).
#
# The states (run in this order by device-check.sh, sorted by name):
#   1-small-gqa      dim 64, 2 layers, 4 heads / 2 kv heads, hidden 96, vocab 97 (odd: misaligned leading
#                    dimensions), untied head, B 2 x T 32, logits stored, S = 0: the gradient check alone.
#   2-small-replay   dim 96, 3 layers, 6 heads / 2 kv heads (group 3), hidden 256, vocab 250, tied, B 4 x T 64,
#                    logits stored, S = 50: a quick replay, separating optimizer trouble from scale.
#   3-stories15M-v1024  stories15M's shape (dim 288, 6 layers, 6 heads, 6 kv heads, hidden 768, seq 256,
#                    tied) with a 1024-token vocabulary instead of 32000, B 4 x T 256, no logits, S = 200:
#                    the 200-step loss tracking.
# Why vocabulary 1024: the file holds params AND grads (n_params floats each). With vocab 32000 stories15M
# has 15.2M params: 2 x 61 MB = 122 MB, twice the 64 MiB that may travel to the GPU machine with the source
# tree. The blocks alone are 5.98M params (48 MB for both arrays), so the vocabulary must stay small:
# 1024 x 288 adds 0.29M (2.4 MB); the 200 steps' tokens and targets add 1.6 MB. About 49.4 MiB in all,
# the other two states under 2 MiB, the tracked tree about 3.3 MiB: under the 60 MiB this script checks.
# CPU time (measured, 2 threads, a shared machine): see the report this script prints; the stories state
# dominates (about 1 s per step).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: device-prep.sh OUTDIR [WRITE_STEP_STATE]}
wss=${2:-$root/build-cuda/tests/gpu/write_step_state}
threads=${THREADS:-2}
if [ ! -x "$wss" ]; then
    echo "device-prep: $wss not found; build it: cmake --build build-cuda --target write_step_state" >&2
    exit 1
fi
mkdir -p "$out"
rm -f "$out"/*.state

write() {
    name=$1
    shift
    t=$(date +%s)
    "$wss" "$@" --threads "$threads" --out "$out/$name.state"
    echo "device-prep: $name.state in $(($(date +%s) - t)) s"
}

write 1-small-gqa --dim 64 --layers 2 --heads 4 --kv-heads 2 --hidden 96 --vocab 97 --seq 32 --untied \
    --batch 2 --seq-len 32 --steps 0 --logits --seed 1
write 2-small-replay --dim 96 --layers 3 --heads 6 --kv-heads 2 --hidden 256 --vocab 250 --seq 64 \
    --batch 4 --seq-len 64 --steps 50 --logits --seed 2
write 3-stories15M-v1024 --preset stories15M --vocab 1024 --batch 4 --seq-len 256 --steps 200 --no-logits --seed 3

# What travels: these states and the tracked source tree, under 60 MiB (the limit is 64 MiB).
states_bytes=$(cat "$out"/*.state | wc -c)
tree_bytes=$(cd "$root" && git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
ls -l "$out"/*.state
total=$((states_bytes + tree_bytes))
echo "device-prep: states $states_bytes bytes + tracked tree $tree_bytes bytes = $total bytes" \
    "($((total / 1048576)) MiB; limit 60 MiB)"
if [ "$total" -ge $((60 * 1048576)) ]; then
    echo "device-prep: too big to travel with the tree" >&2
    exit 1
fi
