/* Minimal .npy writer (NumPy format 1.0) so tests can hand arrays to Python oracles. */
#ifndef FLAS_TEST_NPY_H
#define FLAS_TEST_NPY_H

#include <stdio.h>
#include <string.h>

/* descr: "<f4" or "<i4"; shape of ndim dims; data little-endian C order. 0 or -1. */
static int npy_write(const char *path, const char *descr, const void *data, size_t elem_size, int ndim,
                     const size_t *shape)
{
    char dict[256], shape_s[128] = "";
    size_t count = 1, off = 0;
    for (int i = 0; i < ndim; i++) {
        off += (size_t)snprintf(shape_s + off, sizeof shape_s - off, "%zu%s", shape[i],
                                ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        count *= shape[i];
    }
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr,
                       shape_s);
    size_t header = 10 + (size_t)len + 1, pad = (64 - header % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    unsigned short hlen = (unsigned short)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fwrite(&hlen, 2, 1, f);
    fwrite(dict, 1, (size_t)len, f);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    size_t wrote = fwrite(data, elem_size, count, f);
    return (fclose(f) == 0 && wrote == count) ? 0 : -1;
}

#endif
