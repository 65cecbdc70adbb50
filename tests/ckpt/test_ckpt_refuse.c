/* Readers refuse every kind of bad checkpoint with one clear line naming the file, before a caller
 * allocates anything from the file's numbers. Damaged variants are made from a good file with HDF5. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"
#include "ckpt_fixture.h"

static char dir[512], good[600], bad[600];
static char err[1024];

static void setup(void)
{
    fix_tmpdir(dir, sizeof dir);
    snprintf(good, sizeof good, "%s/good.h5", dir);
    snprintf(bad, sizeof bad, "%s/bad.h5", dir);
    ck_assert_msg(fix_write(good, "small", 2, FLAS_CKPT_OPTIMIZER | FLAS_CKPT_TRAIN_STATE, err, sizeof err) == 0,
                  "%s", err);
}

static void teardown(void) { fix_rmtree(dir); }

static void copy_good(void)
{
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", good, bad);
    ck_assert_int_eq(system(cmd), 0);
}

static void expect_refused(const char *path, const char *needle)
{
    err[0] = '\0';
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    if (r)
        flas_ckpt_close(r);
    ck_assert_msg(r == NULL, "%s was accepted", path);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
    ck_assert_msg(strstr(err, path) == err, "message '%s' does not start with the file name", err);
    ck_assert_msg(strchr(err, '\n') == NULL, "message '%s' spans lines", err);
}

/* Opens the copy read-write with plain HDF5 for surgery. */
static hid_t open_bad(void)
{
    copy_good();
    hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    return f;
}

static void set_root_str(const char *name, const char *value)
{
    hid_t f = open_bad();
    if (H5Aexists(f, name) > 0)
        H5Adelete(f, name);
    if (value)
        ck_assert_int_eq(ck_attr_put_str(f, name, value), 0);
    H5Fclose(f);
}

static void set_root_int(const char *name, int64_t value)
{
    hid_t f = open_bad();
    if (H5Aexists(f, name) > 0)
        H5Adelete(f, name);
    ck_assert_int_eq(ck_attr_put(f, name, H5T_NATIVE_INT64, 1, &value), 0);
    H5Fclose(f);
}

static void replace_dataset(const char *name, hid_t type, int ndim, hsize_t d0, hsize_t d1)
{
    hid_t f = open_bad();
    ck_assert_int_ge(H5Ldelete(f, name, H5P_DEFAULT), 0);
    if (type >= 0) {
        hsize_t dims[2] = {d0, d1};
        hid_t sp = H5Screate_simple(ndim, dims, NULL);
        hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ck_assert_int_ge(d, 0);
        H5Dclose(d);
        H5Sclose(sp);
    }
    H5Fclose(f);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

START_TEST(the_good_file_is_accepted)
{
    ck_assert_msg(fix_verify(good, 2, err, sizeof err) == 0, "%s", err);
    copy_good();
    ck_assert_msg(fix_verify(bad, 2, err, sizeof err) == 0, "%s", err); /* the copy mechanism is sound */
}
END_TEST

START_TEST(files_that_are_not_hdf5)
{
    char p[700];
    snprintf(p, sizeof p, "%s/absent.h5", dir);
    expect_refused(p, "cannot open: No such file or directory");
    expect_refused(dir, "is a directory");
    write_bytes(bad, "", 0);
    expect_refused(bad, "empty file (0 bytes)");
    write_bytes(bad, "step,loss\n1,2.5\n", 16);
    expect_refused(bad, "not an HDF5 file");
    char *noise = malloc(1 << 20);
    for (int i = 0; i < (1 << 20); i++)
        noise[i] = (char)(i * 2654435761u >> 13);
    write_bytes(bad, noise, 1 << 20);
    free(noise);
    expect_refused(bad, "not an HDF5 file");
}
END_TEST

START_TEST(truncated_files)
{
    struct stat st;
    ck_assert_int_eq(stat(good, &st), 0);
    const off_t strict[] = {st.st_size - 1, st.st_size / 2, 1 << 20};
    for (size_t i = 0; i < sizeof strict / sizeof strict[0]; i++) {
        copy_good();
        ck_assert_int_eq(truncate(bad, strict[i]), 0);
        expect_refused(bad, "truncated file");
    }
    /* Cut inside the metadata: refused, as truncated or as damaged depending on what is left. */
    const off_t loose[] = {4096, 200, 40, 9};
    for (size_t i = 0; i < sizeof loose / sizeof loose[0]; i++) {
        copy_good();
        ck_assert_int_eq(truncate(bad, loose[i]), 0);
        expect_refused(bad, ": ");
    }
}
END_TEST

/* Flips one byte of metadata: format 1.8 metadata carries checksums, so damage is detected. */
static void flip_byte_at(off_t at)
{
    copy_good();
    int fd = open(bad, O_RDWR);
    unsigned char b;
    ck_assert_int_eq(pread(fd, &b, 1, at), 1);
    b ^= 0x5a;
    ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

struct addrs {
    haddr_t *a;
    int *n;
};

static herr_t collect_addr(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    struct addrs *x = data;
    (void)obj, (void)name;
    if (*x->n < 400)
        x->a[(*x->n)++] = info->addr;
    return 0;
}

START_TEST(damaged_metadata)
{
    flip_byte_at(20); /* inside the superblock (version 2, checksummed) */
    expect_refused(bad, "damaged HDF5 file");
    /* Inside every live object header in turn: never accepted, whatever object it belongs to. */
    haddr_t addrs[400];
    int n = 0;
    hid_t f = H5Fopen(good, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_eq(H5Ovisit(f, H5_INDEX_NAME, H5_ITER_NATIVE, collect_addr, &(struct addrs){addrs, &n}), 0);
    H5Fclose(f);
    ck_assert_int_ge(n, 3 * 48 + 4); /* root, groups, params, optimizer m and v */
    for (int i = 0; i < n; i++) {
        flip_byte_at((off_t)addrs[i] + 6);
        expect_refused(bad, ": ");
    }
}
END_TEST

START_TEST(wrong_format_name_or_version)
{
    set_root_str("format", "safetensors");
    expect_refused(bad, "wrong format 'safetensors' (expected 'flas-checkpoint')");
    set_root_str("format", NULL);
    expect_refused(bad, "not a FLaS checkpoint (HDF5 file without a 'format' attribute)");
    set_root_int("format_version", 2);
    expect_refused(bad, "format version 2 is not supported (this FLaS reads version 1)");
    set_root_str("format_version", "1");
    expect_refused(bad, "attribute 'format_version' has type string, expected integer");
    set_root_str("rope_convention", "hf-rotate-half");
    expect_refused(bad, "RoPE convention 'hf-rotate-half' is not supported");
    /* An HDF5 file from another program entirely. */
    hid_t f = H5Fcreate(bad, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    expect_refused(bad, "not a FLaS checkpoint");
}
END_TEST

START_TEST(missing_or_false_completion_marker)
{
    set_root_str("complete", NULL);
    expect_refused(bad, "incomplete checkpoint: no completion marker");
    set_root_int("complete", 0);
    expect_refused(bad, "incomplete checkpoint: no completion marker");
}
END_TEST

START_TEST(missing_and_extra_tensors)
{
    replace_dataset("/params/layers.1.attention.wk.weight", -1, 0, 0, 0);
    expect_refused(bad, "missing tensor params/layers.1.attention.wk.weight");
    replace_dataset("/optimizer/v/output.weight", -1, 0, 0, 0);
    expect_refused(bad, "missing tensor optimizer/v/output.weight");
    hid_t f = open_bad();
    hid_t g = H5Gopen2(f, "/params", H5P_DEFAULT);
    hsize_t four = 4; /* a tensor the gate accepts: only the count can tell it does not belong */
    hid_t sp = H5Screate_simple(1, &four, NULL);
    H5Dclose(H5Dcreate2(g, "lora.weight", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp), H5Gclose(g), H5Fclose(f);
    expect_refused(bad, "params holds 49 objects but the config has 48 tensors");
    f = open_bad();
    ck_assert_int_ge(H5Ldelete(f, "/optimizer/v", H5P_DEFAULT), 0);
    H5Fclose(f);
    expect_refused(bad, "only one of the AdamW moments");
    f = open_bad();
    ck_assert_int_ge(H5Ldelete(f, "/params", H5P_DEFAULT), 0);
    H5Fclose(f);
    expect_refused(bad, "no /params group");
}
END_TEST

START_TEST(shapes_that_do_not_match_the_config)
{
    replace_dataset("/params/layers.0.attention.wq.weight", H5T_IEEE_F32LE, 2, 64, 63);
    expect_refused(bad, "tensor params/layers.0.attention.wq.weight has shape (64, 63) but the config needs (64, 64)");
    replace_dataset("/params/norm.weight", H5T_IEEE_F32LE, 2, 64, 1);
    expect_refused(bad, "tensor params/norm.weight has shape (64, 1) but the config needs (64)");
    /* The config changed, the tensors did not: the first tensor that disagrees is named. */
    set_root_int("hidden_dim", 176);
    expect_refused(bad, "tensor params/layers.0.feed_forward.w1.weight has shape (172, 64) but the config needs (176, 64)");
    set_root_int("n_layers", 6);
    expect_refused(bad, "missing tensor params/layers.5.attention_norm.weight");
}
END_TEST

START_TEST(wrong_dtypes)
{
    replace_dataset("/params/layers.2.feed_forward.w2.weight", H5T_IEEE_F64LE, 2, 64, 172);
    expect_refused(bad, "tensor params/layers.2.feed_forward.w2.weight has dtype float64, expected float32");
    replace_dataset("/optimizer/m/norm.weight", H5T_STD_I32LE, 1, 64, 0);
    expect_refused(bad, "tensor optimizer/m/norm.weight has dtype int32, expected float32");
    /* float16 from some exporter: 2-byte floats are refused too. */
    hid_t h = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(h, 15, 10, 5, 0, 10);
    H5Tset_size(h, 2);
    H5Tset_ebias(h, 15);
    replace_dataset("/params/tok_embeddings.weight", h, 2, 512, 64);
    H5Tclose(h);
    expect_refused(bad, "has dtype float16, expected float32");
}
END_TEST

/* The file's numbers are not trusted: nonsense is refused before anything is sized from it. */
START_TEST(implausible_configs_and_metadata)
{
    set_root_int("n_heads", 0);
    expect_refused(bad, "invalid model config: n_heads must be positive");
    set_root_int("vocab_size", (int64_t)1 << 40);
    expect_refused(bad, "config vocab_size 1099511627776 is out of range");
    set_root_int("vocab_size", 2000000000);
    expect_refused(bad, "invalid model config");
    set_root_int("n_layers", 1000000);
    expect_refused(bad, "invalid model config");
    set_root_str("role", "server");
    expect_refused(bad, "role 'server' is neither 'global' nor 'local'");
    set_root_int("tokens_trained", -5);
    expect_refused(bad, "negative round");
    set_root_str("base_sha256", "1234");
    expect_refused(bad, "base_sha256 '1234' is not a sha256 hex digest");
    set_root_str("site", NULL);
    expect_refused(bad, "attribute 'site' is missing");
}
END_TEST

int main(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* the surgery below provokes HDF5 errors on purpose */
    Suite *s = suite_create("checkpoint_refuse");
    TCase *tc = tcase_create("refuse");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, the_good_file_is_accepted);
    tcase_add_test(tc, files_that_are_not_hdf5);
    tcase_add_test(tc, truncated_files);
    tcase_add_test(tc, damaged_metadata);
    tcase_add_test(tc, wrong_format_name_or_version);
    tcase_add_test(tc, missing_or_false_completion_marker);
    tcase_add_test(tc, missing_and_extra_tensors);
    tcase_add_test(tc, shapes_that_do_not_match_the_config);
    tcase_add_test(tc, wrong_dtypes);
    tcase_add_test(tc, implausible_configs_and_metadata);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
