/* Names that FLaS puts into paths, job names and command lines: federations, sites, users, groups,
 * accounts, partitions. One rule everywhere, so that a name valid in flas.conf is valid in
 * coordinator.conf, on flas-aggregate's command line and in a staging path. */
#ifndef FLAS_NAMES_H
#define FLAS_NAMES_H

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_NAME_MAX 64 /* NUL included */

/* A valid name: 1..63 characters of [A-Za-z0-9_-], not starting with '-' (never an option, never a
 * path component like "." or "..", never a shell metacharacter). */
int flas_name_valid(const char *s);

#ifdef __cplusplus
}
#endif
#endif
