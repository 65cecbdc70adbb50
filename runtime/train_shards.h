/* Token counts of the training shards for flas-train's /train_state. A header of its own because
 * flas/shards.h (struct flas_shard) and flas/model.h (enum flas_shard) cannot meet in one file. */
#ifndef FLAS_TRAIN_SHARDS_H
#define FLAS_TRAIN_SHARDS_H

#include <stddef.h>
#include <stdint.h>

/* The cumulative token counts of the shards of path (a *.flastok file or a directory of them), in the
 * loader's order, in a malloc'ed array *ends of *n entries. Reads headers only. 0, or -1 with err. */
int train_shard_ends(const char *path, uint64_t **ends, int *n, char *err, size_t errlen);

#endif
