/* Oracle helper: encodes and decodes documents with the FLaS tokenizer for a Python comparison.
 * stdin:  records [uint32 length][bytes]
 * stdout: per record [uint32 n][int32 ids[n]][uint32 length][decoded bytes] (little-endian)
 * Usage: tokenize_dump MODEL [bos|eos|both|none] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tokenize_dump MODEL [bos|eos|both|none]\n");
        return 2;
    }
    unsigned flags = 0;
    if (argc > 2)
        flags = !strcmp(argv[2], "bos") ? FLAS_TOK_BOS : !strcmp(argv[2], "eos") ? FLAS_TOK_EOS
              : !strcmp(argv[2], "both") ? FLAS_TOK_BOS | FLAS_TOK_EOS : 0u;
    char err[512];
    flas_tokenizer *t = flas_tokenizer_open(argv[1], err, sizeof err);
    if (!t) {
        fprintf(stderr, "tokenize_dump: %s\n", err);
        return 1;
    }
    flas_ids ids = {0};
    uint32_t len;
    char *buf = NULL;
    while (fread(&len, 4, 1, stdin) == 1) {
        buf = realloc(buf, (size_t)len + 1);
        if (len && fread(buf, 1, len, stdin) != len) {
            fprintf(stderr, "tokenize_dump: short record\n");
            return 1;
        }
        ids.n = 0;
        if (flas_tokenizer_encode(t, buf, len, flags, &ids, err, sizeof err) != 0) {
            fprintf(stderr, "tokenize_dump: %s\n", err);
            return 1;
        }
        size_t dlen = 0;
        char *text = flas_tokenizer_decode(t, ids.ids, ids.n, &dlen, err, sizeof err);
        if (!text) {
            fprintf(stderr, "tokenize_dump: %s\n", err);
            return 1;
        }
        uint32_t n = (uint32_t)ids.n, d = (uint32_t)dlen;
        fwrite(&n, 4, 1, stdout);
        fwrite(ids.ids, 4, ids.n, stdout);
        fwrite(&d, 4, 1, stdout);
        fwrite(text, 1, dlen, stdout);
        free(text);
    }
    free(buf);
    flas_ids_free(&ids);
    flas_tokenizer_close(t);
    return fflush(stdout) == 0 ? 0 : 1;
}
