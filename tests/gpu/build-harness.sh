#!/bin/sh
# Builds tests/gpu/test_kernels.cu (the CUDA kernels against the CPU reference layers) with nvcc alone:
# no cmake, no Debian packages, for a GPU machine that has only the CUDA toolkit.
#   tests/gpu/build-harness.sh [OUTDIR]       (default: ./build-harness)
# Environment: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), ARCH (default sm_90, e.g.
# ARCH=sm_80), CC (the host C compiler for layers_ref.c, default gcc), WERROR=0 to allow warnings.
# Then run OUTDIR/test_kernels: exit 0 all pass, 1 a failure, 77 no GPU.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-build-harness}
mkdir -p "$out"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCH=${ARCH:-sm_90}
CC=${CC:-gcc}
werror="--Werror=all-warnings"
[ "${WERROR:-1}" = 0 ] && werror=""
cudaflags="-std=c++17 -O2 -arch=$ARCH -Xcompiler=-Wall,-Wextra $werror -I$root/runtime"

set -x
# The reference layers as plain C (libm only), as the CPU build compiles them.
"$CC" -std=gnu11 -O2 -Wall -Wextra -c "$root/runtime/layers_ref.c" -I"$root/runtime" -o "$out/layers_ref.o"
for f in context convert matmul embedding rmsnorm rope attention swiglu xent global_norm adamw; do
    "$NVCC" $cudaflags -c "$root/runtime/cuda/$f.cu" -o "$out/$f.o"
done
"$NVCC" $cudaflags -c "$here/test_kernels.cu" -o "$out/test_kernels.o"
"$NVCC" -arch="$ARCH" -o "$out/test_kernels" "$out"/test_kernels.o "$out"/context.o "$out"/convert.o \
    "$out"/matmul.o "$out"/embedding.o "$out"/rmsnorm.o "$out"/rope.o "$out"/attention.o "$out"/swiglu.o \
    "$out"/xent.o "$out"/global_norm.o "$out"/adamw.o "$out/layers_ref.o" -lcublasLt -lcublas -lm
