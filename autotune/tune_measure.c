#include "tune_measure.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_ref.h"

int tm_is_backward(fagen_op op) {
  return op == FAGEN_OP_BWD || op == FAGEN_OP_BWD_DET || op == FAGEN_OP_BWD_WGMMA;
}

void tm_feature_opts(const tm_shape *s, fg_feature_opts *fo) {
  memset(fo, 0, sizeof *fo);
  if (s->features & FAGEN_FEATURE_VARLEN) fo->varlen = FG_VARLEN_MIXED;
  if (s->features & FAGEN_FEATURE_WINDOW) {
    fo->window = 1;
    fo->window_left = s->seqlen / 4;
    fo->window_right = s->causal ? 0 : s->seqlen / 4;
  }
  if (s->features & FAGEN_FEATURE_SOFTCAP) fo->softcap = 30.f;
  if (s->features & FAGEN_FEATURE_ALIBI) fo->alibi = 1;
  if (s->features & FAGEN_FEATURE_DROPOUT) fo->dropout = 0.1f;
}

/* The fg_case of s's op (forward or backward) and features, `batch`
 * sequences of seqlen tokens (host state only). */
static int feature_case(const tm_shape *s, int batch, int seqlen, int heads, fg_case *c,
                        char *err, size_t errsize) {
  fg_feature_opts fo;
  tm_shape at = *s;
  at.seqlen = seqlen; /* the window scales with the sequences */
  tm_feature_opts(&at, &fo);
  return fg_case_init(c, tm_is_backward(s->op) ? FG_MODE_BWD : FG_MODE_FWD,
                      s->op == FAGEN_OP_BWD_DET, s->dtype, batch, seqlen, heads, s->head_dim,
                      s->causal, &fo, err, errsize);
}

/* Frees what fg_case_init allocated (no CUDA call: --heuristic-table runs
 * without a GPU). */
static void case_free_host(fg_case *c) {
  free(c->cu);
  free(c->used);
  free(c->slopes);
  memset(c, 0, sizeof *c);
}

int tm_select_heuristic(fagen_ctx *ctx, const fagen_device_class *dc, const tm_shape *s,
                    fagen_variant *out, char *err, size_t errsize) {
  fagen_device_class anon = *dc;
  anon.name[0] = '\0'; /* an anonymous class has no tables: the heuristic */
  fg_cell cell;
  fg_cell_standard(&cell, s->dtype, s->head_dim, s->seqlen, s->causal);
  fagen_status st;
  if (tm_is_backward(s->op) || s->features) {
    fg_case c;
    if (feature_case(s, cell.B, s->seqlen, cell.Hq, &c, err, errsize) != 0) {
      case_free_host(&c);
      return -1;
    }
    /* The select reads which features the call has from its pointers (not
       their contents): stand-ins where the case has host arrays only. */
    static int32_t stand_in;
    if (c.cu) c.d_cu = &stand_in;
    if (c.slopes) c.d_slopes = (float *)&stand_in;
    st = fg_case_select(ctx, &c, &anon, out, NULL);
    case_free_host(&c);
  } else {
    fagen_attention_args a;
    fg_cell_args(&cell, 0, NULL, &a);
    st = fagen_attention_select(ctx, &a, &anon, out, NULL);
  }
  if (st != FAGEN_OK) {
    snprintf(err, errsize, "%s", fagen_errmsg(ctx));
    return -1;
  }
  return 0;
}

/* ---- the check ------------------------------------------------------------ */

static double rel_err(fagen_dtype dt, const uint16_t *got, const uint16_t *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double a = fg_elem_to_float(dt, got[i]), b = fg_elem_to_float(dt, ref[i]);
    if (isnan(a)) return INFINITY;
    num += (a - b) * (a - b);
    den += b * b;
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The reference check's limit on the largest relative error (fagen-bench's). */
static double reference_limit(const tm_check *k) {
  return k->dtype == FAGEN_DTYPE_BF16 ? 1e-2 : k->backward ? 5e-3 : 2e-3;
}

int tm_check_open(tm_check *k, fagen_ctx *ctx, const tm_shape *s, const fagen_variant *deflt,
                  uint64_t *rng, char *err, size_t errsize) {
  memset(k, 0, sizeof *k);
  k->backward = tm_is_backward(s->op);
  k->features = s->features != 0;
  k->dtype = s->dtype;
  if (k->features) {
    k->rng = *rng;
    if (feature_case(s, 2, 333, 4, &k->bc, err, errsize) != 0) return -1;
    k->n = (size_t)k->bc.rows * k->bc.heads * k->bc.head_dim;
    if (fg_inputs_alloc(&k->in, s->dtype, k->n, rng, err, errsize) != 0 ||
        fg_case_alloc(ctx, &k->bc, &k->in, err, errsize) != 0)
      return -1;
    const double e = fg_case_check(ctx, &k->bc, deflt, &k->rng, err, errsize);
    if (e < 0) return -1;
    if (!(e < reference_limit(k))) {
      snprintf(err, errsize, "relative error %.3g against the float64 reference (limit %g)", e,
               reference_limit(k));
      return -1;
    }
    return 0;
  }
  if (!k->backward) {
    k->cell.dtype = s->dtype;
    k->cell.B = 2, k->cell.Sq = 333, k->cell.Sk = 257, k->cell.Hq = 4, k->cell.Hkv = 2;
    k->cell.D = s->head_dim, k->cell.causal = s->causal;
    if (fg_cell_alloc(&k->cell, rng, 0, err, errsize) != 0) return -1;
    k->n = k->cell.nq;
    if (!(k->ref[0] = malloc(k->n * 2))) {
      snprintf(err, errsize, "out of host memory");
      return -1;
    }
    return fg_cell_run(ctx, &k->cell, deflt, k->ref[0], err, errsize);
  }
  if (feature_case(s, 2, 333, 4, &k->bc, err, errsize) != 0) return -1;
  k->n = (size_t)k->bc.rows * k->bc.heads * k->bc.head_dim;
  if (fg_inputs_alloc(&k->in, s->dtype, k->n, rng, err, errsize) != 0 ||
      fg_case_alloc(ctx, &k->bc, &k->in, err, errsize) != 0)
    return -1;
  return fg_case_backward_grads(ctx, &k->bc, deflt, k->ref, err, errsize);
}

int tm_check_agrees(tm_check *k, fagen_ctx *ctx, const fagen_variant *v) {
  char err[1024];
  const int bf16 = k->dtype == FAGEN_DTYPE_BF16;
  if (k->features) {
    const double e = fg_case_check(ctx, &k->bc, v, &k->rng, err, sizeof err);
    return e >= 0 && e < reference_limit(k);
  }
  if (!k->backward) {
    uint16_t *o = malloc(k->n * 2);
    int ok = o && fg_cell_run(ctx, &k->cell, v, o, err, sizeof err) == 0 &&
             rel_err(k->dtype, o, k->ref[0], k->n) < (bf16 ? 2e-2 : 4e-3);
    free(o);
    return ok;
  }
  uint16_t *got[3];
  if (fg_case_backward_grads(ctx, &k->bc, v, got, err, sizeof err) != 0) return 0;
  int ok = 1;
  for (int g = 0; g < 3; g++) {
    ok = ok && rel_err(k->dtype, got[g], k->ref[g], k->n) < (bf16 ? 2e-2 : 1e-2);
    free(got[g]);
  }
  return ok;
}

void tm_check_close(tm_check *k) {
  for (int g = 0; g < 3; g++) free(k->ref[g]);
  if (k->backward || k->features) {
    fg_case_free(&k->bc);
    fg_inputs_free(&k->in);
  } else {
    fg_cell_free(&k->cell);
  }
  memset(k, 0, sizeof *k);
}

/* ---- timing --------------------------------------------------------------- */

#define TM_ELEMS ((size_t)16384 * 2048)

int tm_time(fagen_ctx *ctx, tm_inputs *in, const tm_shape *s, const fagen_variant *const *v, int n,
            int warmup, int reps, uint64_t *rng, double *ms, char *err, size_t errsize) {
  const int t = s->dtype == FAGEN_DTYPE_BF16 ? 0 : 1;
  fg_cell cell;
  fg_cell_standard(&cell, s->dtype, s->head_dim, s->seqlen, s->causal);
  if (!tm_is_backward(s->op) && !s->features) {
    fg_buffers *b = &in->fwd[t];
    if (!b->n && fg_buffers_alloc(b, s->dtype, TM_ELEMS, rng, err, errsize) != 0) return -1;
    if (fg_cell_use(&cell, b) != 0) {
      snprintf(err, errsize, "the case does not fit the shared buffers");
      return -1;
    }
    return fg_cell_time_many(ctx, &cell, v, n, warmup, reps, ms, err, errsize);
  }
  fg_inputs *bi = &in->bwd[t];
  if (!bi->n && fg_inputs_alloc(bi, s->dtype, TM_ELEMS, rng, err, errsize) != 0) return -1;
  fg_case c;
  if (feature_case(s, cell.B, s->seqlen, cell.Hq, &c, err, errsize) != 0) {
    case_free_host(&c);
    return -1;
  }
  const fg_case **cs = malloc(sizeof *cs * (size_t)(n > 0 ? n : 1));
  int rc = cs ? fg_case_alloc(ctx, &c, bi, err, errsize) : -1;
  if (!cs) snprintf(err, errsize, "out of host memory");
  for (int i = 0; rc == 0 && i < n; i++) cs[i] = &c; /* every candidate on the same buffers */
  if (rc == 0) rc = fg_case_time_many(ctx, cs, v, n, warmup, reps, ms, err, errsize);
  free(cs);
  fg_case_free(&c);
  return rc;
}

void tm_inputs_free(tm_inputs *in) {
  for (int t = 0; t < 2; t++) {
    fg_buffers_free(&in->fwd[t]);
    fg_inputs_free(&in->bwd[t]);
  }
}

double tm_flops(const tm_shape *s) {
  fg_cell cell;
  fg_cell_standard(&cell, s->dtype, s->head_dim, s->seqlen, s->causal);
  if (s->features) {
    fg_case c;
    char err[256];
    double f = 0;
    if (feature_case(s, cell.B, s->seqlen, cell.Hq, &c, err, sizeof err) == 0) f = fg_case_flops(&c);
    case_free_host(&c);
    return f;
  }
  return fg_cell_flops(&cell) * (tm_is_backward(s->op) ? 2.5 : 1.0);
}
