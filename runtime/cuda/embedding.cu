// Token embedding: forward gathers rows of the table, backward adds rows of the gradient back into it.
// fp32 (the table is the fp32 master; the residual stream it starts is fp32).
#include <math.h>

#include "common.cuh"

// out[n, d] = table[tokens[n], d]; one thread per element, consecutive threads along d (coalesced).
__global__ void embedding_forward_kernel(float *out, const int *tokens, const float *table, int N, int D, int V)
{
    size_t total = (size_t)N * D;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / D, d = i % D;
        int tok = tokens[n];
        out[i] = (tok >= 0 && tok < V) ? table[(size_t)tok * D + d] : NAN;
    }
}

// Deterministic backward in two kernels, without atomics. Rows with the same token form a chain in
// increasing n: head[n] says n is the first row of its token, next[n] is the following row of the same
// token (or -1). The head row then adds the chain's rows into dtable in order of n: exactly the additions
// of the reference loop `for n: dtable[tokens[n]] += dout[n]`, in the same order, so the same bits.
// Building the chains is O(N^2) integer compares (67M at N = 8192: well under a millisecond), where the
// adds are O(N D) floats either way.
__global__ void embedding_chain_kernel(int *head, int *next, const int *tokens, int N, int V)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N)
        return;
    int tok = tokens[n], first = 1, nx = -1;
    // All threads of a warp read the same tokens[m] at once: a broadcast from L1.
    for (int m = 0; m < N; m++) {
        if (tokens[m] != tok)
            continue;
        if (m < n)
            first = 0;
        else if (m > n && nx < 0)
            nx = m;
    }
    head[n] = first && tok >= 0 && tok < V;
    next[n] = nx;
}

// Grid (N, column blocks): block x = row n does the work only when n heads a chain.
__global__ void embedding_backward_kernel(float *dtable, const float *dout, const int *tokens, const int *head,
                                          const int *next, int D)
{
    int n = blockIdx.x;
    int d = blockIdx.y * blockDim.x + threadIdx.x;
    if (!head[n] || d >= D)
        return;
    float *dst = dtable + (size_t)tokens[n] * D + d;
    float acc = *dst;
    for (int m = n; m >= 0; m = next[m])
        acc += dout[(size_t)m * D + d];
    *dst = acc;
}

extern "C" int flas_cuda_embedding_forward(flas_cuda *c, float *out, const int *tokens, const float *table, int N,
                                           int D, int V)
{
    ARG_CHECK(c, N >= 0 && D > 0 && V > 0);
    if (N == 0)
        return 0;
    size_t total = (size_t)N * D;
    embedding_forward_kernel<<<flas_grid_for(total, 256), 256, 0, c->stream>>>(out, tokens, table, N, D, V);
    LAUNCH_CHECK(c);
    return 0;
}

extern "C" int flas_cuda_embedding_backward(flas_cuda *c, float *dtable, const float *dout, const int *tokens, int N,
                                            int D, int V)
{
    ARG_CHECK(c, N >= 0 && D > 0 && V > 0);
    ARG_CHECK(c, (D + 255) / 256 <= 65535); // grid y
    if (N == 0)
        return 0;
    int *links = (int *)flas_cuda_scratch(c, 2 * (size_t)N * sizeof(int));
    if (!links)
        return -1;
    int *head = links, *next = links + N;
    embedding_chain_kernel<<<(N + 255) / 256, 256, 0, c->stream>>>(head, next, tokens, N, V);
    LAUNCH_CHECK(c);
    dim3 grid((unsigned)N, (unsigned)((D + 255) / 256));
    embedding_backward_kernel<<<grid, 256, 0, c->stream>>>(dtable, dout, tokens, head, next, D);
    LAUNCH_CHECK(c);
    return 0;
}
