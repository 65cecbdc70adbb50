// Matrix products of the Linear layers through cuBLASLt: bf16 operands, fp32 accumulation
// (CUBLAS_COMPUTE_32F, fp32 alpha/beta), fp32 or bf16 output.
//
// FLaS's arrays are row-major; cuBLAS(Lt) is column-major. A row-major X[R,C] (row stride ld) is, read
// column-major, the C x R matrix X^T with the same ld. So a row-major product C = op(A) op(B) is computed
// as the column-major product C^T = op(B)^T op(A)^T: swap the operands, keep each one's transpose flag,
// and swap m and n. rm_gemm below does exactly that, once, and the three layer products are written in
// row-major terms on top of it.
#include <stdint.h>

#include "common.cuh"

// Largest power of two (at most 256) that divides the address: cuBLASLt's heuristic otherwise assumes
// 256-byte aligned buffers and may pick a kernel that faults on a sub-array (an offset into a larger buffer).
static uint32_t alignment_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    uintptr_t low = a & (~a + 1); // lowest set bit; 0 for NULL
    return (low == 0 || low > 256) ? 256u : (uint32_t)low;
}

// Column-major D[m,n] = alpha op(A) op(B) + beta D. A is stored m x k (op N) or k x m (op T) with leading
// dimension lda; B is stored k x n (op N) or n x k (op T); D m x n with ldd, of type dtype.
static int lt_gemm(flas_cuda *c, bool transa, bool transb, int m, int n, int k, float alpha, const __nv_bfloat16 *A,
                   int lda, const __nv_bfloat16 *B, int ldb, float beta, void *D, cudaDataType dtype, int ldd)
{
    cublasOperation_t opa = transa ? CUBLAS_OP_T : CUBLAS_OP_N, opb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0, rc = 0;
    cublasStatus_t s;
    uint64_t ws = c->workspace_bytes;
    uint32_t align_a = alignment_of(A), align_b = alignment_of(B), align_d = alignment_of(D);

    // Every status is checked; on the first failure record it and release what was created.
#define LT(call)                                                                                         \
    do {                                                                                                 \
        s = (call);                                                                                      \
        if (s != CUBLAS_STATUS_SUCCESS) {                                                                \
            rc = flas_cuda_fail(c, __FILE__, __LINE__, "%s: %s", #call, flas_cublas_status_name(s));     \
            goto done;                                                                                   \
        }                                                                                                \
    } while (0)

    LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    // Layouts describe the stored matrices (before op), column-major (the default order).
    LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, transa ? k : m, transa ? m : k, lda));
    LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, transb ? n : k, transb ? k : n, ldb));
    LT(cublasLtMatrixLayoutCreate(&ld, dtype, m, n, ldd));
    LT(cublasLtMatmulPreferenceCreate(&pref));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                            sizeof align_a));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                            sizeof align_b));
    // C is D (in place, same layout): the same alignment for both.
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d,
                                            sizeof align_d));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d,
                                            sizeof align_d));
    s = cublasLtMatmulAlgoGetHeuristic(c->lt, op, la, lb, ld, ld, pref, 1, &heur, &found);
    if (s == CUBLAS_STATUS_SUCCESS && found > 0) {
        LT(cublasLtMatmul(c->lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &heur.algo, c->workspace,
                          c->workspace_bytes, c->stream));
    } else if (s == CUBLAS_STATUS_SUCCESS || s == CUBLAS_STATUS_NOT_SUPPORTED) {
        // No cuBLASLt kernel for this shape/alignment (odd leading dimensions, say): the same product
        // through cublasGemmEx, which accepts any shape. Counted, so that tests and logs can tell.
        c->matmul_fallbacks++;
        LT(cublasGemmEx(c->blas, opa, opb, m, n, k, &alpha, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb, &beta, D,
                        dtype, ldd, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    } else {
        rc = flas_cuda_fail(c, __FILE__, __LINE__, "cublasLtMatmulAlgoGetHeuristic: %s", flas_cublas_status_name(s));
    }
#undef LT
done:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (ld)
        cublasLtMatrixLayoutDestroy(ld);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (op)
        cublasLtMatmulDescDestroy(op);
    return rc;
}

// Row-major C[M,N] = alpha op(A) op(B) + beta C: A is [M,K] (transa false) or [K,M] (transa true) with row
// stride lda; B is [K,N] or [N,K] with ldb; C [M,N] with ldc. As column-major: C^T = op(B)^T op(A)^T, where
// B's storage read column-major is B^T (N x K) when not transposed, so op(B)^T is "B's storage with B's own
// flag"; likewise for A. Hence: operands swapped, flags kept, m = N, n = M.
static int rm_gemm(flas_cuda *c, bool transa, bool transb, int M, int N, int K, float alpha, const __nv_bfloat16 *A,
                   int lda, const __nv_bfloat16 *B, int ldb, float beta, void *C, cudaDataType ctype, int ldc)
{
    return lt_gemm(c, transb, transa, N, M, K, alpha, B, ldb, A, lda, beta, C, ctype, ldc);
}

static cudaDataType cuda_type(flas_dtype t) { return t == FLAS_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

extern "C" int flas_cuda_matmul_forward(flas_cuda *c, void *out, flas_dtype out_type, const flas_bf16 *in,
                                        const flas_bf16 *W, int N, int Nin, int Nout)
{
    ARG_CHECK(c, N > 0 && Nin > 0 && Nout > 0);
    ARG_CHECK(c, out_type == FLAS_F32 || out_type == FLAS_BF16);
    // out[N,Nout] = in[N,Nin] . (W[Nout,Nin])^T
    return rm_gemm(c, false, true, N, Nout, Nin, 1.0f, (const __nv_bfloat16 *)in, Nin, (const __nv_bfloat16 *)W, Nin,
                   0.0f, out, cuda_type(out_type), Nout);
}

extern "C" int flas_cuda_matmul_backward(flas_cuda *c, void *din, flas_dtype din_type, float *dW,
                                         const flas_bf16 *dout, const flas_bf16 *in, const flas_bf16 *W, int N,
                                         int Nin, int Nout, float alpha, bool din_accumulate)
{
    ARG_CHECK(c, N > 0 && Nin > 0 && Nout > 0);
    ARG_CHECK(c, din_type == FLAS_F32 || din_type == FLAS_BF16);
    const __nv_bfloat16 *dy = (const __nv_bfloat16 *)dout, *x = (const __nv_bfloat16 *)in,
                        *w = (const __nv_bfloat16 *)W;
    if (din) {
        // din[N,Nin] (+)= alpha dout[N,Nout] . W[Nout,Nin]
        int rc = rm_gemm(c, false, false, N, Nin, Nout, alpha, dy, Nout, w, Nin, din_accumulate ? 1.0f : 0.0f, din,
                         cuda_type(din_type), Nin);
        if (rc)
            return rc;
    }
    if (dW)
        // dW[Nout,Nin] += alpha (dout[N,Nout])^T . in[N,Nin]; dout's storage is [K=N, M=Nout]: transa.
        return rm_gemm(c, true, false, Nout, Nin, N, alpha, dy, Nout, x, Nin, 1.0f, dW, CUDA_R_32F, Nin);
    return 0;
}
