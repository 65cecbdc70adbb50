/* The staging area of one federation at one site: the contract between the coordinator (which
 * uploads global models and fetches local checkpoints over SFTP), the SPANK plugin (which verifies,
 * prepares and publishes as root) and flas-train (which reads FLAS_* variables).
 *
 *   <StagingRoot>/<federation>/          root:root 0755 (created by the plugin)
 *     global/                            owned by the coordinator's login (created by the admin)
 *       round-000003.h5                  global model of round 3
 *       round-000003.h5.sha256           "HEX  round-000003.h5\n" (sha256sum format), written last
 *     jobs/<jobid>/                      job user 0700: FLAS_OUTPUT_DIR; flas-train writes local.h5
 *     state/<jobid>                      root 0644: what the prolog decided (round, sha256, errors)
 *     state/verified-round-000003        root 0644: cache of a successful sha256 verification
 *     outbox/round-000003/               root 0755 (created by the epilog)
 *       <site>-job<jobid>.h5             the job's checkpoint, published by hard link (job user)
 *       <site>-job<jobid>.manifest.json  the site's record of it (root 0644), written last
 */
#ifndef FLAS_STAGING_H
#define FLAS_STAGING_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_STAGE_GLOBAL "global"
#define FLAS_STAGE_JOBS "jobs"
#define FLAS_STAGE_STATE "state"
#define FLAS_STAGE_OUTBOX "outbox"
#define FLAS_STAGE_LOCAL_CHECKPOINT "local.h5"
#define FLAS_STAGE_SHA256_SUFFIX ".sha256"
#define FLAS_STAGE_MANIFEST_SUFFIX ".manifest.json"
#define FLAS_ROUND_MAX 999999L

/* "round-000003.h5" into buf; -1 if round is outside 0..FLAS_ROUND_MAX or buf is too small. */
int flas_stage_global_name(char *buf, size_t len, long round);
/* "round-000003" */
int flas_stage_round_dir(char *buf, size_t len, long round);
/* "<site>-job<jobid><suffix>", suffix ".h5" or FLAS_STAGE_MANIFEST_SUFFIX */
int flas_stage_published_name(char *buf, size_t len, const char *site, unsigned long jobid, const char *suffix);
/* The round of a global-model file name ("round-000003.h5" -> 3), or -1 for any other name. */
long flas_stage_parse_global_name(const char *name);
/* Parses a round given by a user: decimal digits only, 0..FLAS_ROUND_MAX; -1 otherwise. */
long flas_parse_round(const char *s);

#ifdef __cplusplus
}
#endif
#endif
