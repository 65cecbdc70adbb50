/* The rank -> GPU decision and the --comm choice of the CUDA path, on values alone (no GPU, no MPI). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/gpu_select.h"

static flas_gpu_env env(const char *slurm, const char *ompi, const char *mpich, int node_rank)
{
    flas_gpu_env e = {slurm, ompi, mpich, node_rank};
    return e;
}

static flas_gpu_choice pick(flas_gpu_env e, int n_devices)
{
    flas_gpu_choice c;
    char err[256];
    ck_assert_msg(flas_gpu_select(&e, n_devices, &c, err, sizeof err) == 0, "%s", err);
    return c;
}

static void refused(flas_gpu_env e, int n_devices, const char *needle)
{
    flas_gpu_choice c;
    char err[256] = "";
    ck_assert_int_eq(flas_gpu_select(&e, n_devices, &c, err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

START_TEST(precedence)
{
    flas_gpu_choice c = pick(env("3", "1", "2", 0), 8);
    ck_assert_int_eq(c.device, 3);
    ck_assert_str_eq(c.source, "SLURM_LOCALID");
    c = pick(env(NULL, "5", "2", 0), 8);
    ck_assert_int_eq(c.device, 5);
    ck_assert_str_eq(c.source, "OMPI_COMM_WORLD_LOCAL_RANK");
    c = pick(env(NULL, NULL, "2", 7), 8);
    ck_assert_int_eq(c.device, 2);
    ck_assert_str_eq(c.source, "MPI_LOCALRANKID");
    c = pick(env(NULL, NULL, NULL, 6), 8);
    ck_assert_int_eq(c.device, 6);
    ck_assert_int_eq(c.local_rank, 6);
    ck_assert_str_eq(c.source, "MPI node rank");
}
END_TEST

START_TEST(modulo_devices)
{
    /* 8 ranks on 4 GPUs: two per GPU, round robin. */
    for (int r = 0; r < 8; r++) {
        char v[8];
        snprintf(v, sizeof v, "%d", r);
        flas_gpu_choice c = pick(env(v, NULL, NULL, -1), 4);
        ck_assert_int_eq(c.device, r % 4);
        ck_assert_int_eq(c.local_rank, r);
    }
    /* --gpus-per-task=1: each rank sees only its own GPU, as device 0. */
    ck_assert_int_eq(pick(env("3", NULL, NULL, 3), 1).device, 0);
    ck_assert_int_eq(pick(env("2147483647", NULL, NULL, -1), 3).device, 2147483647 % 3);
}
END_TEST

START_TEST(bad_inputs_are_refused)
{
    refused(env("0", NULL, NULL, 0), 0, "no CUDA device");
    refused(env("0", NULL, NULL, 0), -1, "no CUDA device");
    refused(env(NULL, NULL, NULL, -1), 2, "no node-local rank");
    refused(env("", NULL, NULL, 0), 2, "SLURM_LOCALID='' is not");
    refused(env("-1", NULL, NULL, 0), 2, "SLURM_LOCALID='-1'");
    refused(env(" 1", NULL, NULL, 0), 2, "SLURM_LOCALID=' 1'");
    refused(env("1x", NULL, NULL, 0), 2, "SLURM_LOCALID='1x'");
    refused(env("2147483648", NULL, NULL, 0), 2, "SLURM_LOCALID='2147483648'");
    refused(env("99999999999999999999999", NULL, NULL, 0), 2, "SLURM_LOCALID");
    refused(env(NULL, "abc", NULL, 0), 2, "OMPI_COMM_WORLD_LOCAL_RANK='abc'");
    refused(env(NULL, NULL, "+2", 0), 2, "MPI_LOCALRANKID='+2'");
    /* A bad value is an error even when a later source would do: no silent fallback. */
    refused(env("x", "1", "1", 1), 2, "SLURM_LOCALID='x'");
}
END_TEST

START_TEST(from_process)
{
    setenv("SLURM_LOCALID", "1", 1);
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    setenv("MPI_LOCALRANKID", "4", 1);
    flas_gpu_env e;
    flas_gpu_env_from_process(&e, 9);
    ck_assert_str_eq(e.slurm_localid, "1");
    ck_assert_ptr_null(e.ompi_local_rank);
    ck_assert_str_eq(e.mpi_localrankid, "4");
    ck_assert_int_eq(e.mpi_node_rank, 9);
    ck_assert_int_eq(pick(e, 2).device, 1);
}
END_TEST

START_TEST(repeats)
{
    int a = -1, b = -1;
    int ranks[] = {0, 1, 2, 3};
    ck_assert_int_eq(flas_gpu_find_repeat(ranks, 4, sizeof(int), &a, &b), 0);
    /* mpirun inside sbatch: every rank inherited the script's SLURM_LOCALID=0. */
    int inherited[] = {0, 0, 0, 0};
    ck_assert_int_eq(flas_gpu_find_repeat(inherited, 4, sizeof(int), &a, &b), 1);
    ck_assert_int_eq(a, 0);
    ck_assert_int_eq(b, 1);
    /* Device UUIDs: ranks 1 and 3 on one physical GPU. */
    unsigned char uuid[4][16];
    memset(uuid, 0, sizeof uuid);
    for (int i = 0; i < 4; i++)
        uuid[i][15] = (unsigned char)i;
    uuid[3][15] = 1;
    ck_assert_int_eq(flas_gpu_find_repeat(uuid, 4, 16, &a, &b), 1);
    ck_assert_int_eq(a, 1);
    ck_assert_int_eq(b, 3);
    ck_assert_int_eq(flas_gpu_find_repeat(uuid, 1, 16, &a, &b), 0);
    ck_assert_int_eq(flas_gpu_find_repeat(uuid, 0, 16, &a, &b), 0);
}
END_TEST

START_TEST(comm_kind)
{
    flas_gpu_comm_kind k;
    char err[256] = "";
    ck_assert_int_eq(flas_gpu_comm_kind_parse("nccl", &k, err, sizeof err), 0);
    ck_assert_int_eq(k, FLAS_GPU_COMM_NCCL);
    ck_assert_int_eq(flas_gpu_comm_kind_parse("mpi", &k, err, sizeof err), 0);
    ck_assert_int_eq(k, FLAS_GPU_COMM_MPI);
    ck_assert_int_eq(flas_gpu_comm_kind_parse("auto", &k, err, sizeof err), 0);
    ck_assert_int_eq(k, FLAS_GPU_COMM_AUTO);
    ck_assert_int_eq(flas_gpu_comm_kind_parse("NCCL", &k, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "--comm 'NCCL' is not one of auto, nccl, mpi") != NULL, "%s", err);
    ck_assert_int_eq(flas_gpu_comm_kind_parse(NULL, &k, err, sizeof err), -1);
    ck_assert_str_eq(flas_gpu_comm_kind_name(FLAS_GPU_COMM_MPI), "mpi");
    ck_assert_str_eq(flas_gpu_comm_kind_name((flas_gpu_comm_kind)7), "?");

    ck_assert_int_eq(flas_gpu_comm_resolve(FLAS_GPU_COMM_AUTO, -1, -1, &k, err, sizeof err), 0);
    ck_assert_int_eq(k, FLAS_GPU_COMM_NCCL);
    ck_assert_int_eq(flas_gpu_comm_resolve(FLAS_GPU_COMM_AUTO, 0, 2, &k, err, sizeof err), 0);
    ck_assert_int_eq(k, FLAS_GPU_COMM_MPI);
    ck_assert_int_eq(flas_gpu_comm_resolve(FLAS_GPU_COMM_MPI, -1, -1, &k, err, sizeof err), 0);
    ck_assert_int_eq(k, FLAS_GPU_COMM_MPI);
    ck_assert_int_eq(flas_gpu_comm_resolve(FLAS_GPU_COMM_NCCL, -1, -1, &k, err, sizeof err), 0);
    ck_assert_int_eq(k, FLAS_GPU_COMM_NCCL);
    ck_assert_int_eq(flas_gpu_comm_resolve(FLAS_GPU_COMM_NCCL, 1, 3, &k, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "ranks 1 and 3 share one GPU") && strstr(err, "--comm mpi"), "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gpu_select");
    TCase *tc = tcase_create("gpu_select");
    tcase_add_test(tc, precedence);
    tcase_add_test(tc, modulo_devices);
    tcase_add_test(tc, bad_inputs_are_refused);
    tcase_add_test(tc, from_process);
    tcase_add_test(tc, repeats);
    tcase_add_test(tc, comm_kind);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
