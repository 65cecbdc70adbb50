// flas-gpu-info: what the CUDA + NCCL path of this build sees on this node. Exit 0 with a device
// list, 3 when the build works but the node has no usable GPU (driver or device missing).
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: flas-gpu-info\nLists the CUDA devices and the CUDA/NCCL versions FLaS was built with.\n"
               "Exit status: 0 GPUs found, 3 no usable GPU on this node.\n");
        return 0;
    }
    int nccl = 0, rt = 0, drv = 0, n = 0;
    ncclGetVersion(&nccl);
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    printf("built with CUDA runtime %d.%d, NCCL %d.%d.%d; driver %d.%d\n", rt / 1000, rt % 1000 / 10, nccl / 10000,
           nccl / 100 % 100, nccl % 100, drv / 1000, drv % 1000 / 10);
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        printf("no usable GPU: %s (%d)\n", err != cudaSuccess ? cudaGetErrorString(err) : "0 devices", (int)err);
        return 3;
    }
    for (int i = 0; i < n; i++) {
        cudaDeviceProp p;
        cudaGetDeviceProperties(&p, i);
        printf("GPU %d: %s, sm_%d%d, %.1f GiB\n", i, p.name, p.major, p.minor, p.totalGlobalMem / 1073741824.0);
    }
    return 0;
}
