/* Atomic file creation: write under a hidden temporary name in the target's directory, fsync,
 * rename onto the target, fsync the directory. Readers never see a partial file, also when the
 * writer is killed (a killed writer leaves only a hidden ".NAME.tmp.XXXXXX"). */
#ifndef FLAS_ATOMIC_FILE_H
#define FLAS_ATOMIC_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* Creates ".BASENAME.tmp.XXXXXX" next to final_path; *tmp_path gets its malloc'ed name.
 * The open descriptor, or -1 with err set. */
int flas_atomic_create(const char *final_path, char **tmp_path, char *err, size_t errlen);
/* wanted without the process umask's bits (mkstemp/mkdtemp create 0600/0700; the final file
 * gets the mode an open(O_CREAT, wanted) would have given). */
mode_t flas_atomic_mode(mode_t wanted);
/* write() until done (EINTR retried). 0, or -1 with errno set. */
int flas_atomic_write_all(int fd, const void *buf, size_t n);
/* fsync(fd), close(fd), rename(tmp_path, final_path), fsync of the directory. fd is closed
 * either way; on failure tmp_path is unlinked. 0, or -1 with err set. */
int flas_atomic_commit(int fd, const char *tmp_path, const char *final_path, char *err, size_t errlen);
/* The same, but never replaces: fails (and unlinks tmp_path) when final_path exists at the rename, even
 * one that appeared after the caller last looked (renameat2 RENAME_NOREPLACE). */
int flas_atomic_commit_new(int fd, const char *tmp_path, const char *final_path, char *err, size_t errlen);
/* The whole rule for a file whose content is in memory: create, write, commit. 0, or -1 with err
 * set and nothing changed at final_path. */
int flas_atomic_write_file(const char *final_path, const void *data, size_t len, char *err, size_t errlen);
/* Copies src to final_path by the same rule (a killed copy leaves final_path as it was). */
int flas_atomic_copy(const char *src, const char *final_path, char *err, size_t errlen);
/* read() until n bytes, end of file or an error (EINTR retried); returns the bytes read. */
size_t flas_read_all(int fd, void *buf, size_t n);
/* fsync of the directory that holds path (path itself when dir is 1); a file system that cannot fsync
 * a directory counts as done. 0, or -1 with errno set. */
int flas_fsync_dir_of(const char *path, int dir);
/* fsync of the file at path (not through a symlink), for writers that hold no descriptor of their own
 * (HDF5 does). 0, or -1 with errno set. */
int flas_fsync_path(const char *path);
/* The directory part of path: "." for a bare name, "/" for a name in the root. */
void flas_dir_of(const char *path, char *dir, size_t len);
/* mkdir -p: every missing component created with mode (less the umask); existing ones are fine.
 * 0, or -1 with errno set (ENAMETOOLONG for a path longer than 4095 bytes). */
int flas_mkdir_p(const char *dir, mode_t mode);

#endif
