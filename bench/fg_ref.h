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

/* float64 reference attention over 16-bit inputs with the given element
 * strides.  o is [B, Sq, Hq, D] contiguous doubles, lse [B, Hq, Sq] (natural
 * log).  Rows that see no key get o = 0 and lse = -inf. */
typedef struct fg_ref_args {
  fagen_dtype dtype;
  int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, causal;
  double scale;
  const uint16_t *q, *k, *v;
  fagen_strides qs, ks, vs;
} fg_ref_args;
void fg_ref_attention(const fg_ref_args *a, double *o, double *lse);

/* The reference for a single query row (b, h, i): o_row[D] and its lse. */
void fg_ref_row(const fg_ref_args *a, int b, int h, int i, double *o_row, double *lse);

/* float64 reference gradients of the attention of a for the output
 * gradient dout (16-bit, strides dos): dq [B, Sq, Hq, D], dk and dv
 * [B, Sk, Hkv, D], contiguous doubles; dk and dv sum over each query-head
 * group.  Rows that see no key contribute nothing. */
void fg_ref_attention_bwd(const fg_ref_args *a, const uint16_t *dout, fagen_strides dos,
                          double *dq, double *dk, double *dv);

#endif
