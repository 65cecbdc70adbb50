#include "agg_testutil.h"

#include <check.h>
#include <stdio.h>

#include "flas/model.h"

void agg_write_params(const char *path, flas_ckpt_role role, const char *site, int64_t tokens, const char *base,
                      const float *buf, int64_t round)
{
    flas_config c;
    flas_config_preset("stories260K", &c);
    flas_ckpt_meta m = {.cfg = c, .role = role, .round = round, .tokens_trained = tokens};
    snprintf(m.site, sizeof m.site, "%s", site);
    snprintf(m.base_sha256, sizeof m.base_sha256, "%s", base);
    char err[512];
    flas_ckpt_writer *w = flas_ckpt_create(path, &m, 0, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(w != NULL, "%s", err);
    const flas_param_table *t = flas_ckpt_writer_tensors(w);
    ck_assert_int_eq(flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, t, 0, t->n_params, buf, err, sizeof err), 0);
    ck_assert_msg(flas_ckpt_commit(w, err, sizeof err) == 0, "%s", err);
}
