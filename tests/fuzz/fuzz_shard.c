/* Token shards (*.flastok, include/flas/shards.h), read by flas-train's loader from a site's data
 * directory: the header decoder on the input's first 128 bytes (flas_shard_header_decode), then the whole
 * input as a file through flas_shard_open (map and check the header against the file's length) and
 * flas_shard_verify (payload hash and every token id), and a read of the tokens as the loader reads them. */
#include <stdlib.h>
#include <string.h>

#include "flas/shards.h"
#include "support.h"

/* OpenSSL keeps its one-time initialisation for the life of the process (tests/lsan.supp says the same). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libcrypto\n"; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    flas_shard_header h;
    if (size >= FLAS_SHARD_HEADER_BYTES && flas_shard_header_decode(data, &h, err, sizeof err) == 0) {
        if (h.version != FLAS_SHARD_VERSION || h.vocab_size == 0 || h.token_bytes != flas_shard_token_bytes(h.vocab_size))
            fz_fail("header accepted with version %u, vocab %u, %u-byte tokens", h.version, h.vocab_size,
                    h.token_bytes);
        /* encode(decode(x)) gives x back wherever the format defines the bytes */
        unsigned char again[FLAS_SHARD_HEADER_BYTES];
        flas_shard_header_encode(&h, again);
        if (memcmp(again, data, 52) || memcmp(again + 56, data + 56, 64))
            fz_fail("header does not encode back to its bytes");
    }
    char path[4200];
    fz_write_file("input.flastok", data, size, path, sizeof path);
    flas_shard s;
    err[0] = '\0';
    if (flas_shard_open(&s, path, err, sizeof err) == 0) {
        if ((uint64_t)size != FLAS_SHARD_HEADER_BYTES + s.h.n_tokens * s.h.token_bytes)
            fz_fail("shard of %zu bytes opened with %llu tokens", size, (unsigned long long)s.h.n_tokens);
        int ok = flas_shard_verify(&s, err, sizeof err) == 0;
        uint64_t sum = 0;
        for (uint64_t i = 0; i < s.h.n_tokens; i++) {
            uint32_t t = flas_shard_token(&s, i);
            if (ok && t >= s.h.vocab_size)
                fz_fail("verified shard holds token %u of a vocabulary of %u", t, s.h.vocab_size);
            sum += t;
        }
        (void)sum;
        flas_shard_close(&s);
    } else if (!err[0]) {
        fz_fail("shard refused without a reason");
    }
    return 0;
}
