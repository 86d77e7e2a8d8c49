#include "fg_forward.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_ctx.h"
#include "fg_features.h"
#include "fg_kernels.h"
#include "fg_tma.h"
#include "fg_variant.h"

/* FAGEN_PERSISTENT_CTAS=N caps the Hopper forward's persistent grid (its CTAs
 * loop over work items, so any grid size computes the same result); tests
 * use it to make every CTA run many tiles.  Read on every call, as the
 * other switches; 0 when unset or not a positive number. */
static unsigned fg_persistent_cap(void) {
  const char *e = getenv("FAGEN_PERSISTENT_CTAS");
  if (!e || !*e) return 0;
  char *end;
  long n = strtol(e, &end, 10);
  return *end == '\0' && n > 0 && n <= 1 << 20 ? (unsigned)n : 0;
}

FAGEN_API void fagen_attention_args_init(fagen_attention_args *a) {
  if (!a) return;
  memset(a, 0, sizeof *a);
  a->dtype = FAGEN_DTYPE_BF16;
}

/* The strides of a tensor as used: all zero means contiguous [B, S, H, D]. */
fagen_strides fg_effective(fagen_strides s, int seqlen, int heads, int head_dim) {
  if (s.batch == 0 && s.seq == 0 && s.head == 0) {
    s.head = head_dim;
    s.seq = (int64_t)heads * head_dim;
    s.batch = (int64_t)seqlen * heads * head_dim;
  }
  return s;
}

fagen_status fg_check_strides(const char *what, fagen_strides given, int batch, int seqlen,
                                     int heads, int head_dim, int is_output, fg_err *err) {
  fagen_strides s = fg_effective(given, seqlen, heads, head_dim);
  const int64_t st[3] = {s.batch, s.seq, s.head};
  const int dims[3] = {batch, seqlen, heads};
  static const char *const axis[3] = {"batch", "seq", "head"};
  for (int i = 0; i < 3; i++) {
    if (st[i] < 0)
      return fg_fail(err, FAGEN_E_BAD_STRIDE, "%s %s stride is %lld; strides must not be negative",
                     what, axis[i], (long long)st[i]);
    if (st[i] % 8 != 0)
      return fg_fail(err, FAGEN_E_BAD_STRIDE,
                     "%s %s stride %lld is not a multiple of 8 elements: rows would not be "
                     "16-byte aligned",
                     what, axis[i], (long long)st[i]);
    if (st[i] == 0 && dims[i] > 1 && is_output)
      return fg_fail(err, FAGEN_E_BAD_STRIDE,
                     "%s %s stride is 0 with %d %s entries: outputs would overlap", what, axis[i],
                     dims[i], axis[i]);
  }
  /* The largest element offset must fit in 64 bits. */
  int64_t off = head_dim, t;
  for (int i = 0; i < 3; i++) {
    if (__builtin_mul_overflow(st[i], (int64_t)(dims[i] - 1), &t) ||
        __builtin_add_overflow(off, t, &off))
      return fg_fail(err, FAGEN_E_BAD_SHAPE, "%s is too large: element offsets overflow 64 bits",
                     what);
  }
  return FAGEN_OK;
}

int fg_aligned(const void *p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

fagen_status fg_fwd_validate(const fagen_attention_args *a, int check_pointers, fg_err *err) {
  if (a->dtype != FAGEN_DTYPE_FP16 && a->dtype != FAGEN_DTYPE_BF16)
    return fg_fail(err, FAGEN_E_UNSUPPORTED_DTYPE, "dtype %d is not FAGEN_DTYPE_FP16 or _BF16",
                   (int)a->dtype);
  const struct {
    const char *name;
    int value;
  } sizes[] = {{"batch", a->batch},       {"seqlen_q", a->seqlen_q}, {"seqlen_k", a->seqlen_k},
               {"heads_q", a->heads_q},   {"heads_kv", a->heads_kv}, {"head_dim", a->head_dim}};
  for (size_t i = 0; i < FG_ARRAY_LEN(sizes); i++)
    if (sizes[i].value <= 0)
      return fg_fail(err, FAGEN_E_BAD_SHAPE, "%s is %d; sizes must be positive", sizes[i].name,
                     sizes[i].value);
  if (a->head_dim % 8 != 0 || a->head_dim > 256)
    return fg_fail(err, FAGEN_E_UNSUPPORTED_HEAD_DIM,
                   "head_dim %d is not supported: it must be a multiple of 8, at most 256",
                   a->head_dim);
  if (a->heads_q % a->heads_kv != 0)
    return fg_fail(err, FAGEN_E_BAD_HEADS, "heads_q %d is not a multiple of heads_kv %d",
                   a->heads_q, a->heads_kv);
  if (a->causal != 0 && a->causal != 1)
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT, "causal is %d; it must be 0 or 1", a->causal);
  if (!isfinite(a->softmax_scale) || a->softmax_scale < 0.f)
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                   "softmax_scale %g must be finite and positive (0 means 1/sqrt(head_dim))",
                   (double)a->softmax_scale);
  fagen_status st = fg_features_validate(&a->feat, a->seqlen_q, a->seqlen_k, err);
  if (st == FAGEN_OK && check_pointers) st = fg_features_check_arrays(&a->feat, err);
  if (st != FAGEN_OK) return st;
  /* Packed sequences: q and o are [total_q, H, D], k and v [total_k, H, D]. */
  const int packed = fg_features_packed(&a->feat);
  const int tb = packed ? 1 : a->batch;
  const int tq = packed ? a->feat.total_q : a->seqlen_q;
  const int tk = packed ? a->feat.total_k : a->seqlen_k;
  if ((st = fg_check_strides("q", a->q_strides, tb, tq, a->heads_q, a->head_dim, 0, err)) !=
          FAGEN_OK ||
      (st = fg_check_strides("k", a->k_strides, tb, tk, a->heads_kv, a->head_dim, 0, err)) !=
          FAGEN_OK ||
      (st = fg_check_strides("v", a->v_strides, tb, tk, a->heads_kv, a->head_dim, 0, err)) !=
          FAGEN_OK ||
      (st = fg_check_strides("o", a->o_strides, tb, tq, a->heads_q, a->head_dim, 1, err)) !=
          FAGEN_OK)
    return st;
  /* The grid is 1-D: q blocks (at least 16 rows each) x heads x batch. */
  int64_t blocks = ((int64_t)a->seqlen_q + 15) / 16 * a->heads_q;
  if (blocks * a->batch > INT32_MAX)
    return fg_fail(err, FAGEN_E_BAD_SHAPE,
                   "batch %d x heads_q %d x seqlen_q %d is too large for one launch", a->batch,
                   a->heads_q, a->seqlen_q);
  if (check_pointers) {
    const struct {
      const char *name;
      const void *p;
    } ptrs[] = {{"q", a->q}, {"k", a->k}, {"v", a->v}, {"o", a->o}};
    for (size_t i = 0; i < FG_ARRAY_LEN(ptrs); i++) {
      if (!ptrs[i].p)
        return fg_fail(err, FAGEN_E_NULL_POINTER, "%s is NULL", ptrs[i].name);
      if (!fg_aligned(ptrs[i].p, 16))
        return fg_fail(err, FAGEN_E_MISALIGNED, "%s (%p) is not 16-byte aligned", ptrs[i].name,
                       ptrs[i].p);
    }
    if (a->lse && !fg_aligned(a->lse, 4))
      return fg_fail(err, FAGEN_E_MISALIGNED, "lse (%p) is not 4-byte aligned", (void *)a->lse);
  }
  if (a->variant) {
    const fagen_variant *v = a->variant;
    char name[FAGEN_VARIANT_NAME_MAX] = "?";
    fagen_variant_name(v, name, sizeof name);
    st = fg_variant_check(v, NULL, err);
    if (st != FAGEN_OK) {
      fg_err_prefix(err, "forced variant %s", name);
      err->status = FAGEN_E_INVALID_ARGUMENT;
      return err->status;
    }
    const int forward = v->op == FAGEN_OP_FWD || v->op == FAGEN_OP_FWD_WGMMA;
    if (!forward || v->dtype != a->dtype || v->causal != a->causal ||
        v->features != fg_features_bits(&a->feat) || v->head_dim < a->head_dim)
      return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                     "forced variant %s does not fit the call (op fwd or fwdwg, dtype, causal, "
                     "features 0x%x and head_dim >= %d must match)",
                     name, fg_features_bits(&a->feat), a->head_dim);
  }
  return FAGEN_OK;
}

/* The Hopper family (FAGEN_OP_FWD_WGMMA) serves a forward call on sm_90a
 * when it uses no feature but softcap and sequence lengths (packed or
 * padded) and TMA can describe its tensors; everything else (window, ALiBi,
 * dropout) runs the mma.sync family. */
static int fg_fwd_wgmma_applies(const fagen_attention_args *a, const fagen_target *t) {
  return t->arch == 90 && t->arch_specific &&
         (fg_features_bits(&a->feat) & ~(unsigned)FG_FWD_WGMMA_FEATURES) == 0 && fg_tma_fwd_fits(a);
}

fagen_status fg_fwd_select(const fagen_attention_args *a, const fagen_target *t,
                           const fg_tune_state *tune, fagen_variant *out, fagen_select_info *info,
                           fg_err *err) {
  if (!a->variant && fg_fwd_wgmma_applies(a, t) &&
      fg_op_select(FAGEN_OP_FWD_WGMMA, a, t, tune, out, info, NULL) == FAGEN_OK)
    return FAGEN_OK;
  return fg_op_select(FAGEN_OP_FWD, a, t, tune, out, info, err);
}

fagen_status fg_op_select(fagen_op op, const fagen_attention_args *a, const fagen_target *t,
                          const fg_tune_state *tune, fagen_variant *out, fagen_select_info *info,
                          fg_err *err) {
  if (info) memset(info, 0, sizeof *info);
  if (a->variant) {
    *out = *a->variant;
    if (info) info->source = FAGEN_SELECT_FORCED;
    return FAGEN_OK;
  }
  const int head_dim = fg_head_dim_bucket(a->head_dim);
  /* Tables may hold entries measured with the call's features (else their
     plain entry's tiles take them); the heuristic chooses tiles for plain
     attention, and the call's features are compiled into the same tiles. */
  const unsigned features = fg_features_bits(&a->feat);
  if (tune && fg_tune_lookup(tune, op, a->dtype, head_dim, a->causal, features, a->seqlen_k, out, info))
    return FAGEN_OK;
  if (info) info->source = FAGEN_SELECT_HEURISTIC;
  fagen_variant v;
  memset(&v, 0, sizeof v);
  v.op = op;
  v.head_dim = head_dim;
  v.dtype = a->dtype;
  v.causal = a->causal;
  v.features = features;
  v.target = *t;
  fg_default_tiles(&v);
  if (fg_variant_check(&v, NULL, NULL) == FAGEN_OK) {
    *out = v;
    return FAGEN_OK;
  }
  size_t n = 0;
  fagen_variant cand[256];
  fagen_variant_candidates(&v, cand, FG_ARRAY_LEN(cand), &n);
  for (size_t i = 0; i < n && i < FG_ARRAY_LEN(cand); i++)
    if (fg_variant_check(&cand[i], NULL, NULL) == FAGEN_OK) {
      *out = cand[i];
      return FAGEN_OK;
    }
  return fg_fail(err, FAGEN_E_UNSUPPORTED_ARCH, "no %s kernel for head_dim %d fits sm_%d%s",
                 fg_op_token(op), a->head_dim, t->arch, t->arch_specific ? "a" : "");
}

void fg_fwd_params_fill(const fagen_attention_args *a, const fagen_variant *v, fg_fwd_params *p) {
  memset(p, 0, sizeof *p);
  fagen_strides q = fg_effective(a->q_strides, a->seqlen_q, a->heads_q, a->head_dim);
  fagen_strides k = fg_effective(a->k_strides, a->seqlen_k, a->heads_kv, a->head_dim);
  fagen_strides vs = fg_effective(a->v_strides, a->seqlen_k, a->heads_kv, a->head_dim);
  fagen_strides o = fg_effective(a->o_strides, a->seqlen_q, a->heads_q, a->head_dim);
  p->q = a->q;
  p->k = a->k;
  p->v = a->v;
  p->o = a->o;
  p->lse = a->lse;
  p->q_stride_b = q.batch, p->q_stride_s = q.seq, p->q_stride_h = q.head;
  p->k_stride_b = k.batch, p->k_stride_s = k.seq, p->k_stride_h = k.head;
  p->v_stride_b = vs.batch, p->v_stride_s = vs.seq, p->v_stride_h = vs.head;
  p->o_stride_b = o.batch, p->o_stride_s = o.seq, p->o_stride_h = o.head;
  p->batch = a->batch;
  p->heads_q = a->heads_q;
  p->heads_kv = a->heads_kv;
  p->seqlen_q = a->seqlen_q;
  p->seqlen_k = a->seqlen_k;
  p->head_dim = a->head_dim;
  p->q_blocks = (a->seqlen_q + v->block_q - 1) / v->block_q;
  p->group = a->heads_q / a->heads_kv;
  float scale = a->softmax_scale > 0.f ? a->softmax_scale : 1.0f / sqrtf((float)a->head_dim);
  p->scale_log2 = scale * 1.4426950408889634f;
  fg_feat_params f;
  fg_features_params(&a->feat, a->causal, a->seqlen_q, a->seqlen_k, scale, &f);
  fg_abi_fwd_set_features(p, &f);
  if (fg_features_packed(&a->feat)) /* rows are found through the offsets */
    p->q_stride_b = p->k_stride_b = p->v_stride_b = p->o_stride_b = 0;
}

/* The tables of the device a scope runs on (its class looked up once per
 * device ordinal). */
const fg_tune_state *fg_scope_tune(fagen_ctx *ctx, const fg_cuda_api *cu, const fg_scope *s) {
  int d = (int)s->dev;
  pthread_mutex_lock(&ctx->mu);
  int idx = ctx->dev_tune[d];
  pthread_mutex_unlock(&ctx->mu);
  if (idx) return &ctx->tunes[idx - 1];
  fagen_device_class dc;
  fg_err err;
  if (fg_device_class_of(cu, s->dev, &s->target, &dc, &err) != FAGEN_OK) return NULL;
  const fg_tune_state *st = fg_ctx_tune(ctx, &dc);
  if (st) {
    pthread_mutex_lock(&ctx->mu);
    ctx->dev_tune[d] = (unsigned char)(st - ctx->tunes + 1);
    pthread_mutex_unlock(&ctx->mu);
  }
  return st;
}

/* The target and tables a select call uses: the device class given, else
 * the device of the current CUDA context. */
fagen_status fg_select_target(fagen_ctx *ctx, const fagen_device_class *device, fagen_target *t,
                              const fg_tune_state **tune, fg_err *err) {
  if (device) {
    if (!fg_target_supported(&device->target))
      return fg_fail(err, FAGEN_E_UNSUPPORTED_ARCH, "target sm_%d%s is not supported",
                     device->target.arch, device->target.arch_specific ? "a" : "");
    *t = device->target;
    *tune = fg_ctx_tune(ctx, device);
    return FAGEN_OK;
  }
  const fg_cuda_api *cu = fg_cuda(err);
  if (!cu) return err->status;
  fg_scope s;
  fagen_status st = fg_scope_enter(ctx, cu, NULL, &s, err);
  if (st != FAGEN_OK) return st;
  *t = s.target;
  *tune = fg_scope_tune(ctx, cu, &s);
  fg_scope_leave(cu, &s);
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_attention_select(fagen_ctx *ctx, const fagen_attention_args *args,
                                              const fagen_device_class *device,
                                              fagen_variant *out, fagen_select_info *info) {
  fg_err err;
  if (!ctx || !args || !out) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_attention_select: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  fagen_status st = fg_fwd_validate(args, 0, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  fagen_target t;
  const fg_tune_state *tune = NULL;
  if (fg_select_target(ctx, device, &t, &tune, &err) != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  st = fg_fwd_select(args, &t, tune, out, info, &err);
  return st == FAGEN_OK ? FAGEN_OK : fg_ctx_fail(ctx, &err);
}

FAGEN_API fagen_status fagen_attention_forward(fagen_ctx *ctx, const fagen_attention_args *a,
                                               void *stream) {
  fg_err err;
  if (!ctx || !a) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_attention_forward: ctx or args is NULL");
    return fg_ctx_fail(ctx, &err);
  }
  fagen_status st = fg_fwd_validate(a, 1, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  const fg_cuda_api *cu = fg_cuda(&err);
  if (!cu) return fg_ctx_fail(ctx, &err);
  fg_scope s;
  st = fg_scope_enter(ctx, cu, (CUstream)stream, &s, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  fagen_variant v;
  st = fg_fwd_select(a, &s.target, a->variant ? NULL : fg_scope_tune(ctx, cu, &s), &v, NULL, &err);
  fg_launchable l;
  if (st == FAGEN_OK) st = fg_kernel_get(ctx, cu, &s, &v, &l, &err);
  if (st == FAGEN_OK) {
    fg_fwd_params p;
    fg_fwd_params_fill(a, &v, &p);
    unsigned grid = (unsigned)((int64_t)p.q_blocks * a->heads_q * a->batch);
    fg_tmaps maps; /* the wgmma kernel's second parameter */
    void *params[] = {&p, &maps};
    CUdeviceptr sched = 0; /* the wgmma kernel's work counter with sequence lengths */
    if (v.op == FAGEN_OP_FWD_WGMMA) {
      st = fg_tma_fwd_maps(cu, &p, &v, a->dtype, &maps, &err);
      /* With sequence lengths the work items differ in cost and the kernel
         takes them from a counter (fwd_sm90.cu.tpl, DYN): 4 bytes from the
         stream-ordered pool, zeroed on the stream, freed after the launch. */
      if (st == FAGEN_OK && (v.features & FAGEN_FEATURE_VARLEN)) {
        CUresult rc = cu->mem_alloc_async(&sched, 4, (CUstream)stream);
        if (rc == CUDA_SUCCESS) rc = cu->memset_d32_async(sched, 0, 1, (CUstream)stream);
        if (rc != CUDA_SUCCESS) st = fg_cuda_fail(&err, rc, "work counter (cuMemAllocAsync, cuMemsetD32Async)");
        p.sched = (int32_t *)(uintptr_t)sched;
      }
      /* Persistent: one CTA per SM at most, each taking a whole SM's
         registers and looping over work items (fwd_sm90.cu.tpl's
         fg_tile_of): one tile each, or with causal masking a pair of tiles
         of one head whose lengths add up to the same for every pair. */
      if (v.causal)
        grid = (unsigned)((int64_t)(p.q_blocks + 1) / 2 * a->heads_q * a->batch);
      if (s.sm_count > 0 && grid > (unsigned)s.sm_count)
        grid = (unsigned)s.sm_count;
      const unsigned cap = fg_persistent_cap();
      if (cap > 0 && grid > cap) grid = cap;
    }
    if (st == FAGEN_OK) {
      CUresult rc = cu->launch_kernel(l.fn, grid, 1, 1, (unsigned)l.threads, 1, 1,
                                      (unsigned)l.smem, (CUstream)stream, params, NULL);
      if (rc != CUDA_SUCCESS) st = fg_cuda_fail(&err, rc, "cuLaunchKernel");
    }
    if (sched) cu->mem_free_async(sched, (CUstream)stream);
  }
  fg_scope_leave(cu, &s);
  return st == FAGEN_OK ? FAGEN_OK : fg_ctx_fail(ctx, &err);
}
