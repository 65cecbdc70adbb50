/* The FLAS_* environment of a job: the contract between the SPANK plugin (which sets it for every step
 * of a --federation job) and flas-train (which reads it when no flag is given). docs/user.md lists them
 * for users; each name is spelled here only. */
#ifndef FLAS_ENV_H
#define FLAS_ENV_H

#define FLAS_ENV_FEDERATION "FLAS_FEDERATION"               /* the job's federation */
#define FLAS_ENV_SITE "FLAS_SITE"                           /* this site's name in it */
#define FLAS_ENV_STAGE_DIR "FLAS_STAGE_DIR"                 /* <StagingRoot>/<federation> */
#define FLAS_ENV_JOB_ID "FLAS_JOB_ID"                       /* the Slurm job id */
#define FLAS_ENV_ROUND "FLAS_ROUND"                         /* the round the job trains */
#define FLAS_ENV_GLOBAL_CHECKPOINT "FLAS_GLOBAL_CHECKPOINT" /* the staged global model of that round */
#define FLAS_ENV_GLOBAL_SHA256 "FLAS_GLOBAL_SHA256"         /* its verified sha256 */
#define FLAS_ENV_OUTPUT_DIR "FLAS_OUTPUT_DIR"               /* the job's own directory */
#define FLAS_ENV_OUTPUT_CHECKPOINT "FLAS_OUTPUT_CHECKPOINT" /* where the local checkpoint goes */
#define FLAS_ENV_ERROR "FLAS_ERROR"                         /* why the prolog refused (the job must stop) */

/* Set by the coordinator, not the plugin (sbatch --export=ALL,FLAS_STEPS=N, speed-aware rounds): the
 * steps this round's job trains when its command line gives no --steps. Deliberately not in
 * FLAS_ENV_ALL: the plugin clears those in every step, and this one must reach flas-train. */
#define FLAS_ENV_STEPS "FLAS_STEPS"
/* Also the coordinator's (coordinator.conf InnerState=, LrSchedule=, Prox=; docs/tuning.md), exported the
 * same way and for the same reason: how the site's optimizer runs across the federated run. */
#define FLAS_ENV_INNER_STATE "FLAS_INNER_STATE" /* reset or keep (--inner-state) */
#define FLAS_ENV_LR_SCHEDULE "FLAS_LR_SCHEDULE" /* round or run (--lr-schedule) */
#define FLAS_ENV_ROUNDS "FLAS_ROUNDS"           /* rounds of the whole run (--rounds) */
#define FLAS_ENV_PROX "FLAS_PROX"               /* FedProx mu (--prox) */

/* Every name the plugin sets (FLAS_STEPS above is not one), for code that sets or clears them all. */
#define FLAS_ENV_ALL                                                                                      \
    {FLAS_ENV_FEDERATION, FLAS_ENV_SITE, FLAS_ENV_STAGE_DIR, FLAS_ENV_JOB_ID, FLAS_ENV_ROUND,              \
     FLAS_ENV_GLOBAL_CHECKPOINT, FLAS_ENV_GLOBAL_SHA256, FLAS_ENV_OUTPUT_DIR, FLAS_ENV_OUTPUT_CHECKPOINT, \
     FLAS_ENV_ERROR}

/* Settings a site or user exports for flas-train (a batch script, a module file), never set by the
 * plugin. Deliberately NOT in FLAS_ENV_ALL: the plugin unsets every name of that list in each step
 * (drop_inherited in spank/flas_spank.c) and leaves any other FLAS_* variable alone, so these reach the
 * job's tasks the way the submitting shell exported them. */
#define FLAS_ENV_UPDATE "FLAS_UPDATE"             /* what flas-train publishes: full, bf16 or int8 (--update) */
#define FLAS_ENV_UPDATE_BLOCK "FLAS_UPDATE_BLOCK" /* the int8 block (--update-block) */
#define FLAS_ENV_STATE_DIR "FLAS_STATE_DIR"       /* the site's private state between rounds (--state-dir) */
#define FLAS_ENV_RESIDUAL_DIR "FLAS_RESIDUAL_DIR" /* its older name, read when FLAS_STATE_DIR is unset */

#endif
