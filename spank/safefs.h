/* File operations for the plugin's root-side code. Every path is walked one component at a time
 * with openat(O_NOFOLLOW) from a trusted directory descriptor, so no symlink and no ".." can lead
 * root out of the staging area, and ownership is checked on the descriptor actually opened. */
#ifndef FLAS_SAFEFS_H
#define FLAS_SAFEFS_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#define SAFEFS_ANY_OWNER ((uid_t)-1)

/* Opens an absolute path to a directory that only root controls: every component is a real directory
 * (no symlink) owned by root and not writable by group or others unless sticky (/tmp, /var/tmp).
 * -1 with err set otherwise. */
int safefs_open_trusted_root(const char *path, char *err, size_t errlen);

/* Opens directory name in parent (no symlink). With create, makes it if missing, under a temporary name
 * first so that it appears with its mode, owner and group already set (another node's prolog may be
 * opening it at the same moment). want_owner: the uid it must belong to, or SAFEFS_ANY_OWNER. -1 with
 * err set on failure; errno is ENOENT when it does not exist and create was 0. */
int safefs_open_dir(int parent, const char *name, int create, mode_t mode, uid_t owner, gid_t group,
                    uid_t want_owner, char *err, size_t errlen);

/* Opens a regular file name in dir for reading: no symlink, no FIFO or device (O_NONBLOCK keeps a FIFO
 * from blocking before fstat refuses it). st receives its status. -1 with err set otherwise. */
int safefs_open_regular(int dir, const char *name, struct stat *st, char *err, size_t errlen);

/* Reads a small regular file (at most max bytes, NUL-terminated into buf of max+1). -1 on error. */
int safefs_read_small(int dir, const char *name, char *buf, size_t max, char *err, size_t errlen);

/* Writes data to name in dir atomically: temp file (O_EXCL|O_NOFOLLOW; named after host and pid, as
 * nodes share the staging area), fchown/fchmod, fsync, rename, fsync(dir). With noreplace, an existing
 * name is left alone and the call returns 1 (RENAME_NOREPLACE, or link(2) where the file system lacks
 * it, as NFS does). */
int safefs_write_atomic(int dir, const char *name, const void *data, size_t len, mode_t mode, uid_t owner,
                        gid_t group, int noreplace, char *err, size_t errlen);

/* Gives the open file fd a new name in dir, atomically (hard link to a temp name, rename, fsync(dir)).
 * The inode stays the same: no copy, same owner. With noreplace, returns 1 if name exists (also on
 * file systems without RENAME_NOREPLACE). */
int safefs_link_fd(int fd, int dir, const char *name, int noreplace, char *err, size_t errlen);

#endif
