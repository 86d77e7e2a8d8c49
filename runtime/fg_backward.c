/* fg_backward: fagen_attention_backward — validation, workspace, selection
 * and the launches of the backward module (templates/bwd_sm80.cu.tpl, and on
 * sm_90a templates/bwd_sm90.cu.tpl). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_ctx.h"
#include "fg_features.h"
#include "fg_forward.h"
#include "fg_kernel_abi.h"
#include "fg_kernels.h"
#include "fg_tma.h"
#include "fg_variant.h"

FAGEN_API void fagen_attention_bwd_args_init(fagen_attention_bwd_args *a) {
  if (!a) return;
  memset(a, 0, sizeof *a);
  a->dtype = FAGEN_DTYPE_BF16;
}

/* The forward's view of the call: sizes, q, k, v, o and lse, so that the
 * forward's rules (sizes, heads, head_dim, scale, strides, alignment) apply
 * to the same tensors with the same messages. */
static fagen_attention_args fg_bwd_as_fwd(const fagen_attention_bwd_args *a) {
  fagen_attention_args f;
  fagen_attention_args_init(&f);
  f.dtype = a->dtype;
  f.batch = a->batch;
  f.seqlen_q = a->seqlen_q;
  f.seqlen_k = a->seqlen_k;
  f.heads_q = a->heads_q;
  f.heads_kv = a->heads_kv;
  f.head_dim = a->head_dim;
  f.causal = a->causal;
  f.softmax_scale = a->softmax_scale;
  f.q = a->q;
  f.k = a->k;
  f.v = a->v;
  f.o = (void *)(uintptr_t)a->o; /* only read here */
  f.lse = (float *)(uintptr_t)a->lse;
  f.q_strides = a->q_strides;
  f.k_strides = a->k_strides;
  f.v_strides = a->v_strides;
  f.o_strides = a->o_strides;
  f.feat = a->feat;
  f.variant = NULL;
  return f;
}

/* Workspace layout: D (fp32 per query row), then, in the atomic mode, the
 * fp32 dQ accumulator [rows][compiled head_dim] from a 16-byte boundary and
 * the Hopper backward's row statistics (fg_kernel_abi.h, fg_bwd_params.stats:
 * per (batch, query head) 2 x seqlen_q rounded up to FG_BWD_STATS_ALIGN
 * floats; reserved whichever family runs, so that the size depends on the
 * arguments only). */
static size_t fg_bwd_rows(const fagen_attention_bwd_args *a) {
  return (size_t)a->batch * (size_t)a->heads_q * (size_t)a->seqlen_q;
}

static size_t fg_bwd_dq_offset(const fagen_attention_bwd_args *a) {
  return (fg_bwd_rows(a) * 4 + 15) & ~(size_t)15;
}

static int fg_bwd_stats_ld(const fagen_attention_bwd_args *a) {
  return (a->seqlen_q + FG_BWD_STATS_ALIGN - 1) / FG_BWD_STATS_ALIGN * FG_BWD_STATS_ALIGN;
}

static size_t fg_bwd_stats_offset(const fagen_attention_bwd_args *a) {
  return fg_bwd_dq_offset(a) + fg_bwd_rows(a) * (size_t)fg_head_dim_bucket(a->head_dim) * 4;
}

static size_t fg_bwd_workspace_bytes(const fagen_attention_bwd_args *a) {
  if (a->deterministic) return fg_bwd_dq_offset(a);
  return fg_bwd_stats_offset(a) +
         (size_t)a->batch * (size_t)a->heads_q * 2 * (size_t)fg_bwd_stats_ld(a) * 4;
}

/* Sizes and strides (and, with check_pointers, pointers and the workspace). */
static fagen_status fg_bwd_validate(const fagen_attention_bwd_args *a, int check_pointers,
                                    fg_err *err) {
  fagen_attention_args f = fg_bwd_as_fwd(a);
  fagen_status st = fg_fwd_validate(&f, 0, err);
  if (st != FAGEN_OK) return st;
  if (a->deterministic != 0 && a->deterministic != 1)
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT, "deterministic is %d; it must be 0 or 1",
                   a->deterministic);
  const struct {
    const char *name;
    fagen_strides s;
    int kv, out;
  } t[] = {{"dout", a->dout_strides, 0, 0},
           {"dq", a->dq_strides, 0, 1},
           {"dk", a->dk_strides, 1, 1},
           {"dv", a->dv_strides, 1, 1}};
  const int packed = fg_features_packed(&a->feat);
  const int tq = packed ? a->feat.total_q : a->seqlen_q;
  const int tk = packed ? a->feat.total_k : a->seqlen_k;
  for (size_t i = 0; i < FG_ARRAY_LEN(t); i++) {
    st = fg_check_strides(t[i].name, t[i].s, packed ? 1 : a->batch, t[i].kv ? tk : tq,
                          t[i].kv ? a->heads_kv : a->heads_q, a->head_dim, t[i].out, err);
    if (st != FAGEN_OK) return st;
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
    if (v->op == FAGEN_OP_BWD_WGMMA && a->deterministic)
      return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                     "forced variant %s does not fit the call: the wgmma backward sums dQ with "
                     "atomics, so it cannot serve a deterministic call (op bwddet can)",
                     name);
    const fagen_op want = a->deterministic ? FAGEN_OP_BWD_DET : FAGEN_OP_BWD;
    const int op_ok = v->op == want || (!a->deterministic && v->op == FAGEN_OP_BWD_WGMMA);
    if (!op_ok || v->dtype != a->dtype || v->causal != a->causal ||
        v->features != fg_features_bits(&a->feat) ||
        v->head_dim != fg_head_dim_bucket(a->head_dim))
      return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                     "forced variant %s does not fit the call (op %s, dtype, causal, features "
                     "0x%x and head_dim %d must match)",
                     name, a->deterministic ? "bwddet" : "bwd or bwdwg",
                     fg_features_bits(&a->feat), fg_head_dim_bucket(a->head_dim));
  }
  if (!check_pointers) return FAGEN_OK;
  const struct {
    const char *name;
    const void *p;
  } ptrs[] = {{"q", a->q},   {"k", a->k},   {"v", a->v},   {"o", a->o},
              {"dout", a->dout}, {"dq", a->dq}, {"dk", a->dk}, {"dv", a->dv}};
  for (size_t i = 0; i < FG_ARRAY_LEN(ptrs); i++) {
    if (!ptrs[i].p) return fg_fail(err, FAGEN_E_NULL_POINTER, "%s is NULL", ptrs[i].name);
    if (!fg_aligned(ptrs[i].p, 16))
      return fg_fail(err, FAGEN_E_MISALIGNED, "%s (%p) is not 16-byte aligned", ptrs[i].name,
                     ptrs[i].p);
  }
  st = fg_features_check_arrays(&a->feat, err); /* the values were checked with the forward's rules */
  if (st != FAGEN_OK) return st;
  if (!a->lse)
    return fg_fail(err, FAGEN_E_NULL_POINTER,
                   "lse is NULL: the backward needs the forward's log-sum-exp (call "
                   "fagen_attention_forward with args.lse set)");
  if (!fg_aligned(a->lse, 4))
    return fg_fail(err, FAGEN_E_MISALIGNED, "lse (%p) is not 4-byte aligned", (const void *)a->lse);
  size_t need = fg_bwd_workspace_bytes(a);
  if (a->workspace || a->workspace_bytes) {
    if (!a->workspace)
      return fg_fail(err, FAGEN_E_BUFFER_TOO_SMALL,
                     "workspace_bytes is %zu but workspace is NULL (pass neither to let the "
                     "call allocate it)",
                     a->workspace_bytes);
    if (a->workspace_bytes < need)
      return fg_fail(err, FAGEN_E_BUFFER_TOO_SMALL,
                     "the workspace has %zu bytes; this call needs %zu "
                     "(fagen_attention_backward_workspace)",
                     a->workspace_bytes, need);
    if (!fg_aligned(a->workspace, 16))
      return fg_fail(err, FAGEN_E_MISALIGNED, "workspace (%p) is not 16-byte aligned",
                     a->workspace);
  }
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_attention_backward_workspace(fagen_ctx *ctx,
                                                          const fagen_attention_bwd_args *args,
                                                          size_t *bytes) {
  fg_err err;
  if (!ctx || !args || !bytes) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_attention_backward_workspace: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  fagen_status st = fg_bwd_validate(args, 0, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  *bytes = fg_bwd_workspace_bytes(args);
  return FAGEN_OK;
}

/* FAGEN_BWD_WGMMA=0 turns the Hopper backward off (A/B comparisons, and a
 * way around a problem in it); read on every call, like the other switches
 * a test or a user may flip between calls. */
static int fg_bwd_wgmma_enabled(void) {
  const char *e = getenv("FAGEN_BWD_WGMMA");
  return !(e && strcmp(e, "0") == 0);
}

/* The Hopper family (FAGEN_OP_BWD_WGMMA) serves a backward call on sm_90a
 * when it sums dQ with atomics, uses no feature, runs on a head_dim the
 * family is compiled for and TMA can describe q, k, v and dout; everything
 * else runs the mma.sync family. */
static int fg_bwd_wgmma_applies(const fagen_attention_bwd_args *a, const fagen_target *t) {
  const int d = fg_head_dim_bucket(a->head_dim);
  return !a->deterministic && t->arch == 90 && t->arch_specific &&
         fg_features_bits(&a->feat) == 0 && (d == 64 || d == 96 || d == 128 || d == 256) &&
         fg_tma_bwd_fits(a) && fg_bwd_wgmma_enabled();
}

/* The mma.sync family's variant for a: the forced one, else tables, else
 * the heuristic. */
static fagen_status fg_bwd_select_sm80(const fagen_attention_bwd_args *a, const fagen_target *t,
                                       const fg_tune_state *tune, fagen_variant *out,
                                       fagen_select_info *info, fg_err *err) {
  fagen_attention_args f = fg_bwd_as_fwd(a);
  f.variant = a->variant;
  return fg_op_select(a->deterministic ? FAGEN_OP_BWD_DET : FAGEN_OP_BWD, &f, t, tune, out, info,
                      err);
}

static fagen_status fg_bwd_select(const fagen_attention_bwd_args *a, const fagen_target *t,
                                  const fg_tune_state *tune, fagen_variant *out,
                                  fagen_select_info *info, fg_err *err) {
  if (!a->variant && fg_bwd_wgmma_applies(a, t)) {
    fagen_attention_args f = fg_bwd_as_fwd(a);
    if (fg_op_select(FAGEN_OP_BWD_WGMMA, &f, t, tune, out, info, NULL) == FAGEN_OK)
      return FAGEN_OK;
  }
  return fg_bwd_select_sm80(a, t, tune, out, info, err);
}

FAGEN_API fagen_status fagen_attention_backward_select(fagen_ctx *ctx,
                                                       const fagen_attention_bwd_args *args,
                                                       const fagen_device_class *device,
                                                       fagen_variant *out,
                                                       fagen_select_info *info) {
  fg_err err;
  if (!ctx || !args || !out) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_attention_backward_select: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  fagen_status st = fg_bwd_validate(args, 0, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  fagen_target t;
  const fg_tune_state *tune = NULL;
  if (fg_select_target(ctx, device, &t, &tune, &err) != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  st = fg_bwd_select(args, &t, tune, out, info, &err);
  return st == FAGEN_OK ? FAGEN_OK : fg_ctx_fail(ctx, &err);
}

/* Pairs of (batch, kv head) per chunk of the causal Hopper backward's grid
 * order (bwd_sm90.cu.tpl): a chunk's key blocks run heaviest first, so
 * that the CTAs that start last are short.  Chunks of `waves` x sm_count
 * CTAs, the smallest chunk first; 1 is plain head-major order.  A model of
 * the block scheduler (one CTA per SM, B*S = 16384, 16 heads) gave a tail
 * of 0.5-1.3% over perfect balance against 0.5-7.6% for head-major order,
 * but on an H100 the order costs locality (a head's CTAs no longer read its
 * Q and dO rows together) that short sequences do not win back.  bwdwg
 * causal TFLOPS over head-major order (fagen-bench --mode bwd, run 66):
 *
 *   waves   d    S=512   1024   2048   4096   8192
 *   1      64    0.94   0.99   1.01   1.02   1.02
 *   1     128    0.93   1.00   1.03   1.03   1.02
 *   2      64    0.92   0.97   1.00   1.03   1.01
 *   2     128    0.89   0.97   1.02   1.04   1.04
 *
 * hence head-major below 2048 keys, one wave below 4096, two from there;
 * and head-major again above 64 key blocks a head: there the full H100 tune
 * (run 67, against run 63's in head-major order) measured 0.95-1.02x (d256
 * at S 16384, 256 blocks of 64: 0.95), where with 16-64 blocks every cell
 * gained (1.00-1.05x). */
static int fg_bwd_lpt_heads(const fg_bwd_params *p, int sm_count) {
  const int64_t nbh = (int64_t)p->batch * p->heads_kv;
  const int waves = p->seqlen_k < 2048 || p->kv_blocks > 64 ? 0 : p->seqlen_k < 4096 ? 1 : 2;
  if (waves == 0 || sm_count <= 0) return 1;
  int64_t g = ((int64_t)waves * sm_count + p->kv_blocks - 1) / p->kv_blocks;
  if (g > nbh) g = nbh;
  return g > 0 ? (int)g : 1;
}

static void fg_bwd_params_fill(const fagen_attention_bwd_args *a, const fagen_variant *v,
                               int sm_count, fg_bwd_params *p) {
  memset(p, 0, sizeof *p);
  const int d = a->head_dim;
  const struct {
    fagen_strides s;
    int kv;
    int64_t *out;
  } t[] = {{a->q_strides, 0, &p->q_stride_b},   {a->k_strides, 1, &p->k_stride_b},
           {a->v_strides, 1, &p->v_stride_b},   {a->o_strides, 0, &p->o_stride_b},
           {a->dout_strides, 0, &p->do_stride_b}, {a->dq_strides, 0, &p->dq_stride_b},
           {a->dk_strides, 1, &p->dk_stride_b}, {a->dv_strides, 1, &p->dv_stride_b}};
  for (size_t i = 0; i < FG_ARRAY_LEN(t); i++) {
    fagen_strides e = fg_effective(t[i].s, t[i].kv ? a->seqlen_k : a->seqlen_q,
                                   t[i].kv ? a->heads_kv : a->heads_q, d);
    /* Each tensor's three strides are consecutive fields: b, s, h. */
    t[i].out[0] = e.batch;
    t[i].out[1] = e.seq;
    t[i].out[2] = e.head;
  }
  p->q = a->q;
  p->k = a->k;
  p->v = a->v;
  p->o = a->o;
  p->dout = a->dout;
  p->lse = a->lse;
  p->dq = a->dq;
  p->dk = a->dk;
  p->dv = a->dv;
  p->batch = a->batch;
  p->heads_q = a->heads_q;
  p->heads_kv = a->heads_kv;
  p->seqlen_q = a->seqlen_q;
  p->seqlen_k = a->seqlen_k;
  p->head_dim = d;
  p->group = a->heads_q / a->heads_kv;
  p->q_blocks = (a->seqlen_q + v->block_q - 1) / v->block_q;
  p->kv_blocks = (a->seqlen_k + v->block_kv - 1) / v->block_kv;
  p->lpt_heads = fg_bwd_lpt_heads(p, sm_count);
  float scale = a->softmax_scale > 0.f ? a->softmax_scale : 1.0f / sqrtf((float)d);
  p->scale = scale;
  p->scale_log2 = scale * 1.4426950408889634f;
  fg_feat_params f;
  fg_features_params(&a->feat, a->causal, a->seqlen_q, a->seqlen_k, scale, &f);
  fg_abi_bwd_set_features(p, &f);
  if (fg_features_packed(&a->feat)) /* rows are found through the offsets */
    for (size_t i = 0; i < FG_ARRAY_LEN(t); i++) t[i].out[0] = 0;
}

/* Grid of a grid-stride helper kernel: enough blocks to fill the GPU many
 * times over, never more than there is work. */
static unsigned fg_aux_grid(int64_t work_items, int per_block) {
  int64_t blocks = (work_items + per_block - 1) / per_block;
  if (blocks > 65536) blocks = 65536;
  return (unsigned)(blocks > 0 ? blocks : 1);
}

/* Launches kernel `which` of the module with its parameters (the block
 * alone, or for the wgmma main kernel the block and the tensor maps). */
static fagen_status fg_launch(const fg_cuda_api *cu, const fg_launchable *l, int which,
                              unsigned grid, CUstream stream, void **params, fg_err *err) {
  CUresult rc = cu->launch_kernel(l->fns[which], grid, 1, 1, (unsigned)l->fn_threads[which], 1, 1,
                                  (unsigned)l->fn_smem[which], stream, params, NULL);
  return rc == CUDA_SUCCESS ? FAGEN_OK : fg_cuda_fail(err, rc, "cuLaunchKernel (backward)");
}

/* The variant to run, its kernels and, for the wgmma family, the tensor maps
 * (p filled without the workspace pointers).  The maps are encoded before
 * anything launches.  fg_tma_bwd_fits is only a pre-check: if the driver
 * still cannot describe a tensor (FAGEN_E_CUDA), a selected bwdwg variant
 * gives way to the mma.sync family's, as if FAGEN_BWD_WGMMA=0; a forced one
 * fails with the driver's message. */
static fagen_status fg_bwd_prepare(fagen_ctx *ctx, const fg_cuda_api *cu, const fg_scope *s,
                                   const fagen_attention_bwd_args *a, fagen_variant *v,
                                   fg_launchable *l, fg_bwd_params *p, fg_tmaps_bwd *maps,
                                   fg_err *err) {
  const fg_tune_state *tune = a->variant ? NULL : fg_scope_tune(ctx, cu, s);
  fagen_status st = fg_bwd_select(a, &s->target, tune, v, NULL, err);
  if (st == FAGEN_OK) st = fg_kernel_get(ctx, cu, s, v, l, err);
  if (st != FAGEN_OK) return st;
  fg_bwd_params_fill(a, v, s->sm_count, p);
  if (v->op != FAGEN_OP_BWD_WGMMA) return FAGEN_OK;
  st = fg_tma_bwd_maps(cu, p, v, a->dtype, maps, err);
  if (st != FAGEN_E_CUDA || a->variant) return st;
  fg_logf(&ctx->log, FAGEN_LOG_INFO, "%s; running the mma.sync backward instead", err->msg);
  st = fg_bwd_select_sm80(a, &s->target, tune, v, NULL, err);
  if (st == FAGEN_OK) st = fg_kernel_get(ctx, cu, s, v, l, err);
  if (st == FAGEN_OK) fg_bwd_params_fill(a, v, s->sm_count, p);
  return st;
}

FAGEN_API fagen_status fagen_attention_backward(fagen_ctx *ctx,
                                                const fagen_attention_bwd_args *a, void *stream) {
  fg_err err;
  if (!ctx || !a) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_attention_backward: ctx or args is NULL");
    return fg_ctx_fail(ctx, &err);
  }
  fagen_status st = fg_bwd_validate(a, 1, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  /* The kernels' grids are 1-D: blocks of FG_BWD_DQ_ROWS query rows (the
   * deterministic dQ kernel) and of at least FG_BWD_MIN_BLOCK_KV keys. */
  const int64_t rows = (int64_t)fg_bwd_rows(a);
  if ((int64_t)a->batch * a->heads_q * ((a->seqlen_q + FG_BWD_DQ_ROWS - 1) / FG_BWD_DQ_ROWS) >
          INT32_MAX ||
      (int64_t)a->batch * a->heads_kv *
              ((a->seqlen_k + FG_BWD_MIN_BLOCK_KV - 1) / FG_BWD_MIN_BLOCK_KV) >
          INT32_MAX) {
    fg_fail(&err, FAGEN_E_BAD_SHAPE, "the problem is too large for one launch");
    return fg_ctx_fail(ctx, &err);
  }
  const fg_cuda_api *cu = fg_cuda(&err);
  if (!cu) return fg_ctx_fail(ctx, &err);
  CUstream cs = (CUstream)stream;
  fg_scope s;
  st = fg_scope_enter(ctx, cu, cs, &s, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  fagen_variant v;
  fg_launchable l;
  fg_bwd_params p;
  fg_tmaps_bwd maps; /* the wgmma kernel's second parameter */
  st = fg_bwd_prepare(ctx, cu, &s, a, &v, &l, &p, &maps, &err);
  CUdeviceptr ws = (CUdeviceptr)(uintptr_t)a->workspace, owned = 0;
  if (st == FAGEN_OK && !ws) {
    CUresult rc = cu->mem_alloc_async(&owned, fg_bwd_workspace_bytes(a), cs);
    if (rc != CUDA_SUCCESS)
      st = fg_cuda_fail(&err, rc, "cuMemAllocAsync (backward workspace)");
    ws = owned;
  }
  if (st == FAGEN_OK) {
    p.dsum = (float *)(uintptr_t)ws;
    p.dq_acc = a->deterministic ? NULL : (float *)(uintptr_t)(ws + fg_bwd_dq_offset(a));
    if (v.op == FAGEN_OP_BWD_WGMMA) { /* the pre kernel writes them, the main one reads */
      p.stats = (float *)(uintptr_t)(ws + fg_bwd_stats_offset(a));
      p.stats_ld = fg_bwd_stats_ld(a);
      st = fg_tma_bwd_workspace_maps(cu, &p, &v, &maps, &err);
    }
    void *params[] = {&p};
    void *main_params[] = {&p, &maps};
    const int per_block = l.fn_threads[FG_KFN_PRE] / 32;
    if (st == FAGEN_OK)
      st = fg_launch(cu, &l, FG_KFN_PRE, fg_aux_grid(rows, per_block), cs, params, &err);
    /* One CTA per block of keys of each kv head, both families. */
    if (st == FAGEN_OK)
      st = fg_launch(cu, &l, FG_KFN_MAIN,
                     (unsigned)((int64_t)p.kv_blocks * a->heads_kv * a->batch), cs,
                     v.op == FAGEN_OP_BWD_WGMMA ? main_params : params, &err);
    if (st == FAGEN_OK && !a->deterministic)
      st = fg_launch(cu, &l, FG_KFN_POST,
                     fg_aux_grid(rows * (a->head_dim / 8), l.fn_threads[FG_KFN_POST]), cs, params,
                     &err);
    if (st == FAGEN_OK && a->deterministic)
      st = fg_launch(cu, &l, FG_KFN_DQ,
                     (unsigned)((int64_t)(a->seqlen_q + FG_BWD_DQ_ROWS - 1) / FG_BWD_DQ_ROWS *
                                a->heads_q * a->batch),
                     cs, params, &err);
  }
  if (owned) cu->mem_free_async(owned, cs);
  fg_scope_leave(cu, &s);
  return st == FAGEN_OK ? FAGEN_OK : fg_ctx_fail(ctx, &err);
}
