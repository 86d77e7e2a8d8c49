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

/* ---- reference ---------------------------------------------------------- */

/* Converts a strided [B, S, H, D] 16-bit tensor into contiguous doubles
 * [B][H][S][D]. */
static double *fg_ref_unpack(fagen_dtype dt, const uint16_t *x, fagen_strides st, int B, int S,
                             int H, int D) {
  double *out = malloc(sizeof(double) * (size_t)B * H * S * D);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int s = 0; s < S; s++) {
        const uint16_t *row = x + b * st.batch + s * st.seq + h * st.head;
        double *dst = out + (((size_t)b * H + h) * S + s) * D;
        for (int d = 0; d < D; d++) dst[d] = fg_elem_to_float(dt, row[d]);
      }
  return out;
}

void fg_ref_attention(const fg_ref_args *a, double *o, double *lse) {
  const int B = a->batch, Sq = a->seqlen_q, Sk = a->seqlen_k, Hq = a->heads_q, Hk = a->heads_kv;
  const int D = a->head_dim, group = Hq / Hk;
  double *q = fg_ref_unpack(a->dtype, a->q, a->qs, B, Sq, Hq, D);
  double *k = fg_ref_unpack(a->dtype, a->k, a->ks, B, Sk, Hk, D);
  double *v = fg_ref_unpack(a->dtype, a->v, a->vs, B, Sk, Hk, D);
  double *s = malloc(sizeof(double) * (size_t)Sk);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      const double *kh = k + ((size_t)b * Hk + h / group) * Sk * D;
      const double *vh = v + ((size_t)b * Hk + h / group) * Sk * D;
      for (int i = 0; i < Sq; i++) {
        const double *qr = q + (((size_t)b * Hq + h) * Sq + i) * D;
        double m = -INFINITY;
        for (int j = 0; j < Sk; j++) {
          if (a->causal && j > i + Sk - Sq) {
            s[j] = -INFINITY;
            continue;
          }
          double dot = 0;
          for (int d = 0; d < D; d++) dot += qr[d] * kh[(size_t)j * D + d];
          s[j] = dot * a->scale;
          if (s[j] > m) m = s[j];
        }
        double *orow = o + (((size_t)b * Sq + i) * Hq + h) * D;
        double *lrow = lse + ((size_t)b * Hq + h) * Sq + i;
        for (int d = 0; d < D; d++) orow[d] = 0;
        if (m == -INFINITY) {
          *lrow = -INFINITY;
          continue;
        }
        double sum = 0;
        for (int j = 0; j < Sk; j++) {
          if (s[j] == -INFINITY) continue;
          double p = exp(s[j] - m);
          sum += p;
          for (int d = 0; d < D; d++) orow[d] += p * vh[(size_t)j * D + d];
        }
        for (int d = 0; d < D; d++) orow[d] /= sum;
        *lrow = m + log(sum);
      }
    }
  free(s);
  free(q);
  free(k);
  free(v);
}


void fg_ref_row(const fg_ref_args *a, int b, int h, int i, double *o_row, double *lse) {
  const int D = a->head_dim, Sk = a->seqlen_k, hk = h / (a->heads_q / a->heads_kv);
  const uint16_t *qr = a->q + b * a->qs.batch + i * a->qs.seq + h * a->qs.head;
  double *s = malloc(sizeof(double) * (size_t)Sk);
  double m = -INFINITY;
  for (int j = 0; j < Sk; j++) {
    s[j] = -INFINITY;
    if (a->causal && j > i + Sk - a->seqlen_q) continue;
    const uint16_t *kr = a->k + b * a->ks.batch + j * a->ks.seq + hk * a->ks.head;
    double dot = 0;
    for (int d = 0; d < D; d++)
      dot += (double)fg_elem_to_float(a->dtype, qr[d]) * fg_elem_to_float(a->dtype, kr[d]);
    s[j] = dot * a->scale;
    if (s[j] > m) m = s[j];
  }
  for (int d = 0; d < D; d++) o_row[d] = 0;
  if (m == -INFINITY) {
    *lse = -INFINITY;
    free(s);
    return;
  }
  double sum = 0;
  for (int j = 0; j < Sk; j++) {
    if (s[j] == -INFINITY) continue;
    double p = exp(s[j] - m);
    sum += p;
    const uint16_t *vr = a->v + b * a->vs.batch + j * a->vs.seq + hk * a->vs.head;
    for (int d = 0; d < D; d++) o_row[d] += p * fg_elem_to_float(a->dtype, vr[d]);
  }
  for (int d = 0; d < D; d++) o_row[d] /= sum;
  *lse = m + log(sum);
  free(s);
}

void fg_ref_attention_bwd(const fg_ref_args *a, const uint16_t *dout, fagen_strides dos,
                          double *dq, double *dk, double *dv) {
  const int B = a->batch, Sq = a->seqlen_q, Sk = a->seqlen_k, Hq = a->heads_q, Hk = a->heads_kv;
  const int D = a->head_dim, group = Hq / Hk;
  double *q = fg_ref_unpack(a->dtype, a->q, a->qs, B, Sq, Hq, D);
  double *k = fg_ref_unpack(a->dtype, a->k, a->ks, B, Sk, Hk, D);
  double *v = fg_ref_unpack(a->dtype, a->v, a->vs, B, Sk, Hk, D);
  double *g = fg_ref_unpack(a->dtype, dout, dos, B, Sq, Hq, D);
  memset(dq, 0, sizeof(double) * (size_t)B * Sq * Hq * D);
  memset(dk, 0, sizeof(double) * (size_t)B * Sk * Hk * D);
  memset(dv, 0, sizeof(double) * (size_t)B * Sk * Hk * D);
  double *p = malloc(sizeof(double) * (size_t)Sk), *o = malloc(sizeof(double) * (size_t)D);
/* unpacked inputs are [B][H][S][D]; the gradients [B][S][H][D] */
#define FG_IN(t, b, s, h, S, H) ((t) + ((((size_t)(b) * (H) + (h)) * (S) + (s)) * D))
#define FG_AT(t, b, s, h, S, H) ((t) + ((((size_t)(b) * (S) + (s)) * (H) + (h)) * D))
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      const int hk = h / group;
      for (int i = 0; i < Sq; i++) {
        const double *qi = FG_IN(q, b, i, h, Sq, Hq), *gi = FG_IN(g, b, i, h, Sq, Hq);
        double m = -INFINITY;
        for (int j = 0; j < Sk; j++) {
          p[j] = -INFINITY;
          if (a->causal && j > i + Sk - Sq) continue;
          const double *kj = FG_IN(k, b, j, hk, Sk, Hk);
          double dot = 0;
          for (int d = 0; d < D; d++) dot += qi[d] * kj[d];
          p[j] = dot * a->scale;
          if (p[j] > m) m = p[j];
        }
        if (m == -INFINITY) continue; /* a row that sees no key: no gradient */
        double sum = 0;
        for (int j = 0; j < Sk; j++) sum += p[j] == -INFINITY ? 0 : exp(p[j] - m);
        for (int d = 0; d < D; d++) o[d] = 0;
        for (int j = 0; j < Sk; j++) {
          p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - m) / sum;
          const double *vj = FG_IN(v, b, j, hk, Sk, Hk);
          for (int d = 0; d < D; d++) o[d] += p[j] * vj[d];
        }
        double di = 0; /* D_i = dO_i . O_i */
        for (int d = 0; d < D; d++) di += gi[d] * o[d];
        double *dqi = FG_AT(dq, b, i, h, Sq, Hq);
        for (int j = 0; j < Sk; j++) {
          if (p[j] == 0) continue;
          const double *kj = FG_IN(k, b, j, hk, Sk, Hk), *vj = FG_IN(v, b, j, hk, Sk, Hk);
          double dp = 0;
          for (int d = 0; d < D; d++) dp += gi[d] * vj[d];
          const double ds = p[j] * (dp - di) * a->scale;
          double *dkj = FG_AT(dk, b, j, hk, Sk, Hk), *dvj = FG_AT(dv, b, j, hk, Sk, Hk);
          for (int d = 0; d < D; d++) {
            dqi[d] += ds * kj[d];
            dkj[d] += ds * qi[d];
            dvj[d] += p[j] * gi[d];
          }
        }
      }
    }
#undef FG_AT
#undef FG_IN
  free(q), free(k), free(v), free(g), free(p), free(o);
}
