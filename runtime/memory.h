/* Buffers for parameters, gradients, optimizer state and activations. */
#ifndef FLAS_MEMORY_H
#define FLAS_MEMORY_H

#include <stddef.h>

/* n floats (n may be 0), 64-byte aligned; free() them. Buffers of 2 MiB and more are 2 MiB aligned
 * and marked for transparent huge pages (used where the kernel's THP mode is "madvise"): every
 * matrix product streams through the weights and the head's [tokens, vocab] matrix, and with 4 KiB
 * pages the TLB misses show. NULL when memory is short. */
float *flas_alloc_floats(size_t n);

#endif
