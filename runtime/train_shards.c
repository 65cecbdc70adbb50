/* See train_shards.h. */
#include "train_shards.h"

#include <stdlib.h>

#include "flas/shards.h"

int train_shard_ends(const char *path, uint64_t **ends, int *n, char *err, size_t errlen)
{
    const char *paths[1] = {path};
    char **list = NULL;
    *ends = NULL;
    *n = 0;
    if (flas_shard_list(paths, 1, &list, n, err, errlen))
        return -1;
    *ends = calloc((size_t)*n + 1, sizeof **ends);
    int rc = *ends ? 0 : -1;
    uint64_t total = 0;
    for (int i = 0; rc == 0 && i < *n; i++) {
        flas_shard s;
        if (flas_shard_open(&s, list[i], err, errlen)) {
            rc = -1;
            break;
        }
        total += s.h.n_tokens;
        (*ends)[i] = total;
        flas_shard_close(&s);
    }
    flas_shard_list_free(list, *n);
    return rc;
}
