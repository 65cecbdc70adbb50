/* The staging manifest, <site>-job<id>.manifest.json, which a site's epilog publishes and the
 * coordinator fetches and believes only after checking it (coord_parse_manifest, aggregator/coord_site.c,
 * the checks coord_read_manifest runs on the text it fetched; jansson parses the JSON). The expectations
 * it is checked against (site, federation, round, job, base model, size bound) come from the input's first
 * bytes, so that the fuzzer can also reach the accepting paths. */
#include <stdlib.h>
#include <string.h>

#include "coord_internal.h"
#include "flas/sha256.h"
#include "support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the coordinator reads at most 64 KiB - 1 of manifest, NUL-terminated */
    if (size > 65535)
        return -1;
    fz_bytes b = {data, size};
    const unsigned sel = fz_u8(&b);
    const long round = sel & 1 ? 3 : 999999, job = sel & 2 ? 42 : 2147483647L;
    const char *site = sel & 4 ? "site-a" : "b";
    const char *fed = sel & 8 ? "fed" : "federation_2";
    const char *base = sel & 16 ? "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                : "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const int64_t max_bytes = sel & 32 ? (int64_t)1 << 42 : 1000;
    char *text = fz_strndup(b.p, b.n);
    char ck[256], sha[FLAS_SHA256_HEX_LEN + 1], note[1024] = "";
    int64_t bytes = -1;
    memset(ck, 0, sizeof ck);
    int rc = coord_parse_manifest(text, "site-a-job42.manifest.json", site, fed, round, job, base, max_bytes, ck,
                                  sizeof ck, &bytes, sha, note, sizeof note);
    if (rc == 0) {
        /* what the coordinator will fetch: a plain name in the outbox, of a bounded size, with a digest */
        if (!ck[0] || strchr(ck, '/') || ck[0] == '.' || bytes <= 0 || bytes > max_bytes || !flas_sha256_is_hex(sha))
            fz_fail("manifest accepted with checkpoint '%s', %lld bytes, sha256 '%s'", ck, (long long)bytes, sha);
    } else if ((rc != 1 && rc != -2) || !note[0]) {
        fz_fail("manifest gave %d without a reason", rc);
    }
    free(text);
    return 0;
}
