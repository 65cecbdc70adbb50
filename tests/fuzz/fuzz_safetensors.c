/* Hugging Face model directories, imported by flas-convert and flas-train --init-from: config.json and
 * safetensors files (a u64 header length, a JSON header naming every tensor's dtype, shape and byte
 * range, the data), in the single-file or the sharded form with model.safetensors.index.json. The
 * harness builds the directory from the input and runs the format detection and the reader
 * (ix_hf_open, runtime/interop_hf.c: config, headers, offsets, index) and, when it accepts the model, a
 * read of every tensor.
 *
 * Input: parts separated by FZ_SEP: config.json, model.safetensors; with a third part, that part is
 * model.safetensors.index.json and the second and fourth parts are model-00001-of-00002.safetensors and
 * model-00002-of-00002.safetensors. */
#include "flas/interop.h"
#include "interop_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *part[4];
    size_t len[4];
    size_t n = fz_split(data, size, FZ_SEP, part, len, 4);
    char dir[4200], path[4200], err[1024];
    fz_mkdir("hf", dir, sizeof dir);
    fz_write_file("hf/config.json", part[0], len[0], path, sizeof path);
    if (n >= 3) {
        fz_write_file("hf/model-00001-of-00002.safetensors", part[1], len[1], path, sizeof path);
        fz_write_file("hf/model.safetensors.index.json", part[2], len[2], path, sizeof path);
        if (n >= 4)
            fz_write_file("hf/model-00002-of-00002.safetensors", part[3], len[3], path, sizeof path);
    } else if (n == 2) {
        fz_write_file("hf/model.safetensors", part[1], len[1], path, sizeof path);
    }
    if (flas_format_detect_input(dir, err, sizeof err) != FLAS_FMT_HF)
        fz_fail("a directory not detected as a Hugging Face model");
    err[0] = '\0';
    ix_source *src = ix_hf_open(dir, err, sizeof err);
    if (src)
        fz_read_all(src, size);
    else if (!err[0])
        fz_fail("refused without a reason");
    return 0;
}
