#!/bin/sh
# Builds the GPU harnesses with nvcc alone (no cmake, no Debian packages, for a GPU machine that has only
# the CUDA toolkit):
#   test_kernels  tests/gpu/test_kernels.cu: the CUDA kernels against the CPU reference layers
#   test_step     tests/gpu/test_step.cu: the CUDA model driver (runtime/cuda/model_cuda.cu) on a "FLaS
#                 step state" file against the CPU's loss, gradients and optimizer steps
#   tests/gpu/build-harness.sh [OUTDIR]       (default: ./build-harness)
# Environment: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), ARCH (default sm_90, e.g.
# ARCH=sm_80), CC (the host C compiler for the C sources, default gcc), WERROR=0 to allow warnings,
# JOBS (parallel compilations, default: the processor count).
# Then run OUTDIR/test_kernels, OUTDIR/test_step STATE: exit 0 all pass, 1 a failure, 77 no GPU.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-build-harness}
mkdir -p "$out"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCH=${ARCH:-sm_90}
CC=${CC:-gcc}
JOBS=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}
werror="--Werror=all-warnings"
cwerror="-Werror"
if [ "${WERROR:-1}" = 0 ]; then werror=""; cwerror=""; fi
cudaflags="-std=c++17 -O2 -arch=$ARCH -Xcompiler=-Wall,-Wextra $werror -I$root/runtime -I$root/include"
cflags="-std=gnu11 -O2 -Wall -Wextra $cwerror -I$root/runtime -I$root/include"
kernels="context convert matmul embedding rmsnorm rope attention swiglu xent global_norm adamw residual"

# Compilations run JOBS at a time; any failure stops the build after the running ones finish.
pids=""
njobs=0
failed=0
reap() {
    for p in $pids; do wait "$p" || failed=1; done
    pids=""
    njobs=0
    [ "$failed" = 0 ] || { echo "build-harness: a compilation failed" >&2; exit 1; }
}
job() {
    echo "+ $*"
    "$@" &
    pids="$pids $!"
    njobs=$((njobs + 1))
    [ "$njobs" -lt "$JOBS" ] || reap
}

# The reference layers as plain C (libm only), as the CPU build compiles them; the step-state reader and
# its C dependencies (plain C99 + POSIX, see include/flas/step_state.h).
job "$CC" $cflags -c "$root/runtime/layers_ref.c" -o "$out/layers_ref.o"
for f in step_state model_config; do
    job "$CC" $cflags -c "$root/runtime/$f.c" -o "$out/$f.o"
done
for f in atomic_file error; do
    job "$CC" $cflags -c "$root/runtime/common/$f.c" -o "$out/$f.o"
done
for f in $kernels model_cuda; do
    job "$NVCC" $cudaflags -c "$root/runtime/cuda/$f.cu" -o "$out/$f.o"
done
job "$NVCC" $cudaflags -c "$here/test_kernels.cu" -o "$out/test_kernels.o"
job "$NVCC" $cudaflags -c "$here/test_step.cu" -o "$out/test_step.o"
reap

kobjs=""
for f in $kernels; do kobjs="$kobjs $out/$f.o"; done
set -x
"$NVCC" -arch="$ARCH" -o "$out/test_kernels" "$out/test_kernels.o" $kobjs "$out/layers_ref.o" -lcublasLt -lcublas -lm
"$NVCC" -arch="$ARCH" -o "$out/test_step" "$out/test_step.o" "$out/model_cuda.o" $kobjs "$out/step_state.o" \
    "$out/model_config.o" "$out/atomic_file.o" "$out/error.o" -lcublasLt -lcublas -lm -lpthread
