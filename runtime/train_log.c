/* What flas-train tells people: a progress line every --log-every steps on rank 0 (step, loss, lr,
 * tok/s, MFU, ETA) and the same facts as JSON lines in the metrics file, which the coordinator and the
 * experiment read. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "gemm_bf16.h"
#include "train_internal.h"

void train_say(const flas_train_comm *c, const char *fmt, ...)
{
    if (c->rank != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

int train_log_open(train_log *l, const flas_train_opts *o, int rank0, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->rank0 = rank0;
    l->last_time = flas_train_now();
    char path[FLAS_TRAIN_PATH_MAX + 32] = "";
    if (o->metrics[0])
        snprintf(path, sizeof path, "%s", o->metrics);
    else if (o->output_dir[0])
        snprintf(path, sizeof path, "%s/metrics.jsonl", o->output_dir);
    if (!rank0 || !path[0])
        return 0;
    /* Appended: a resumed round continues the same record. */
    l->metrics = fopen(path, "a");
    if (!l->metrics) {
        snprintf(err, errlen, "%s: cannot open the metrics file: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void train_log_close(train_log *l)
{
    if (l->metrics)
        fclose(l->metrics);
    l->metrics = NULL;
}

void train_log_json(train_log *l, const char *fmt, ...)
{
    if (!l->metrics)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(l->metrics, fmt, ap);
    va_end(ap);
    fputc('\n', l->metrics);
    fflush(l->metrics);
}

static void hms(double s, char *buf, size_t len)
{
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, len, "?");
        return;
    }
    long x = (long)(s + 0.5);
    snprintf(buf, len, "%ld:%02ld:%02ld", x / 3600, x / 60 % 60, x % 60);
}

/* JSON has no NaN: write null. */
static const char *num(double v, char *buf, size_t len)
{
    if (isfinite(v))
        snprintf(buf, len, "%.9g", v);
    else
        snprintf(buf, len, "null");
    return buf;
}

void train_log_step(trainer *t, double loss, float norm, int force)
{
    train_log *l = &t->log;
    if (!l->rank0 || (!force && t->step % t->o->log_every != 0))
        return;
    double now = flas_train_now(), dt = now - l->last_time;
    long steps = t->step - l->last_step;
    double tok_step = (double)t->B * t->T * t->accum * t->c->dp_size;
    double tok_s = dt > 0 && steps > 0 ? tok_step * steps / dt : 0;
    double flops = flas_model_flops_per_token(&t->cfg, t->T) * tok_s;
    double mfu = t->peak_gflops > 0 ? flops / (t->peak_gflops * 1e9 * t->c->size) : 0;
    double per_step = steps > 0 ? dt / steps : t->clock.step_seconds;
    double eta = (double)(t->steps_target - t->step) * per_step;
    char eta_s[32], left_s[64] = "", a[32], b[32];
    hms(eta, eta_s, sizeof eta_s);
    if (t->clock.end > 0) {
        char x[32];
        hms(t->clock.end - now, x, sizeof x);
        snprintf(left_s, sizeof left_s, " | walltime left %s", x);
    }
    printf("step %ld/%ld | loss %.4f | lr %.3e | norm %.3f | %.0f tok/s | MFU %.1f%% | ETA %s%s\n", t->step,
           t->steps_target, loss, (double)t->lr, (double)norm, tok_s, 100 * mfu, eta_s, left_s);
    fflush(stdout);
    train_log_json(l,
                   "{\"step\":%ld,\"loss\":%s,\"lr\":%.9g,\"grad_norm\":%s,\"tokens\":%lld,\"tok_per_s\":%.1f,"
                   "\"mfu\":%.5f,\"elapsed\":%.3f,\"eta\":%.1f}",
                   t->step, num(loss, a, sizeof a), (double)t->lr, num(norm, b, sizeof b), (long long)t->tokens_trained,
                   tok_s, mfu, now - t->clock.start, eta);
    l->last_time = now;
    l->last_step = t->step;
}

double train_measure_peak(flas_precision p)
{
    /* One product big enough to reach the kernel's speed, small enough to cost ~0.1-0.2 s; best of 4.
     * In the step's own arithmetic: bf16 products have their own (higher) ceiling. */
    const int n = 1024;
    float *A = malloc(sizeof(float) * n * n), *B = malloc(sizeof(float) * n * n), *C = malloc(sizeof(float) * n * n);
    double best = 0;
    if (A && B && C) {
        for (long i = 0; i < (long)n * n; i++) {
            A[i] = (float)(i % 13) * 0.01f;
            B[i] = (float)(i % 7) * 0.01f;
        }
        for (int rep = 0; rep < 4; rep++) {
            double t0 = flas_train_now();
            char e[256];
            if (p == FLAS_PRECISION_BF16)
                flas_gemm_bf16(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n, e, sizeof e);
            else
                flas_sgemm(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
            double g = 2.0 * n * n * (double)n / (flas_train_now() - t0) * 1e-9;
            best = g > best ? g : best;
        }
    }
    free(A);
    free(B);
    free(C);
    return best;
}
