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
 *   alibi_slopes: + slopes[b * alibi_batch_stride + h] * (j - i - d). */
typedef struct fg_ref_features {
  const int32_t *cu_seqlens_q, *cu_seqlens_k; /* host copies, batch + 1 (both or neither) */
  const int32_t *seqused_q, *seqused_k;       /* host copies, batch */
  int window, window_left, window_right;      /* as fagen_attention_features */
  double softcap;                             /* 0: off */
  const float *alibi_slopes;                  /* host copy */
  int64_t alibi_batch_stride;
} fg_ref_features;

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
 * tanh(s / softcap)); ALiBi adds no gradient terms. */
void fg_ref_attention_bwd(const fg_ref_args *a, const uint16_t *dout, fagen_strides dos,
                          double *dq, double *dk, double *dv);

#endif
