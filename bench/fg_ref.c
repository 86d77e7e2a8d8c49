/* fg_ref: host-side helpers shared by the tests, the demo and the
 * benchmarks: 16-bit float conversions, a seeded random generator and the
 * float64 reference attention. */
#include "fg_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- 16-bit floats ------------------------------------------------------ */

float fg_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31;
  int exp = (h >> 10) & 31;
  uint32_t mant = h & 1023;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { /* subnormal: normalize */
      int e = -1;
      do {
        mant <<= 1;
        e++;
      } while (!(mant & 1024));
      bits = sign | (uint32_t)(127 - 15 - e) << 23 | (mant & 1023) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (uint32_t)(exp - 15 + 127) << 23 | mant << 13;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t fg_float_to_half(float f) {
  /* Round to nearest even through double arithmetic on the value. */
  if (isnan(f)) return 0x7e00;
  uint16_t sign = signbit(f) ? 0x8000 : 0;
  double a = fabs((double)f);
  if (a >= 65520.0) return sign | 0x7c00;
  if (a < ldexp(1.0, -24) * 0.5) return sign;
  int e;
  frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
  int exp = e - 1;  /* a = 1.x * 2^exp */
  if (exp < -14) {  /* subnormal: units of 2^-24 */
    double q = nearbyint(a / ldexp(1.0, -24));
    return sign | (uint16_t)q; /* q == 1024 becomes the smallest normal */
  }
  double q = nearbyint(a / ldexp(1.0, exp - 10)); /* 1024..2048 */
  if (q >= 2048) {
    q /= 2;
    exp++;
  }
  if (exp > 15) return sign | 0x7c00;
  return sign | (uint16_t)((exp + 15) << 10) | (uint16_t)((int)q - 1024);
}

float fg_bf16_to_float(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t fg_float_to_bf16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  if (isnan(f)) return 0x7fc0;
  uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return (uint16_t)((bits + rounding) >> 16);
}

float fg_elem_to_float(fagen_dtype dt, uint16_t x) {
  return dt == FAGEN_DTYPE_BF16 ? fg_bf16_to_float(x) : fg_half_to_float(x);
}

uint16_t fg_elem_from_float(fagen_dtype dt, float f) {
  return dt == FAGEN_DTYPE_BF16 ? fg_float_to_bf16(f) : fg_float_to_half(f);
}

/* ---- random ------------------------------------------------------------- */

uint64_t fg_rand_seed(void) {
  const char *s = getenv("FAGEN_TEST_SEED");
  uint64_t seed;
  if (s && *s) {
    seed = strtoull(s, NULL, 0);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
  }
  if (!seed) seed = 0x9e3779b97f4a7c15ull;
  return seed;
}

float fg_rand_uniform(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return (float)((double)(x >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

/* ---- dropout -------------------------------------------------------------- */

void fg_ref_philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    if (round) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint64_t m0 = (uint64_t)0xD2511F53u * c0, m1 = (uint64_t)0xCD9E8D57u * c2;
    const uint32_t hi0 = (uint32_t)(m0 >> 32), lo0 = (uint32_t)m0;
    const uint32_t hi1 = (uint32_t)(m1 >> 32), lo1 = (uint32_t)m1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

uint32_t fg_ref_dropout_p16(double p) {
  if (!(p > 0)) return 0;
  const double r = round(p * 65536.0);
  return r >= 65535.0 ? 65535u : (uint32_t)r;
}

uint32_t fg_ref_dropout_random(uint64_t seed, uint64_t offset, int bh, int i, int j) {
  const uint32_t uj = (uint32_t)j;
  const uint32_t ctr[4] = {4u * (uj >> 5) + ((uj >> 1) & 3u), (uint32_t)i, (uint32_t)bh,
                           (uint32_t)offset};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32) ^ (uint32_t)(offset >> 32)};
  uint32_t r[4];
  fg_ref_philox(ctr, key, r);
  const uint32_t w = r[(uj >> 3) & 3u];
  return uj & 1u ? w >> 16 : w & 0xffffu;
}

double fg_ref_dropout_factor(const fg_ref_features *f, int bh, int i, int j) {
  if (!f || f->dropout_p == 0) return 1.0;
  const uint32_t p16 = fg_ref_dropout_p16(f->dropout_p);
  if (fg_ref_dropout_random(f->dropout_seed, f->dropout_offset, bh, i, j) < p16) return 0.0;
  return 65536.0 / (65536.0 - p16);
}

/* ---- reference ---------------------------------------------------------- */

static int fg_ref_clamp(int64_t x, int hi) { return x < 0 ? 0 : x > hi ? hi : (int)x; }

void fg_ref_lengths(const fg_ref_args *a, int b, int *len_q, int *len_k) {
  const fg_ref_features *f = a->feat;
  int lq = a->seqlen_q, lk = a->seqlen_k;
  if (f && f->cu_seqlens_q && f->cu_seqlens_k) {
    lq = fg_ref_clamp((int64_t)f->cu_seqlens_q[b + 1] - f->cu_seqlens_q[b], a->seqlen_q);
    lk = fg_ref_clamp((int64_t)f->cu_seqlens_k[b + 1] - f->cu_seqlens_k[b], a->seqlen_k);
  }
  /* Both layouts: a valid length shortens a packed sequence (fagen.h). */
  if (f && f->seqused_q) lq = fg_ref_clamp(f->seqused_q[b], lq);
  if (f && f->seqused_k) lk = fg_ref_clamp(f->seqused_k[b], lk);
  *len_q = lq;
  *len_k = lk;
}

int fg_ref_visible(const fg_ref_args *a, int b, int i, int j) {
  int lq, lk;
  fg_ref_lengths(a, b, &lq, &lk);
  if (i < 0 || i >= lq || j < 0 || j >= lk) return 0;
  const int64_t d = (int64_t)lk - lq;
  int left = -1, right = -1; /* -1: unbounded */
  if (a->feat && a->feat->window) {
    left = a->feat->window_left;
    right = a->feat->window_right;
  }
  if (a->causal) right = 0; /* min(right, 0), an unbounded right being +inf */
  if (right >= 0 && j > i + d + right) return 0;
  if (left >= 0 && j < i + d - left) return 0;
  return 1;
}

/* Element offset of row s, head h of sequence b in a tensor with strides st:
 * packed rows (cu: the sequence offsets) ignore the batch stride. */
static int64_t fg_ref_at(const int32_t *cu, fagen_strides st, int b, int s, int h) {
  if (cu) return ((int64_t)cu[b] + s) * st.seq + h * st.head;
  return b * st.batch + s * st.seq + h * st.head;
}

static void fg_ref_load(fagen_dtype dt, const uint16_t *row, int D, double *dst) {
  for (int d = 0; d < D; d++) dst[d] = fg_elem_to_float(dt, row[d]);
}

/* One (sequence, query head): its lengths, ALiBi slope and its kv head's
 * keys and values as doubles (len_k x D). */
typedef struct fg_ref_head {
  int b, h, hk, len_q, len_k;
  double slope;
  double *k, *v;
} fg_ref_head;

static const int32_t *fg_ref_cu_q(const fg_ref_args *a) {
  return a->feat && a->feat->cu_seqlens_k ? a->feat->cu_seqlens_q : NULL;
}
static const int32_t *fg_ref_cu_k(const fg_ref_args *a) {
  return a->feat && a->feat->cu_seqlens_q ? a->feat->cu_seqlens_k : NULL;
}

static void fg_ref_head_init(const fg_ref_args *a, int b, int h, fg_ref_head *hd) {
  const int D = a->head_dim;
  const fg_ref_features *f = a->feat;
  hd->b = b;
  hd->h = h;
  hd->hk = h / (a->heads_q / a->heads_kv);
  fg_ref_lengths(a, b, &hd->len_q, &hd->len_k);
  hd->slope = f && f->alibi_slopes ? f->alibi_slopes[b * f->alibi_batch_stride + h] : 0.0;
  hd->k = malloc(sizeof(double) * ((size_t)hd->len_k * D + 1));
  hd->v = malloc(sizeof(double) * ((size_t)hd->len_k * D + 1));
  for (int j = 0; j < hd->len_k; j++) {
    fg_ref_load(a->dtype, a->k + fg_ref_at(fg_ref_cu_k(a), a->ks, b, j, hd->hk), D,
                hd->k + (size_t)j * D);
    fg_ref_load(a->dtype, a->v + fg_ref_at(fg_ref_cu_k(a), a->vs, b, j, hd->hk), D,
                hd->v + (size_t)j * D);
  }
}

static void fg_ref_head_free(fg_ref_head *hd) {
  free(hd->k);
  free(hd->v);
}

/* Softmax weights p[len_k] of query row i (qi: its D values) over the keys
 * of hd, 0 where masked, and t[j] = tanh(s / softcap) (0 without softcap).
 * Returns the lse, -inf when the row sees no key (then p is all 0). */
static double fg_ref_probs(const fg_ref_args *a, const fg_ref_head *hd, int i, const double *qi,
                           double *p, double *t) {
  const int D = a->head_dim;
  const double cap = a->feat ? a->feat->softcap : 0.0;
  const double d = (double)hd->len_k - hd->len_q;
  double m = -INFINITY;
  for (int j = 0; j < hd->len_k; j++) {
    p[j] = -INFINITY;
    t[j] = 0;
    if (!fg_ref_visible(a, hd->b, i, j)) continue;
    const double *kj = hd->k + (size_t)j * D;
    double dot = 0;
    for (int e = 0; e < D; e++) dot += qi[e] * kj[e];
    double s = dot * a->scale;
    if (cap > 0) {
      t[j] = tanh(s / cap);
      s = cap * t[j];
    }
    s += hd->slope * ((double)j - i - d);
    p[j] = s;
    if (s > m) m = s;
  }
  if (m == -INFINITY) {
    for (int j = 0; j < hd->len_k; j++) p[j] = 0;
    return -INFINITY;
  }
  double sum = 0;
  for (int j = 0; j < hd->len_k; j++) sum += p[j] == -INFINITY ? 0 : exp(p[j] - m);
  for (int j = 0; j < hd->len_k; j++) p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - m) / sum;
  return m + log(sum);
}

/* Loads query row i of hd into qi[D] and computes its weights (fg_ref_probs). */
static double fg_ref_query(const fg_ref_args *a, const fg_ref_head *hd, int i, double *qi,
                           double *p, double *t) {
  fg_ref_load(a->dtype, a->q + fg_ref_at(fg_ref_cu_q(a), a->qs, hd->b, i, hd->h), a->head_dim,
              qi);
  return fg_ref_probs(a, hd, i, qi, p, t);
}

/* pd[j] = p[j] times the dropout factor of (hd, i, j) (p itself without
 * dropout). */
static void fg_ref_drop(const fg_ref_args *a, const fg_ref_head *hd, int i, const double *p,
                        double *pd) {
  const fg_ref_features *f = a->feat;
  const int bh = hd->b * a->heads_q + hd->h;
  for (int j = 0; j < hd->len_k; j++)
    pd[j] = p[j] == 0 ? 0 : p[j] * fg_ref_dropout_factor(f, bh, i, j);
}

/* o[D] = sum_j p[j] v[j]. */
static void fg_ref_pv(const fg_ref_head *hd, int D, const double *p, double *o) {
  for (int e = 0; e < D; e++) o[e] = 0;
  for (int j = 0; j < hd->len_k; j++)
    for (int e = 0; e < D; e++) o[e] += p[j] * hd->v[(size_t)j * D + e];
}

void fg_ref_row(const fg_ref_args *a, int b, int h, int i, double *o_row, double *lse) {
  const int D = a->head_dim;
  fg_ref_head hd;
  fg_ref_head_init(a, b, h, &hd);
  double *p = malloc(sizeof(double) * ((size_t)hd.len_k * 3 + 1)), *t = p + hd.len_k;
  double *pd = t + hd.len_k;
  double *qi = calloc((size_t)D + 1, sizeof(double));
  for (int e = 0; e < D; e++) o_row[e] = 0;
  *lse = -INFINITY;
  if (i < hd.len_q) {
    *lse = fg_ref_query(a, &hd, i, qi, p, t);
    fg_ref_drop(a, &hd, i, p, pd);
    fg_ref_pv(&hd, D, pd, o_row);
  }
  free(qi);
  free(p);
  fg_ref_head_free(&hd);
}

void fg_ref_attention(const fg_ref_args *a, double *o, double *lse) {
  const int B = a->batch, Sq = a->seqlen_q, Hq = a->heads_q, D = a->head_dim;
  for (size_t n = 0; n < (size_t)B * Sq * Hq * D; n++) o[n] = 0;
  for (size_t n = 0; n < (size_t)B * Hq * Sq; n++) lse[n] = -INFINITY;
  double *p = malloc(sizeof(double) * ((size_t)a->seqlen_k * 3 + 1)), *t = p + a->seqlen_k;
  double *pd = t + a->seqlen_k;
  double *qi = calloc((size_t)D + 1, sizeof(double));
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      fg_ref_head hd;
      fg_ref_head_init(a, b, h, &hd);
      for (int i = 0; i < hd.len_q; i++) {
        lse[((size_t)b * Hq + h) * Sq + i] = fg_ref_query(a, &hd, i, qi, p, t);
        fg_ref_drop(a, &hd, i, p, pd);
        fg_ref_pv(&hd, D, pd, o + (((size_t)b * Sq + i) * Hq + h) * D);
      }
      fg_ref_head_free(&hd);
    }
  free(qi);
  free(p);
}

void fg_ref_attention_bwd(const fg_ref_args *a, const uint16_t *dout, fagen_strides dos,
                          double *dq, double *dk, double *dv) {
  const int B = a->batch, Sq = a->seqlen_q, Sk = a->seqlen_k, Hq = a->heads_q, Hk = a->heads_kv;
  const int D = a->head_dim;
  const double cap = a->feat ? a->feat->softcap : 0.0;
  memset(dq, 0, sizeof(double) * (size_t)B * Sq * Hq * D);
  memset(dk, 0, sizeof(double) * (size_t)B * Sk * Hk * D);
  memset(dv, 0, sizeof(double) * (size_t)B * Sk * Hk * D);
  double *p = malloc(sizeof(double) * ((size_t)Sk * 3 + 1)), *t = p + Sk, *pd = t + Sk;
  double *qi = calloc((size_t)D * 3 + 1, sizeof(double)), *gi = qi + D, *o = gi + D;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      fg_ref_head hd;
      fg_ref_head_init(a, b, h, &hd);
      for (int i = 0; i < hd.len_q; i++) {
        if (fg_ref_query(a, &hd, i, qi, p, t) == -INFINITY) continue; /* no gradient */
        fg_ref_load(a->dtype, dout + fg_ref_at(fg_ref_cu_q(a), dos, b, i, h), D, gi);
        fg_ref_drop(a, &hd, i, p, pd);
        fg_ref_pv(&hd, D, pd, o);
        double di = 0; /* D_i = dO_i . O_i, O the dropped output */
        for (int e = 0; e < D; e++) di += gi[e] * o[e];
        double *dqi = dq + (((size_t)b * Sq + i) * Hq + h) * D;
        for (int j = 0; j < hd.len_k; j++) {
          if (p[j] == 0) continue;
          const double *kj = hd.k + (size_t)j * D, *vj = hd.v + (size_t)j * D;
          double dp = 0;
          for (int e = 0; e < D; e++) dp += gi[e] * vj[e];
          dp *= pd[j] / p[j]; /* the dropout factor: 0 where dropped */
          /* dS of the final score, through the cap to the scaled score, to q.k */
          const double ds = p[j] * (dp - di) * (cap > 0 ? 1 - t[j] * t[j] : 1.0) * a->scale;
          double *dkj = dk + (((size_t)b * Sk + j) * Hk + hd.hk) * D;
          double *dvj = dv + (((size_t)b * Sk + j) * Hk + hd.hk) * D;
          for (int e = 0; e < D; e++) {
            dqi[e] += ds * kj[e];
            dkj[e] += ds * qi[e];
            dvj[e] += pd[j] * gi[e];
          }
        }
      }
      fg_ref_head_free(&hd);
    }
  free(qi);
  free(p);
}
