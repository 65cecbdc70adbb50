/* The part of the model-import harnesses (fuzz_gguf.c, fuzz_llama2c.c, fuzz_safetensors.c) that runs
 * after a source opened: every tensor of the config it reports read, as flas_convert does. Included by
 * one harness per program. */
#ifndef FLAS_FUZZ_INTEROP_READ_H
#define FLAS_FUZZ_INTEROP_READ_H

#include <math.h>
#include <stdlib.h>

#include "flas/model.h"
#include "interop_internal.h"
#include "support.h"

/* Reads every tensor of an opened source (whose header the reader validated) and closes it. size: the
 * input's bytes, which bound what an honest reader may make of it. */
static void fz_read_all(ix_source *src, size_t size)
{
    flas_param_table tab;
    char err[1024];
    if (flas_param_table_init(&tab, &src->cfg, 0, 1, err, sizeof err))
        fz_fail("source opened with a config the table refuses: %s", err);
    size_t most = 0;
    for (int i = 0; i < tab.n_tensors; i++)
        most = tab.tensors[i].numel > most ? tab.tensors[i].numel : most;
    /* the data of every tensor is in the input, at least one byte for 32 elements (q8_0 being the densest) */
    if (most > 32 * (size_t)size + 32)
        fz_fail("a %zu-byte input opened with a tensor of %zu elements", size, most);
    float *buf = malloc((most ? most : 1) * sizeof *buf);
    if (!buf)
        fz_fail("out of memory");
    for (int i = 0; i < tab.n_tensors; i++)
        if (src->read(src, &tab.tensors[i], buf, err, sizeof err))
            break;
    free(buf);
    flas_param_table_free(&tab);
    src->close(src);
}

#endif
