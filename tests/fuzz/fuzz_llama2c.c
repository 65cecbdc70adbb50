/* llama2.c .bin model files (version 0 and 1), imported by flas-convert and flas-train --init-from: the
 * input as a file, the format detection (flas_format_detect_input: the "ak42" magic, or the .bin name),
 * the reader's header validation against the file's length (ix_llama2c_open,
 * runtime/interop_llama2c.c) and, when it accepts the file, a read of every tensor. */
#include "flas/interop.h"
#include "interop_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[4200], err[1024];
    fz_write_file("model.bin", data, size, path, sizeof path);
    flas_format f = flas_format_detect_input(path, err, sizeof err);
    if (f == FLAS_FMT_UNKNOWN || f == FLAS_FMT_HF)
        fz_fail("a .bin file detected as %s", flas_format_name(f));
    err[0] = '\0';
    ix_source *src = ix_llama2c_open(path, err, sizeof err);
    if (src)
        fz_read_all(src, size);
    else if (!err[0])
        fz_fail("refused without a reason");
    return 0;
}
