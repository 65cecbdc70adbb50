/* Differential privacy for the sites' updates (DP-FedAvg, McMahan et al., ICLR 2018): site-level
 * privacy, where two federations are neighbours when one site's data is added or removed.
 *
 * Each round the aggregator clips every site's update x_k - x to L2 norm C, averages the clipped
 * updates with equal weights 1/n, and adds Gaussian noise of standard deviation sigma*C/n to every
 * coordinate of the mean (sigma: the noise multiplier; C/n: the mean's sensitivity to one site). The
 * server optimizer then acts on that noised mean. docs/aggregation.md has the maths and costs.
 *
 * The accountant is Renyi DP (Mironov 2017): one such round is (alpha, alpha/(2 sigma^2))-RDP for
 * every order alpha > 1, rounds compose by adding, so the whole run is described by one number,
 * rho = sum over rounds of 1/(2 sigma_t^2). Participation is full (every site every round): no
 * sampling amplification is claimed. */
#ifndef FLAS_DP_H
#define FLAS_DP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_DP_SEED_BYTES 32

/* RDP coefficient of one round with noise multiplier sigma: 1/(2 sigma^2); +inf when sigma is 0. */
double flas_dp_round_rho(double sigma);

/* (epsilon, delta)-DP from rho (RDP(alpha) = alpha*rho), minimised over alpha with the conversion of
 * Balle et al. 2020 (Prop. 12), as Google's dp_accounting and Opacus convert:
 *   epsilon(alpha) = alpha*rho + log(1 - 1/alpha) - log(delta*alpha)/(alpha - 1).
 * Returns 0 for rho = 0, +inf for rho = +inf, -1 for a delta outside (0, 1) or a negative rho. The
 * optimal order goes to *order when not NULL. */
double flas_dp_epsilon(double rho, double delta, double *order);

/* The smallest noise multiplier whose `rounds` rounds spend at most target_epsilon at delta (relative
 * accuracy 1e-9). -1 for a target <= 0, rounds < 1 or delta outside (0, 1). */
double flas_dp_sigma_for_epsilon(double target_epsilon, double delta, long rounds);

/* The factor a site's update of L2 norm `norm` is multiplied by: exactly 1 when norm <= clip (the
 * update is left untouched, bit for bit), else clip/norm. clip may be +inf. */
double flas_dp_clip_factor(double norm, double clip);

/* The noise generator: ChaCha20 (OpenSSL) keyed by a 32-byte seed, Box-Muller on 53-bit uniforms.
 * Production seeds come from the kernel's CSPRNG (flas_dp_seed_random) and are never written anywhere:
 * whoever knows the seed can subtract the noise. Tests give one explicitly. */
typedef struct flas_dp_rng flas_dp_rng;
int flas_dp_seed_random(unsigned char seed[FLAS_DP_SEED_BYTES]); /* 0, or -1 (errno) */
/* "hex" of 64 hex digits into seed: 0, or -1. */
int flas_dp_seed_parse(const char *hex, unsigned char seed[FLAS_DP_SEED_BYTES]);
flas_dp_rng *flas_dp_rng_new(const unsigned char seed[FLAS_DP_SEED_BYTES]);
void flas_dp_rng_free(flas_dp_rng *g);
/* out[i] = stddev * N(0, 1), i < n. The stream is the same for a seed however it is cut into calls. */
int flas_dp_rng_gaussian(flas_dp_rng *g, double stddev, float *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
