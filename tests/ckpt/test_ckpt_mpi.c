/* Parallel checkpoint I/O with real ranks (mpirun -np 2): a tensor-parallel split and a ZeRO-1
 * data-parallel split written collectively and read back at ONE rank; a serial file read at tp=2;
 * invalid arguments on one rank fail every rank instead of hanging.
 * Usage: mpirun -np 2 test_ckpt_mpi OUTDIR (the tp=2 file stays in OUTDIR for the h5py oracle). */
#include <dirent.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_fixture.h"

static int rank, size;
static const char *outdir;
static char err[1024];

static int write_split(const char *path, int gen, int tp_rank, int tp_size, int dp_rank, int dp_size,
                       unsigned contents)
{
    return fix_write_split(path, "small", gen, tp_rank, tp_size, dp_rank, dp_size, contents, MPI_COMM_WORLD, err,
                           sizeof err);
}

/* Rank 0 alone re-reads the file through the parallel driver on MPI_COMM_SELF. */
static void verify_on_self(const char *path, int gen)
{
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_SELF, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    const flas_param_table *t = flas_ckpt_tensors(r);
    float *buf = malloc(t->n_params * sizeof *buf), *want = malloc(t->n_params * sizeof *want);
    for (int s = 0; s < FLAS_CKPT_N_SECTIONS; s++) {
        if (!(flas_ckpt_contents(r) & FLAS_CKPT_HAS(s)))
            continue;
        ck_assert_int_eq(flas_ckpt_get_flat(r, (flas_ckpt_section)s, t, 0, t->n_params, buf, err, sizeof err), 0);
        fix_fill(t, s, gen, want);
        ck_assert_msg(memcmp(buf, want, t->n_params * sizeof *buf) == 0, "section %d differs", s);
    }
    free(buf);
    free(want);
    flas_ckpt_close(r);
}

START_TEST(tensor_parallel_split_reads_back_at_one_rank)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tp2.h5", outdir);
    ck_assert_msg(write_split(path, 7, rank, 2, 0, 1, FIX_ALL) == 0, "rank %d: %s", rank, err);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        ck_assert_msg(fix_verify(path, 7, err, sizeof err) == 0, "%s", err); /* serial driver, every value */
        verify_on_self(path, 7);
        flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
        ck_assert_uint_eq(flas_ckpt_contents(r), FIX_ALL | FLAS_CKPT_HAS(FLAS_CKPT_PARAMS));
        flas_ckpt_close(r);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}
END_TEST

START_TEST(zero1_data_parallel_split_reads_back_at_one_rank)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/dp2.h5", outdir);
    ck_assert_msg(write_split(path, 8, 0, 1, rank, 2, FLAS_CKPT_OPTIMIZER) == 0, "rank %d: %s", rank, err);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        ck_assert_msg(fix_verify(path, 8, err, sizeof err) == 0, "%s", err);
        verify_on_self(path, 8);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}
END_TEST

/* A file written by one process resumes at tp=2: each rank reads its own shard layout collectively. */
START_TEST(serial_file_reads_at_tensor_parallel_two)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/serial.h5", outdir);
    int ok = 1;
    if (rank == 0)
        ok = fix_write(path, "small", 9, FLAS_CKPT_OPTIMIZER, err, sizeof err) == 0;
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    ck_assert_msg(ok, "%s", err);
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_WORLD, err, sizeof err);
    ck_assert_msg(r != NULL, "rank %d: %s", rank, err);
    flas_param_table t;
    ck_assert_int_eq(flas_param_table_init(&t, &flas_ckpt_meta_of(r)->cfg, rank, 2, err, sizeof err), 0);
    float *buf = malloc(t.n_params * sizeof *buf), *want = malloc(t.n_params * sizeof *want);
    for (int s = FLAS_CKPT_PARAMS; s <= FLAS_CKPT_ADAM_V; s++) {
        memset(buf, 0, t.n_params * sizeof *buf);
        ck_assert_int_eq(flas_ckpt_get_flat(r, (flas_ckpt_section)s, &t, 0, t.n_params, buf, err, sizeof err), 0);
        fix_fill(&t, s, 9, want);
        ck_assert_msg(memcmp(buf, want, t.n_params * sizeof *buf) == 0, "rank %d section %d differs", rank, s);
    }
    /* Per-rank boxes of one tensor; rank 1 asks for nothing but still joins. */
    size_t start[2] = {3, 5}, count[2] = {rank == 0 ? 4 : 0, 6};
    ck_assert_int_eq(flas_ckpt_get(r, FLAS_CKPT_PARAMS, "output.weight", start, count, buf, err, sizeof err), 0);
    int out = flas_param_find(flas_ckpt_tensors(r), "output.weight") - flas_ckpt_tensors(r)->tensors;
    for (size_t i = 0; rank == 0 && i < 4 * 6; i++)
        ck_assert_float_eq(buf[i], fix_value(0, out, (3 + i / 6) * 64 + 5 + i % 6, 9));
    free(buf);
    free(want);
    flas_param_table_free(&t);
    flas_ckpt_close(r);
}
END_TEST

/* One rank's mistake fails every rank (no hang), and nothing appears at the destination. */
START_TEST(a_bad_put_on_one_rank_fails_everywhere)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/bad.h5", outdir);
    flas_config c;
    flas_ckpt_meta m;
    fix_config("small", &c);
    fix_meta(&c, 1, &m);
    flas_ckpt_writer *w = flas_ckpt_create(path, &m, 0, MPI_COMM_WORLD, err, sizeof err);
    ck_assert_ptr_nonnull(w);
    float x[4] = {0};
    size_t start[2] = {0, 0}, count[2] = {1, 4};
    int rc = flas_ckpt_put(w, FLAS_CKPT_PARAMS, rank == 1 ? "layers.0.attention.wz.weight" : "norm.weight", start,
                           count, x, err, sizeof err);
    ck_assert_int_eq(rc, -1);
    if (rank == 0)
        ck_assert_msg(strstr(err, "ranks disagree") != NULL, "%s", err);
    else
        ck_assert_msg(strstr(err, "no tensor named 'layers.0.attention.wz.weight'") != NULL, "%s", err);
    /* Ranks naming different (valid) tensors are caught too. */
    rc = flas_ckpt_put(w, FLAS_CKPT_PARAMS, rank == 1 ? "norm.weight" : "layers.0.ffn_norm.weight", start, count, x,
                       err, sizeof err);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err, "ranks disagree") != NULL, "%s", err);
    ck_assert_int_eq(flas_ckpt_commit(w, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not committed") != NULL, "%s", err);
    MPI_Barrier(MPI_COMM_WORLD);
    ck_assert_int_eq(access(path, F_OK), -1);
    /* No temporary of it either (its name ends in random digits: look for the prefix). */
    char tmp[1100];
    flas_ckpt_temp_path(path, tmp, sizeof tmp);
    const char *prefix = strrchr(tmp, '/') + 1;
    DIR *d = opendir(outdir);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));)
        ck_assert_msg(strncmp(e->d_name, prefix, strlen(prefix)) != 0, "temporary %s left", e->d_name);
    closedir(d);
}
END_TEST

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 2 || size != 2) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np 2 %s OUTDIR (got %d ranks)\n", argv[0], size);
        MPI_Finalize();
        return 2;
    }
    outdir = argv[1];
    if (rank == 0)
        mkdir(outdir, 0755); /* may exist already */
    MPI_Barrier(MPI_COMM_WORLD);
    Suite *s = suite_create("checkpoint_mpi");
    TCase *tc = tcase_create("mpi");
    tcase_add_test(tc, tensor_parallel_split_reads_back_at_one_rank);
    tcase_add_test(tc, zero1_data_parallel_split_reads_back_at_one_rank);
    tcase_add_test(tc, serial_file_reads_at_tensor_parallel_two);
    tcase_add_test(tc, a_bad_put_on_one_rank_fails_everywhere);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* MPI state must live in this process */
    srunner_run_all(sr, rank == 0 ? CK_NORMAL : CK_SILENT);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
