// Fused softmax + cross-entropy over the classifier's logits, in place (the [N,V] matrix exists once):
// forward turns logits into probabilities and writes the per-row losses; backward subtracts the one-hot
// targets. fp32 throughout (the caller converts the gradient to bf16 for the classifier's matmul backward).
#include <math.h>

#include "common.cuh"

#define XENT_THREADS 512

// One block per row: max, sum of exp(x - max) (fp32 block reductions), the loss, then the probabilities.
__global__ void xent_forward_kernel(float *logits, float *losses, const int *targets, int V)
{
    __shared__ float shared[32];
    size_t n = blockIdx.x;
    float *row = logits + n * V;
    int tgt = targets[n];
    // The target's logit is read before any thread overwrites the row: the overwrite comes after
    // block_max/block_sum, whose barriers order it after this read.
    float xt = 0.0f;
    if (threadIdx.x == 0)
        xt = (tgt >= 0 && tgt < V) ? row[tgt] : NAN;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        mx = fmaxf(mx, row[i]);
    mx = block_max(mx, shared);
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        s += expf(row[i] - mx);
    s = block_sum(s, shared);
    if (threadIdx.x == 0)
        losses[n] = logf(s) + mx - xt;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        row[i] = expf(row[i] - mx) / s;
}

__global__ void xent_backward_kernel(float *probs, const int *targets, int N, int V)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N)
        return;
    int tgt = targets[n];
    if (tgt >= 0 && tgt < V)
        probs[(size_t)n * V + tgt] -= 1.0f;
}

extern "C" int flas_cuda_xent_forward(flas_cuda *c, float *logits, float *losses, const int *targets, int N, int V)
{
    ARG_CHECK(c, N >= 0 && V > 0);
    if (N == 0)
        return 0;
    xent_forward_kernel<<<N, XENT_THREADS, 0, c->stream>>>(logits, losses, targets, V);
    LAUNCH_CHECK(c);
    return 0;
}

extern "C" int flas_cuda_xent_backward(flas_cuda *c, float *probs, const int *targets, int N, int V)
{
    ARG_CHECK(c, N >= 0 && V > 0);
    if (N == 0)
        return 0;
    xent_backward_kernel<<<(N + 255) / 256, 256, 0, c->stream>>>(probs, targets, N, V);
    LAUNCH_CHECK(c);
    return 0;
}
