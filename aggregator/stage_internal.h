/* What ssh.c and sftp_stage.c share; not part of the public staging API. */
#ifndef FLAS_STAGE_INTERNAL_H
#define FLAS_STAGE_INTERNAL_H

#include <libssh/libssh.h>
#include <libssh/sftp.h>
#include <pthread.h>
#include <stddef.h>

struct flas_ssh {
    ssh_session session;
    sftp_session sftp;
    char where[400];          /* user@host:port, for messages */
    double exec_limit_s;      /* wall-clock limit of each flas_ssh_exec, <= 0: none */
    long io_timeout_s;        /* the session's libssh I/O timeout (the target's timeout_s) */
    /* jump host tunnel (see ssh.c) */
    ssh_session jump;
    ssh_channel jump_channel;
    int jump_fd;
    pthread_t jump_thread;
    int jump_thread_started;
    volatile int jump_stop;
};

#endif
