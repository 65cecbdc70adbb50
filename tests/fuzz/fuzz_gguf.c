/* GGUF model files (llama.cpp), imported by flas-convert and flas-train --init-from: the input as a file,
 * the format detection (flas_format_detect_input), the reader's header, key/value and tensor-table
 * validation (ix_gguf_open, runtime/interop_gguf.c) and, when it accepts the file, a read of every
 * tensor. */
#include "flas/interop.h"
#include "interop_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[4200], err[1024];
    fz_write_file("model.gguf", data, size, path, sizeof path);
    flas_format f = flas_format_detect_input(path, err, sizeof err);
    if (f != FLAS_FMT_UNKNOWN && f != FLAS_FMT_GGUF && f != FLAS_FMT_FLAS && f != FLAS_FMT_LLAMA2C)
        fz_fail("a file detected as format %d", (int)f);
    err[0] = '\0';
    ix_source *src = ix_gguf_open(path, err, sizeof err);
    if (src)
        fz_read_all(src, size);
    else if (!err[0])
        fz_fail("refused without a reason");
    return 0;
}
