/* Aligned, huge-page friendly float buffers. */
#include "memory.h"

#include <stdlib.h>
#include <sys/mman.h>

float *flas_alloc_floats(size_t n)
{
    size_t bytes = (n ? n : 1) * sizeof(float), huge = (size_t)2 << 20;
    void *p = NULL;
    if (bytes >= huge)
        bytes = (bytes + huge - 1) / huge * huge; /* whole huge pages */
    if (posix_memalign(&p, bytes >= huge ? huge : 64, bytes))
        return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= huge)
        madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure leaves ordinary pages */
#endif
    return p;
}
