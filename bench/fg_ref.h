/* fg_ref: host-side helpers shared by the tests, the demo and the
 * benchmarks. */
#ifndef FG_REF_H
#define FG_REF_H

#include <stdint.h>

#include "fagen.h"

/* 16-bit floats on the host (round to nearest even). */
float fg_half_to_float(uint16_t h);
uint16_t fg_float_to_half(float f);
float fg_bf16_to_float(uint16_t h);
uint16_t fg_float_to_bf16(float f);
float fg_elem_to_float(fagen_dtype dt, uint16_t x);
uint16_t fg_elem_from_float(fagen_dtype dt, float f);

/* A fresh seed per run ($FAGEN_TEST_SEED replays one) and xorshift uniforms
 * in [-1, 1). */
uint64_t fg_rand_seed(void);
float fg_rand_uniform(uint64_t *state);

/* Masks and score modifiers of the reference: the values of
 * fagen_attention_features, with host copies of the arrays.  Semantics are
 * those of fagen.h (fagen_attention_features):
 *   lengths: packed (cu_seqlens_q and cu_seqlens_k, both or neither; batch + 1
 *     offsets; sequence b's row i is at (cu[b] + i) * seq_stride + h *
 *     head_stride, the batch stride ignored; at most seqlen rows a sequence)
 *     and/or padded (seqused_q, seqused_k: batch lengths clamped to
 *     [0, seqlen]; where given they override the packed length);
 *   window (0/1) with left/right extents (-1: unbounded): query i sees key j
 *     iff i + d - left <= j <= i + d + right, d = len_k - len_q; causal makes
 *     right = min(right, 0);
 *   softcap > 0: s = scale * q.k becomes softcap * tanh(s / softcap);
 *   alibi_slopes: + slopes[b * alibi_batch_stride + h] * (j - i - d);
 *   dropout_p > 0: P[i][j] of sequence b, head h is multiplied by
 *     fg_ref_dropout_factor (0, or 65536 / (65536 - p16) where kept); the
 *     lse stays that of the undropped scores. */
typedef struct fg_ref_features {
  const int32_t *cu_seqlens_q, *cu_seqlens_k; /* host copies, batch + 1 (both or neither) */
  const int32_t *seqused_q, *seqused_k;       /* host copies, batch */
  int window, window_left, window_right;      /* as fagen_attention_features */
  double softcap;                             /* 0: off */
  const float *alibi_slopes;                  /* host copy */
  int64_t alibi_batch_stride;
  double dropout_p; /* 0: off; as fagen_attention_features (a float there) */
  uint64_t dropout_seed, dropout_offset;
} fg_ref_features;

/* Philox4x32-10 (Salmon et al., Random123's philox4x32 with 10 rounds):
 * out = the 4 words of ctr under key. */
void fg_ref_philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* p16 = round(p * 65536) (halves away from zero), at most 65535; 0 for
 * p <= 0. */
uint32_t fg_ref_dropout_p16(double p);

/* The 16-bit random number r of element (bh, i, j) under seed and offset
 * (fagen.h: half j & 1 of word (j >> 3) & 3 of Philox4x32-10 with counter
 * {4 (j >> 5) + ((j >> 1) & 3), i, bh, offset_lo} and key {seed_lo,
 * seed_hi ^ offset_hi}); kept iff r >= p16. */
uint32_t fg_ref_dropout_random(uint64_t seed, uint64_t offset, int bh, int i, int j);

/* The dropout factor of P[i][j] of bh = b * heads_q + h (b the sequence, i
 * and j the query and key within it): 1 when f is NULL or f->dropout_p is
 * 0, else 0 (dropped) or 65536 / (65536 - p16) (kept). */
double fg_ref_dropout_factor(const fg_ref_features *f, int bh, int i, int j);

/* float64 reference attention over 16-bit inputs with the given element
 * strides.  o is [B, Sq, Hq, D] contiguous doubles, lse [B, Hq, Sq] (natural
 * log of the sum of exp of the final, capped and biased, scores).  Rows that
 * see no key get o = 0 and lse = -inf.  With feat, outputs keep this padded
 * view, indexed by the row within its sequence (packed inputs too); rows at
 * and past a sequence's length get o = 0 and lse = -inf. */
typedef struct fg_ref_args {
  fagen_dtype dtype;
  int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, causal;
  double scale;
  const uint16_t *q, *k, *v;
  fagen_strides qs, ks, vs;
  const fg_ref_features *feat; /* NULL: none */
} fg_ref_args;
void fg_ref_attention(const fg_ref_args *a, double *o, double *lse);

/* Sequence b's query and key lengths under a->feat (seqlen_q, seqlen_k
 * without it). */
void fg_ref_lengths(const fg_ref_args *a, int b, int *len_q, int *len_k);

/* Whether query row i of sequence b sees key j (the lengths, causal and the
 * window; i and j outside the sequence see nothing). */
int fg_ref_visible(const fg_ref_args *a, int b, int i, int j);

/* The reference for a single query row (b, h, i) (i: the row within its
 * sequence): o_row[D] and its lse. */
void fg_ref_row(const fg_ref_args *a, int b, int h, int i, double *o_row, double *lse);

/* float64 reference gradients of the attention of a for the output
 * gradient dout (16-bit, strides dos; packed like q under feat): dq [B, Sq,
 * Hq, D], dk and dv [B, Sk, Hkv, D], contiguous doubles in the padded view;
 * dk and dv sum over each query-head group.  Rows that see no key and rows
 * past a sequence's length contribute nothing and get zero gradients; the
 * softcap's derivative is exact (dS_raw = P (dP - D) (1 - t^2), t =
 * tanh(s / softcap)); ALiBi adds no gradient terms.  Dropout (factor z of
 * fg_ref_dropout_factor): dV_j = sum_i P_ij z_ij dO_i, dP_ij = z_ij dO_i.v_j
 * and D_i = dO_i.O_i with O the dropped output. */
void fg_ref_attention_bwd(const fg_ref_args *a, const uint16_t *dout, fagen_strides dos,
                          double *dq, double *dk, double *dv);

#endif
