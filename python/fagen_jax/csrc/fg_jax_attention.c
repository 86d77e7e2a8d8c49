/*
 * fg_jax_attention.c — XLA FFI handlers for fagen's attention forward and
 * backward, registered from Python (python/fagen_jax) through ctypes and
 * jax.ffi.register_ffi_target(name, {"instantiate": ..., "execute": ...}).
 *
 * Stages: INSTANTIATE selects the variant for the call's static sizes (given
 * as attributes, since arguments are not visible there) and compiles and
 * loads it (fagen_prepare), so that EXECUTE only launches: XLA may capture
 * EXECUTE into a CUDA graph, where a first-time compile would be wrong.
 * EXECUTE reads sizes from the buffers themselves (a partitioned or vmapped
 * call sees other leading dims than the attributes say) and launches on the
 * stream XLA hands over.
 *
 * Layouts (row-major, as XLA gives them to custom calls by default):
 *   q, o, dout, dq   [lead..., seqlen_q, heads_q, head_dim]
 *   k, v, dk, dv     [lead..., seqlen_k, heads_kv, head_dim]
 *   lse              [lead..., heads_q, seqlen_q] fp32
 *   workspace        uint8, at least fagen_attention_backward_workspace() bytes
 *   seqused_q/_k     int32 [lead...] (optional; attributes has_seqused_q/_k)
 *   alibi_slopes     fp32 [lead..., heads_q] or [heads_q] (optional; has_alibi)
 * where lead... is one or more leading dims folded into fagen's batch.
 *
 * Packed sequences (attribute packed = 1): q, o, dout, dq are [1, total_q,
 * heads_q, head_dim], k, v, dk, dv [1, total_k, heads_kv, head_dim], followed
 * by cu_seqlens_q and cu_seqlens_k (int32 [n_seq + 1] each) after the
 * optional length arrays; the batch is n_seq, seqlen_q / seqlen_k are the
 * attributes (the longest sequence), lse is fp32 [n_seq, heads_q, seqlen_q]
 * and the length arrays and slopes have n_seq rows.  Argument order after the
 * tensors: [seqused_q] [seqused_k] [cu_seqlens_q cu_seqlens_k] [alibi_slopes].
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fg_jax_attention.h"

#include "fagen.h"
#include "fg_xla.h"

/* Every handler may be captured into a command buffer (CUDA graph): EXECUTE
 * launches the same kernels for the same attributes and allocates nothing. */
#define FG_JAX_TRAITS XLA_FFI_HANDLER_TRAITS_COMMAND_BUFFER_COMPATIBLE

/* One fagen context for the process: its loaded kernels serve every call. */
static fagen_ctx *fg_jax_ctx;
static fagen_status fg_jax_ctx_status;
static pthread_once_t fg_jax_once = PTHREAD_ONCE_INIT;

static void fg_jax_ctx_init(void) { fg_jax_ctx_status = fagen_ctx_create(&fg_jax_ctx); }

static fagen_ctx *fg_jax_context(void) {
  pthread_once(&fg_jax_once, fg_jax_ctx_init);
  return fg_jax_ctx_status == FAGEN_OK ? fg_jax_ctx : NULL;
}

/* A fagen failure as an XLA error with fagen's message (this thread's). */
static XLA_FFI_Error *fg_jax_fail(const XLA_FFI_CallFrame *frame, const char *what,
                                  fagen_status st) {
  XLA_FFI_Error_Code code = XLA_FFI_Error_Code_INTERNAL;
  switch (st) {
  case FAGEN_E_INVALID_ARGUMENT: case FAGEN_E_NULL_POINTER: case FAGEN_E_MISALIGNED:
  case FAGEN_E_BAD_STRIDE: case FAGEN_E_BAD_SHAPE: case FAGEN_E_BAD_HEADS:
  case FAGEN_E_UNSUPPORTED_DTYPE: case FAGEN_E_UNSUPPORTED_HEAD_DIM:
  case FAGEN_E_BUFFER_TOO_SMALL:
    code = XLA_FFI_Error_Code_INVALID_ARGUMENT;
    break;
  case FAGEN_E_NO_DRIVER: case FAGEN_E_NO_DEVICE: case FAGEN_E_NO_NVRTC:
  case FAGEN_E_UNSUPPORTED_ARCH:
    code = XLA_FFI_Error_Code_FAILED_PRECONDITION;
    break;
  default:
    break;
  }
  return fg_xla_error(frame->api, code, "fagen_jax: %s: %s: %s", what, fagen_status_name(st),
                      fagen_last_error());
}

#define FG_TRY(expr)                     \
  do {                                   \
    XLA_FFI_Error *fg_e_ = (expr);       \
    if (fg_e_) return fg_e_;             \
  } while (0)

/* The common opening of every handler: frame checks, the metadata query,
 * the stage, fagen's context. */
static XLA_FFI_Error *fg_jax_enter(XLA_FFI_CallFrame *frame, XLA_FFI_ExecutionStage stage,
                                   fagen_ctx **ctx, int *done) {
  *done = 0;
  *ctx = NULL;
  FG_TRY(fg_xla_check_frame(frame));
  XLA_FFI_Error *e;
  if (fg_xla_metadata(frame, FG_JAX_TRAITS, &e)) {
    *done = 1;
    return e;
  }
  if (frame->stage != stage)
    return fg_xla_error(frame->api, XLA_FFI_Error_Code_INTERNAL,
                        "fagen_jax: handler for stage %d called in stage %d", (int)stage,
                        (int)frame->stage);
  *ctx = fg_jax_context();
  if (!*ctx) return fg_jax_fail(frame, "fagen_ctx_create", fg_jax_ctx_status);
  return NULL;
}

/* Attributes every call carries (Python's _attrs()). */
typedef struct fg_jax_attrs {
  int causal, deterministic, has_seqused_q, has_seqused_k, window, window_left, window_right;
  int packed, total_q, total_k, has_alibi, seqlen_q_max, seqlen_k_max;
  float scale, softcap, dropout_p;
  uint64_t dropout_seed, dropout_offset;
} fg_jax_attrs;

static XLA_FFI_Error *fg_jax_int_attr(const XLA_FFI_CallFrame *f, const char *name, int *out) {
  int64_t v;
  FG_TRY(fg_xla_attr_i64(f, name, &v));
  if (v < INT32_MIN || v > INT32_MAX)
    return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: attribute '%s' = %lld does not fit an int", name,
                        (long long)v);
  *out = (int)v;
  return NULL;
}

static XLA_FFI_Error *fg_jax_read_attrs(const XLA_FFI_CallFrame *f, fg_jax_attrs *a) {
  double scale, softcap, dropout_p;
  int64_t seed, offset;
  FG_TRY(fg_jax_int_attr(f, "causal", &a->causal));
  FG_TRY(fg_jax_int_attr(f, "deterministic", &a->deterministic));
  FG_TRY(fg_jax_int_attr(f, "has_seqused_q", &a->has_seqused_q));
  FG_TRY(fg_jax_int_attr(f, "has_seqused_k", &a->has_seqused_k));
  FG_TRY(fg_jax_int_attr(f, "window", &a->window));
  FG_TRY(fg_jax_int_attr(f, "window_left", &a->window_left));
  FG_TRY(fg_jax_int_attr(f, "window_right", &a->window_right));
  FG_TRY(fg_xla_attr_f64(f, "scale", &scale));
  FG_TRY(fg_xla_attr_f64(f, "softcap", &softcap));
  FG_TRY(fg_jax_int_attr(f, "packed", &a->packed));
  FG_TRY(fg_jax_int_attr(f, "total_q", &a->total_q));
  FG_TRY(fg_jax_int_attr(f, "total_k", &a->total_k));
  FG_TRY(fg_jax_int_attr(f, "has_alibi", &a->has_alibi));
  FG_TRY(fg_jax_int_attr(f, "seqlen_q", &a->seqlen_q_max));
  FG_TRY(fg_jax_int_attr(f, "seqlen_k", &a->seqlen_k_max));
  FG_TRY(fg_xla_attr_f64(f, "dropout_p", &dropout_p));
  /* 64-bit seed and offset travel as int64 bit patterns */
  FG_TRY(fg_xla_attr_i64(f, "dropout_seed", &seed));
  FG_TRY(fg_xla_attr_i64(f, "dropout_offset", &offset));
  a->scale = (float)scale;
  a->softcap = (float)softcap;
  a->dropout_p = (float)dropout_p;
  a->dropout_seed = (uint64_t)seed;
  a->dropout_offset = (uint64_t)offset;
  return NULL;
}

/* Sizes of one call: the attributes' (instantiate) or the buffers' (execute). */
typedef struct fg_jax_sizes {
  fagen_dtype dtype;
  int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
} fg_jax_sizes;

static XLA_FFI_Error *fg_jax_attr_sizes(const XLA_FFI_CallFrame *f, fg_jax_sizes *s) {
  int dtype = 0;
  FG_TRY(fg_jax_int_attr(f, "dtype", &dtype));
  FG_TRY(fg_jax_int_attr(f, "batch", &s->batch));
  FG_TRY(fg_jax_int_attr(f, "seqlen_q", &s->seqlen_q));
  FG_TRY(fg_jax_int_attr(f, "seqlen_k", &s->seqlen_k));
  FG_TRY(fg_jax_int_attr(f, "heads_q", &s->heads_q));
  FG_TRY(fg_jax_int_attr(f, "heads_kv", &s->heads_kv));
  FG_TRY(fg_jax_int_attr(f, "head_dim", &s->head_dim));
  s->dtype = (fagen_dtype)dtype;
  return NULL;
}

static const char *fg_jax_dims_str(const XLA_FFI_Buffer *b, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = 0;
  for (int64_t i = 0; i < b->rank && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "",
                             (long long)b->dims[i]);
  return buf;
}

/* b must have exactly the dims of ref (name it in the error). */
static XLA_FFI_Error *fg_jax_same_dims(const XLA_FFI_CallFrame *f, const char *name,
                                       const XLA_FFI_Buffer *b, const XLA_FFI_Buffer *ref) {
  int same = b->rank == ref->rank && b->dtype == ref->dtype;
  for (int64_t i = 0; same && i < b->rank; i++) same = b->dims[i] == ref->dims[i];
  if (same) return NULL;
  char x[128], y[128];
  return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                      "fagen_jax: %s has dims [%s] (type %d), expected [%s] (type %d)", name,
                      fg_jax_dims_str(b, x, sizeof x), (int)b->dtype,
                      fg_jax_dims_str(ref, y, sizeof y), (int)ref->dtype);
}

/* Sizes from q [lead..., Sq, Hq, D] and k [lead..., Sk, Hkv, D]; v as k. */
static XLA_FFI_Error *fg_jax_buffer_sizes(const XLA_FFI_CallFrame *f, const XLA_FFI_Buffer *q,
                                          const XLA_FFI_Buffer *k, const XLA_FFI_Buffer *v,
                                          fg_jax_sizes *s) {
  char x[128], y[128];
  int64_t r = q->rank;
  int ok = r >= 4 && k->rank == r && q->dims[r - 1] == k->dims[r - 1] && q->dtype == k->dtype;
  for (int64_t i = 0; ok && i < r - 3; i++) ok = q->dims[i] == k->dims[i];
  if (!ok)
    return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: q [%s] and k [%s] must be [lead..., seq, heads, head_dim] "
                        "with the same leading dims, head_dim and type",
                        fg_jax_dims_str(q, x, sizeof x), fg_jax_dims_str(k, y, sizeof y));
  FG_TRY(fg_jax_same_dims(f, "v", v, k));
  if (q->dtype == XLA_FFI_DataType_BF16)
    s->dtype = FAGEN_DTYPE_BF16;
  else if (q->dtype == XLA_FFI_DataType_F16)
    s->dtype = FAGEN_DTYPE_FP16;
  else
    return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: q has XLA type %d; fagen takes bfloat16 or float16",
                        (int)q->dtype);
  int64_t batch = fg_xla_dims_product(q, 0, r - 3);
  int64_t dims[] = {batch, q->dims[r - 3], k->dims[r - 3], q->dims[r - 2], k->dims[r - 2],
                    q->dims[r - 1]};
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
    if (dims[i] > 0x7fffffff)
      return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                          "fagen_jax: a size of q [%s] exceeds 2^31-1",
                          fg_jax_dims_str(q, x, sizeof x));
  s->batch = (int)dims[0];
  s->seqlen_q = (int)dims[1];
  s->seqlen_k = (int)dims[2];
  s->heads_q = (int)dims[3];
  s->heads_kv = (int)dims[4];
  s->head_dim = (int)dims[5];
  return NULL;
}

/* lse must be fp32 [lead..., Hq, Sq] with q's leading dims; packed: fp32
 * [batch, Hq, seqlen_q] (the sizes s already has). */
static XLA_FFI_Error *fg_jax_check_lse(const XLA_FFI_CallFrame *f, const XLA_FFI_Buffer *lse,
                                       const XLA_FFI_Buffer *q, const fg_jax_attrs *at,
                                       const fg_jax_sizes *s) {
  int64_t r = q->rank;
  int ok;
  if (at->packed) {
    ok = lse->rank == 3 && lse->dtype == XLA_FFI_DataType_F32 && lse->dims[0] == s->batch &&
         lse->dims[1] == s->heads_q && lse->dims[2] == s->seqlen_q;
  } else {
    ok = lse->rank == r - 1 && lse->dtype == XLA_FFI_DataType_F32 &&
         lse->dims[r - 3] == q->dims[r - 2] && lse->dims[r - 2] == q->dims[r - 3];
    for (int64_t i = 0; ok && i < r - 3; i++) ok = lse->dims[i] == q->dims[i];
  }
  if (ok) return NULL;
  char x[128];
  return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                      "fagen_jax: lse has dims [%s]; expected float32 %s",
                      fg_jax_dims_str(lse, x, sizeof x),
                      at->packed ? "[n_seq, heads_q, max_seqlen_q]"
                                 : "[lead..., heads_q, seqlen_q]");
}

/* The optional buffers after the tensors (from argument `next` on). */
typedef struct fg_jax_extras {
  const int32_t *seqused_q, *seqused_k, *cu_q, *cu_k;
  const float *alibi;
  int64_t alibi_stride;
} fg_jax_extras;

/* An int32 buffer of exactly n entries (any rank), or an error naming it. */
static XLA_FFI_Error *fg_jax_int32s(const XLA_FFI_CallFrame *f, int64_t i, const char *name,
                                    int64_t n, const int32_t **out) {
  XLA_FFI_Buffer *b;
  FG_TRY(fg_xla_arg(f, i, &b));
  if (b->dtype != XLA_FFI_DataType_S32 || fg_xla_dims_product(b, 0, b->rank) != n)
    return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: %s must be int32 with %lld entries", name, (long long)n);
  *out = (const int32_t *)b->data;
  return NULL;
}

/* Reads the optional buffers and, when packed, turns s (sizes of q [1, total_q,
 * ...] and k) into the packed call's: batch n_seq from the offsets, seqlen_q /
 * seqlen_k the attributes' longest sequence; *total_q / *total_k the rows. */
static XLA_FFI_Error *fg_jax_read_extras(const XLA_FFI_CallFrame *f, const fg_jax_attrs *at,
                                         int64_t next, fg_jax_sizes *s, int *total_q,
                                         int *total_k, fg_jax_extras *x) {
  memset(x, 0, sizeof *x);
  *total_q = *total_k = 0;
  int64_t n_len = s->batch, arg = next + (at->has_seqused_q != 0) + (at->has_seqused_k != 0);
  if (at->packed) {
    XLA_FFI_Buffer *cq, *ck;
    FG_TRY(fg_xla_arg(f, arg, &cq));
    FG_TRY(fg_xla_arg(f, arg + 1, &ck));
    int64_t nq = fg_xla_dims_product(cq, 0, cq->rank), nk = fg_xla_dims_product(ck, 0, ck->rank);
    if (s->batch != 1 || nq < 1 || nq != nk || nq - 1 > 0x7fffffff ||
        cq->dtype != XLA_FFI_DataType_S32 || ck->dtype != XLA_FFI_DataType_S32)
      return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                          "fagen_jax: packed call: q and k need one leading dim of 1 (got %d) "
                          "and cu_seqlens_q / cu_seqlens_k int32 of one length n_seq + 1 "
                          "(got %lld and %lld)",
                          s->batch, (long long)nq, (long long)nk);
    x->cu_q = (const int32_t *)cq->data;
    x->cu_k = (const int32_t *)ck->data;
    *total_q = s->seqlen_q;
    *total_k = s->seqlen_k;
    s->batch = (int)(nq - 1);
    s->seqlen_q = at->seqlen_q_max;
    s->seqlen_k = at->seqlen_k_max;
    n_len = s->batch;
    arg += 2;
  }
  if (at->has_seqused_q)
    FG_TRY(fg_jax_int32s(f, next++, "query_seq_lengths", n_len, &x->seqused_q));
  if (at->has_seqused_k)
    FG_TRY(fg_jax_int32s(f, next++, "key_value_seq_lengths", n_len, &x->seqused_k));
  if (at->has_alibi) {
    XLA_FFI_Buffer *b;
    FG_TRY(fg_xla_arg(f, arg, &b));
    int64_t n = fg_xla_dims_product(b, 0, b->rank);
    if (b->dtype != XLA_FFI_DataType_F32 ||
        (n != s->heads_q && n != (int64_t)s->batch * s->heads_q))
      return fg_xla_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                          "fagen_jax: alibi_slopes must be float32 with heads_q (%d) or batch x "
                          "heads_q (%lld) entries, got %lld",
                          s->heads_q, (long long)s->batch * s->heads_q, (long long)n);
    x->alibi = (const float *)b->data;
    x->alibi_stride = n == s->heads_q ? 0 : s->heads_q;
  }
  return NULL;
}

/* The features of attributes at and the optional buffers x; total_q/_k are
 * the packed buffers' rows. */
static void fg_jax_features(fagen_attention_features *ft, const fg_jax_attrs *at,
                            const fg_jax_extras *x, int total_q, int total_k) {
  memset(ft, 0, sizeof *ft);
  ft->seqused_q = x->seqused_q;
  ft->seqused_k = x->seqused_k;
  ft->cu_seqlens_q = x->cu_q;
  ft->cu_seqlens_k = x->cu_k;
  ft->total_q = x->cu_q ? total_q : 0;
  ft->total_k = x->cu_k ? total_k : 0;
  ft->window = at->window;
  ft->window_left = at->window_left;
  ft->window_right = at->window_right;
  ft->softcap = at->softcap;
  ft->alibi_slopes = x->alibi;
  ft->alibi_batch_stride = x->alibi_stride;
  ft->dropout_p = at->dropout_p;
  ft->dropout_seed = at->dropout_seed;
  ft->dropout_offset = at->dropout_offset;
}

/* In INSTANTIATE no buffer exists: selection only needs to know which
 * optional arrays the call will pass, so stand-ins mark them (never
 * dereferenced). */
static const int32_t fg_jax_marker[4] __attribute__((aligned(16)));
static const float fg_jax_fmarker[4] __attribute__((aligned(16)));

static void fg_jax_marker_extras(const fg_jax_attrs *at, fg_jax_extras *x) {
  memset(x, 0, sizeof *x);
  x->seqused_q = at->has_seqused_q ? fg_jax_marker : NULL;
  x->seqused_k = at->has_seqused_k ? fg_jax_marker : NULL;
  x->cu_q = x->cu_k = at->packed ? fg_jax_marker : NULL;
  x->alibi = at->has_alibi ? fg_jax_fmarker : NULL;
}

/* The fields fagen_attention_args and fagen_attention_bwd_args share. */
#define FG_JAX_SET_COMMON(a, s, at)  \
  do {                               \
    (a)->dtype = (s)->dtype;         \
    (a)->batch = (s)->batch;         \
    (a)->seqlen_q = (s)->seqlen_q;   \
    (a)->seqlen_k = (s)->seqlen_k;   \
    (a)->heads_q = (s)->heads_q;     \
    (a)->heads_kv = (s)->heads_kv;   \
    (a)->head_dim = (s)->head_dim;   \
    (a)->causal = (at)->causal;      \
    (a)->softmax_scale = (at)->scale; \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Forward                                                                  */
/* ------------------------------------------------------------------------ */

static void fg_jax_fwd_args(fagen_attention_args *a, const fg_jax_sizes *s,
                            const fg_jax_attrs *at) {
  fagen_attention_args_init(a);
  FG_JAX_SET_COMMON(a, s, at);
}

FG_JAX_API XLA_FFI_Error *fagen_jax_fwd_execute(XLA_FFI_CallFrame *frame) {
  fagen_ctx *ctx = NULL;
  int done;
  FG_TRY(fg_jax_enter(frame, XLA_FFI_ExecutionStage_EXECUTE, &ctx, &done));
  if (done) return NULL;
  fg_jax_attrs at;
  FG_TRY(fg_jax_read_attrs(frame, &at));
  XLA_FFI_Buffer *q, *k, *v, *o, *lse;
  FG_TRY(fg_xla_arg(frame, 0, &q));
  FG_TRY(fg_xla_arg(frame, 1, &k));
  FG_TRY(fg_xla_arg(frame, 2, &v));
  FG_TRY(fg_xla_ret(frame, 0, &o));
  FG_TRY(fg_xla_ret(frame, 1, &lse));
  fg_jax_sizes s;
  FG_TRY(fg_jax_buffer_sizes(frame, q, k, v, &s));
  FG_TRY(fg_jax_same_dims(frame, "o", o, q));
  fg_jax_extras x;
  int total_q, total_k;
  FG_TRY(fg_jax_read_extras(frame, &at, 3, &s, &total_q, &total_k, &x));
  FG_TRY(fg_jax_check_lse(frame, lse, q, &at, &s));
  void *stream;
  FG_TRY(fg_xla_stream(frame, &stream));

  fagen_attention_args a;
  fg_jax_fwd_args(&a, &s, &at);
  fg_jax_features(&a.feat, &at, &x, total_q, total_k);
  a.q = q->data;
  a.k = k->data;
  a.v = v->data;
  a.o = o->data;
  a.lse = (float *)lse->data;
  fagen_status st = fagen_attention_forward(ctx, &a, stream);
  return st == FAGEN_OK ? NULL : fg_jax_fail(frame, "fagen_attention_forward", st);
}

/* ------------------------------------------------------------------------ */
/* Backward                                                                 */
/* ------------------------------------------------------------------------ */

static void fg_jax_bwd_args(fagen_attention_bwd_args *a, const fg_jax_sizes *s,
                            const fg_jax_attrs *at) {
  fagen_attention_bwd_args_init(a);
  FG_JAX_SET_COMMON(a, s, at);
  a->deterministic = at->deterministic;
}

/* INSTANTIATE of either direction: select the variant for the attributes'
 * sizes, then compile and load it. */
static XLA_FFI_Error *fg_jax_instantiate(XLA_FFI_CallFrame *frame, int backward) {
  fagen_ctx *ctx = NULL;
  int done;
  FG_TRY(fg_jax_enter(frame, XLA_FFI_ExecutionStage_INSTANTIATE, &ctx, &done));
  if (done) return NULL;
  fg_jax_attrs at;
  fg_jax_sizes s;
  FG_TRY(fg_jax_read_attrs(frame, &at));
  FG_TRY(fg_jax_attr_sizes(frame, &s));
  fg_jax_extras x;
  fg_jax_marker_extras(&at, &x);
  fagen_variant v;
  fagen_status st;
  const char *what;
  if (backward) {
    fagen_attention_bwd_args a;
    fg_jax_bwd_args(&a, &s, &at);
    fg_jax_features(&a.feat, &at, &x, at.total_q, at.total_k);
    st = fagen_attention_backward_select(ctx, &a, NULL, &v, NULL);
    what = "fagen_attention_backward_select";
  } else {
    fagen_attention_args a;
    fg_jax_fwd_args(&a, &s, &at);
    fg_jax_features(&a.feat, &at, &x, at.total_q, at.total_k);
    st = fagen_attention_select(ctx, &a, NULL, &v, NULL);
    what = "fagen_attention_select";
  }
  if (st != FAGEN_OK) return fg_jax_fail(frame, what, st);
  st = fagen_prepare(ctx, &v, 1);
  return st == FAGEN_OK ? NULL : fg_jax_fail(frame, "fagen_prepare", st);
}

FG_JAX_API XLA_FFI_Error *fagen_jax_fwd_instantiate(XLA_FFI_CallFrame *frame) {
  return fg_jax_instantiate(frame, 0);
}

FG_JAX_API XLA_FFI_Error *fagen_jax_bwd_instantiate(XLA_FFI_CallFrame *frame) {
  return fg_jax_instantiate(frame, 1);
}

FG_JAX_API XLA_FFI_Error *fagen_jax_bwd_execute(XLA_FFI_CallFrame *frame) {
  fagen_ctx *ctx = NULL;
  int done;
  FG_TRY(fg_jax_enter(frame, XLA_FFI_ExecutionStage_EXECUTE, &ctx, &done));
  if (done) return NULL;
  fg_jax_attrs at;
  FG_TRY(fg_jax_read_attrs(frame, &at));
  XLA_FFI_Buffer *q, *k, *v, *o, *lse, *dout, *dq, *dk, *dv, *ws;
  FG_TRY(fg_xla_arg(frame, 0, &q));
  FG_TRY(fg_xla_arg(frame, 1, &k));
  FG_TRY(fg_xla_arg(frame, 2, &v));
  FG_TRY(fg_xla_arg(frame, 3, &o));
  FG_TRY(fg_xla_arg(frame, 4, &lse));
  FG_TRY(fg_xla_arg(frame, 5, &dout));
  FG_TRY(fg_xla_ret(frame, 0, &dq));
  FG_TRY(fg_xla_ret(frame, 1, &dk));
  FG_TRY(fg_xla_ret(frame, 2, &dv));
  FG_TRY(fg_xla_ret(frame, 3, &ws));
  fg_jax_sizes s;
  FG_TRY(fg_jax_buffer_sizes(frame, q, k, v, &s));
  FG_TRY(fg_jax_same_dims(frame, "o", o, q));
  FG_TRY(fg_jax_same_dims(frame, "dout", dout, q));
  FG_TRY(fg_jax_same_dims(frame, "dq", dq, q));
  FG_TRY(fg_jax_same_dims(frame, "dk", dk, k));
  FG_TRY(fg_jax_same_dims(frame, "dv", dv, k));
  fg_jax_extras x;
  int total_q, total_k;
  FG_TRY(fg_jax_read_extras(frame, &at, 6, &s, &total_q, &total_k, &x));
  FG_TRY(fg_jax_check_lse(frame, lse, q, &at, &s));
  void *stream;
  FG_TRY(fg_xla_stream(frame, &stream));

  fagen_attention_bwd_args a;
  fg_jax_bwd_args(&a, &s, &at);
  fg_jax_features(&a.feat, &at, &x, total_q, total_k);
  a.q = q->data;
  a.k = k->data;
  a.v = v->data;
  a.o = o->data;
  a.dout = dout->data;
  a.lse = (const float *)lse->data;
  a.dq = dq->data;
  a.dk = dk->data;
  a.dv = dv->data;
  /* The scratch is a result of the call (XLA allocates it like any
     temporary), so fagen never allocates inside a captured graph. */
  a.workspace = ws->data;
  a.workspace_bytes = (size_t)fg_xla_dims_product(ws, 0, ws->rank);
  fagen_status st = fagen_attention_backward(ctx, &a, stream);
  return st == FAGEN_OK ? NULL : fg_jax_fail(frame, "fagen_attention_backward", st);
}

/* ------------------------------------------------------------------------ */
/* Helpers for the Python side (plain C types: no struct layout to mirror)  */
/* ------------------------------------------------------------------------ */

/* fagen_attention_backward_workspace() for one sequence (batch 1) of these
 * sizes.  Python allocates [batch, this] bytes, which is never less than the
 * whole call needs (each term of the size is linear in batch, rounded up).
 * Returns 0 and fills *bytes, or a fagen status with its message in msg. */
FG_JAX_API int fagen_jax_bwd_workspace_per_batch(int dtype, int seqlen_q, int seqlen_k,
                                                 int heads_q, int heads_kv, int head_dim,
                                                 int causal, int deterministic,
                                                 unsigned long long *bytes, char *msg,
                                                 size_t msg_size) {
  fagen_ctx *ctx = fg_jax_context();
  if (!ctx) {
    snprintf(msg, msg_size, "fagen_ctx_create: %s", fagen_last_error());
    return (int)fg_jax_ctx_status;
  }
  fg_jax_sizes s = {(fagen_dtype)dtype, 1, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim};
  fg_jax_attrs at;
  memset(&at, 0, sizeof at);
  at.causal = causal;
  at.deterministic = deterministic;
  fagen_attention_bwd_args a;
  fg_jax_bwd_args(&a, &s, &at);
  size_t n = 0;
  fagen_status st = fagen_attention_backward_workspace(ctx, &a, &n);
  if (st != FAGEN_OK) {
    snprintf(msg, msg_size, "%s: %s", fagen_status_name(st), fagen_last_error());
    return (int)st;
  }
  *bytes = n;
  return 0;
}

/* The version of libfagen this library was built against. */
FG_JAX_API const char *fagen_jax_fagen_version(void) { return FAGEN_VERSION_STRING; }
