/* bf16 matrix products with fp32 accumulation through oneDNN's matmul primitive (gemm_bf16.h).
 *
 * The fp32 operands are rounded into packed bf16 copies, plain row-major (a transposed operand is
 * transposed in the same pass), and oneDNN multiplies them with
 * its AVX512-BF16/AMX kernels into the fp32 output; alpha is its output scale and beta a sum post-op,
 * so C += alpha A B needs no extra pass. Primitives are cached by their full description: a model
 * asks for a handful of shapes, and making a primitive costs far more than running a small one. */
#include "gemm_bf16.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/bf16.h"
#include "flas/error.h"

#ifdef FLAS_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>

typedef struct gemm_key {
    int transA, transB, M, N, K, ldc;
    float alpha, beta;
} gemm_key;

typedef struct gemm_entry {
    gemm_key key;
    dnnl_primitive_t prim;
} gemm_entry;

#define GEMM_CACHE 64 /* shapes x (alpha, beta) of a model: ~4 per layer kind, far below this */

static struct {
    int ready;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    gemm_entry cache[GEMM_CACHE];
    int n_cached, next_evict;
    uint16_t *a, *b;       /* packed bf16 operands */
    size_t a_cap, b_cap;   /* elements */
} g;

static int dnnl_fail(char *err, size_t errlen, const char *what, dnnl_status_t st)
{
    return flas_fail(err, errlen, "oneDNN %s failed (status %d)", what, (int)st);
}

static int ensure_ready(char *err, size_t errlen)
{
    if (g.ready)
        return 0;
    dnnl_status_t st = dnnl_engine_create(&g.engine, dnnl_cpu, 0);
    if (st != dnnl_success)
        return dnnl_fail(err, errlen, "engine", st);
    st = dnnl_stream_create(&g.stream, g.engine, dnnl_stream_default_flags);
    if (st != dnnl_success) {
        dnnl_engine_destroy(g.engine);
        return dnnl_fail(err, errlen, "stream", st);
    }
    g.ready = 1;
    return 0;
}

/* Releases oneDNN's objects and the buffers at exit, so leak checkers see a clean process. */
__attribute__((destructor)) static void gemm_bf16_release(void)
{
    for (int i = 0; i < g.n_cached; i++)
        dnnl_primitive_destroy(g.cache[i].prim);
    if (g.ready) {
        dnnl_stream_destroy(g.stream);
        dnnl_engine_destroy(g.engine);
    }
    free(g.a);
    free(g.b);
    memset(&g, 0, sizeof g);
}

int flas_bf16_supported(char *why, size_t whylen)
{
    /* The ISA values are cumulative bit masks: AMX's includes AVX512-BF16's bits. */
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    if ((isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) == (unsigned)dnnl_cpu_isa_avx512_core_bf16)
        return 1;
    if (why)
        snprintf(why, whylen, "this processor has neither AVX512-BF16 nor AMX (oneDNN's ISA 0x%x): bf16 "
                 "products would be emulated, slower than fp32", isa);
    return 0;
}

/* rows x cols of src (row stride ld) rounded into the packed dst. */
static void pack_bf16(uint16_t *dst, const float *src, int rows, int cols, int ld)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * ld;
        uint16_t *d = dst + (size_t)r * cols;
#pragma omp simd
        for (int c = 0; c < cols; c++)
            d[c] = flas_bf16_of(s[c]);
    }
}

/* The transpose of src (rows x cols, row stride ld) rounded into the packed dst (cols x rows), in tiles
 * so that reads and writes both stay in cache. */
#define TILE 32
static void pack_bf16_transposed(uint16_t *dst, const float *src, int rows, int cols, int ld)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int c0 = 0; c0 < cols; c0 += TILE)
        for (int r0 = 0; r0 < rows; r0 += TILE) {
            int c1 = c0 + TILE < cols ? c0 + TILE : cols, r1 = r0 + TILE < rows ? r0 + TILE : rows;
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++)
                    dst[(size_t)c * rows + r] = flas_bf16_of(src[(size_t)r * ld + c]);
        }
}

static int grow(uint16_t **buf, size_t *cap, size_t n, char *err, size_t errlen)
{
    if (n <= *cap)
        return 0;
    free(*buf);
    *buf = aligned_alloc(64, (n * sizeof(uint16_t) + 63) / 64 * 64);
    *cap = *buf ? n : 0;
    return *buf ? 0 : flas_fail(err, errlen, "out of memory for %zu bf16 operands", n);
}

static int make_primitive(const gemm_key *k, dnnl_primitive_t *out, char *err, size_t errlen)
{
    /* op(A) [M,K] and op(B) [K,N] packed plain row-major (flas_gemm_bf16 transposes while rounding);
     * C in place with its own row stride. */
    dnnl_dims_t ad = {k->M, k->K}, bd = {k->K, k->N}, cd = {k->M, k->N};
    dnnl_dims_t as = {k->K, 1}, bs = {k->N, 1};
    dnnl_dims_t cs = {k->ldc, 1};
    dnnl_memory_desc_t amd, bmd, cmd;
    dnnl_status_t st = dnnl_memory_desc_init_by_strides(&amd, 2, ad, dnnl_bf16, as);
    if (st == dnnl_success)
        st = dnnl_memory_desc_init_by_strides(&bmd, 2, bd, dnnl_bf16, bs);
    if (st == dnnl_success)
        st = dnnl_memory_desc_init_by_strides(&cmd, 2, cd, dnnl_f32, cs);
    if (st != dnnl_success)
        return dnnl_fail(err, errlen, "memory descriptor", st);
    dnnl_matmul_desc_t md;
    if ((st = dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd)) != dnnl_success)
        return dnnl_fail(err, errlen, "matmul descriptor", st);
    dnnl_primitive_attr_t attr;
    if ((st = dnnl_primitive_attr_create(&attr)) != dnnl_success)
        return dnnl_fail(err, errlen, "attributes", st);
    dnnl_post_ops_t po = NULL;
    if (k->alpha != 1.0f)
        st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha);
    if (st == dnnl_success && k->beta != 0.0f) {
        st = dnnl_post_ops_create(&po);
        if (st == dnnl_success)
            st = dnnl_post_ops_append_sum(po, k->beta);
        if (st == dnnl_success)
            st = dnnl_primitive_attr_set_post_ops(attr, po);
    }
    dnnl_primitive_desc_t pd = NULL;
    if (st == dnnl_success)
        st = dnnl_primitive_desc_create(&pd, &md, attr, g.engine, NULL);
    if (st == dnnl_success)
        st = dnnl_primitive_create(out, pd);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (po)
        dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return st == dnnl_success ? 0 : dnnl_fail(err, errlen, "matmul primitive", st);
}

static int find_primitive(const gemm_key *k, dnnl_primitive_t *out, char *err, size_t errlen)
{
    for (int i = 0; i < g.n_cached; i++)
        if (!memcmp(&g.cache[i].key, k, sizeof *k)) {
            *out = g.cache[i].prim;
            return 0;
        }
    dnnl_primitive_t p;
    if (make_primitive(k, &p, err, errlen))
        return -1;
    int slot = g.n_cached < GEMM_CACHE ? g.n_cached++ : g.next_evict++ % GEMM_CACHE;
    if (g.cache[slot].prim)
        dnnl_primitive_destroy(g.cache[slot].prim);
    g.cache[slot] = (gemm_entry){*k, p};
    *out = p;
    return 0;
}

static int gemm_locked(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc, char *err, size_t errlen)
{
    if (M <= 0 || N <= 0)
        return 0;
    if (K <= 0) { /* an empty sum: C = beta C, as BLAS */
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                C[(size_t)m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[(size_t)m * ldc + n];
        return 0;
    }
    if (ensure_ready(err, errlen))
        return -1;
    gemm_key key = {transA, transB, M, N, K, ldc, alpha, beta}; /* no padding: memcmp compares it whole */
    dnnl_primitive_t prim;
    if (grow(&g.a, &g.a_cap, (size_t)M * K, err, errlen) || grow(&g.b, &g.b_cap, (size_t)K * N, err, errlen) ||
        find_primitive(&key, &prim, err, errlen))
        return -1;
    /* Transposed operands are transposed while they are rounded: oneDNN 2.6's fast bf16 kernels want
     * plain row-major src [M,K] and weights [K,N]; given the transposed strides instead, it ran a
     * model's small products (K = 288) 2x slower than fp32 sgemm (measured). */
    if (transA)
        pack_bf16_transposed(g.a, A, K, M, lda);
    else
        pack_bf16(g.a, A, M, K, lda);
    if (transB)
        pack_bf16_transposed(g.b, B, N, K, ldb);
    else
        pack_bf16(g.b, B, K, N, ldb);

    const_dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_primitive_get_primitive_desc(prim, &pd);
    const dnnl_memory_desc_t *amd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *cmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL;
    if (st == dnnl_success)
        st = dnnl_memory_create(&am, amd, g.engine, g.a);
    if (st == dnnl_success)
        st = dnnl_memory_create(&bm, bmd, g.engine, g.b);
    if (st == dnnl_success)
        st = dnnl_memory_create(&cm, cmd, g.engine, C);
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
        st = dnnl_primitive_execute(prim, g.stream, 3, args);
        if (st == dnnl_success)
            st = dnnl_stream_wait(g.stream);
    }
    if (am)
        dnnl_memory_destroy(am);
    if (bm)
        dnnl_memory_destroy(bm);
    if (cm)
        dnnl_memory_destroy(cm);
    return st == dnnl_success ? 0 : dnnl_fail(err, errlen, "matmul", st);
}

/* One product at a time: the cache and the packed buffers are shared (models in threads, as the
 * tensor-parallel tests run them, would otherwise race). */
static pthread_mutex_t gemm_lock = PTHREAD_MUTEX_INITIALIZER;

int flas_gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc, char *err, size_t errlen)
{
    pthread_mutex_lock(&gemm_lock);
    int rc = gemm_locked(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, err, errlen);
    pthread_mutex_unlock(&gemm_lock);
    return rc;
}

#else /* built without oneDNN */

int flas_bf16_supported(char *why, size_t whylen)
{
    if (why)
        snprintf(why, whylen, "this build has no oneDNN (Debian: libdnnl-dev; reconfigure FLaS)");
    return 0;
}

int flas_gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc, char *err, size_t errlen)
{
    (void)transA, (void)transB, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb,
        (void)beta, (void)C, (void)ldc;
    return flas_fail(err, errlen, "bf16 products need oneDNN, which this build lacks");
}

#endif
