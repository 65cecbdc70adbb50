/* The staging area of one federation at one site: the contract between the coordinator (which
 * uploads global models and fetches local checkpoints over SFTP), the SPANK plugin (which verifies,
 * prepares and publishes as root) and flas-train (which reads FLAS_* variables).
 *
 *   <StagingRoot>/<federation>/          root:root 0755 (created by the plugin)
 *     global/                            owned by the coordinator's login (created by the admin)
 *       round-000003.h5                  global model of round 3
 *       round-000003.h5.sha256           "HEX  round-000003.h5\n" (sha256sum format), written last
 *     jobs/<jobid>/                      job user 0700: FLAS_OUTPUT_DIR; flas-train writes local.h5
 *       local-full.h5                    with flas-train --update bf16|int8: the full local checkpoint
 *                                        (what a resume reads), while local.h5 is the compressed update
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
/* flas_stage_full_sibling of FLAS_STAGE_LOCAL_CHECKPOINT: never published (the epilog takes local.h5
 * only), kept in the job's directory for a resumed or inspected run. */
#define FLAS_STAGE_LOCAL_FULL_CHECKPOINT "local-full.h5"
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
/* Where flas-train --update bf16|int8 keeps the full checkpoint when output is the update: the same
 * directory, "-full" before the extension ("jobs/7/local.h5" -> "jobs/7/local-full.h5"; a name
 * without extension gets "-full" appended). -1 if buf is too small. */
int flas_stage_full_sibling(char *buf, size_t len, const char *output);
/* "residual-round-000003.h5": a site's error-feedback state after its update of round 3, kept in the
 * site's private residual directory (flas-train --residual-dir), never staged or published. */
int flas_stage_residual_name(char *buf, size_t len, long round);
/* The round of a residual file name, or -1 for any other name (exactly the pattern above). */
long flas_stage_parse_residual_name(const char *name);
/* "inner-round-000003.h5": a site's full local checkpoint of round 3, AdamW moments and data position
 * included, kept in its private state directory with --inner-state keep (never staged or published);
 * round 4 continues from it. */
int flas_stage_inner_name(char *buf, size_t len, long round);
/* The round of an inner state file name, or -1 for any other name (exactly the pattern above). */
long flas_stage_parse_inner_name(const char *name);
/* Parses a round given by a user: decimal digits only, 0..FLAS_ROUND_MAX; -1 otherwise. */
long flas_parse_round(const char *s);

#ifdef __cplusplus
}
#endif
#endif
