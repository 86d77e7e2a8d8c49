#include "fg_tma.h"

#include <string.h>

#include "fg_features.h"
#include "fg_forward.h"

/* One operand: dims {head_dim, seq, heads, batch} with element strides. */
static fagen_status fg_tma_encode(const fg_cuda_api *cu, CUtensorMap *map, const char *what,
                                  const void *base, CUtensorMapDataType type, int head_dim,
                                  int seq, int heads, int batch, int64_t stride_s,
                                  int64_t stride_h, int64_t stride_b, int rows, fg_err *err) {
  cuuint64_t dims[4] = {(cuuint64_t)head_dim, (cuuint64_t)seq, (cuuint64_t)heads,
                        (cuuint64_t)batch};
  int64_t st[3] = {stride_s * 2, stride_h * 2, stride_b * 2};
  /* An axis of extent 1 is never stepped along; its stride may be anything
     the driver accepts, and a zero one (allowed for inputs) is not. */
  for (int i = 0; i < 3; i++)
    if (dims[i + 1] == 1) st[i] = i ? st[i - 1] * (int64_t)dims[i] : ((int64_t)head_dim * 2 + 15) / 16 * 16;
  cuuint64_t strides[3] = {(cuuint64_t)st[0], (cuuint64_t)st[1], (cuuint64_t)st[2]};
  cuuint32_t box[4] = {64, (cuuint32_t)rows, 1, 1};
  cuuint32_t estride[4] = {1, 1, 1, 1};
  CUresult rc = cu->tensor_map_encode_tiled(
      map, type, 4, (void *)base, dims, strides, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (rc != CUDA_SUCCESS) {
    fg_cuda_fail(err, rc, "cuTensorMapEncodeTiled");
    fg_err_prefix(err, "%s (strides %lld, %lld, %lld bytes)", what, (long long)st[0],
                  (long long)st[1], (long long)st[2]);
    return err->status;
  }
  return FAGEN_OK;
}

/* One tensor to describe: its base, name (for errors), rows and strides
 * (elements) and the box's rows. */
typedef struct fg_tma_operand {
  CUtensorMap *map;
  const char *what;
  const void *base;
  int seq, heads;
  int64_t stride_s, stride_h, stride_b;
  int rows;
} fg_tma_operand;

static fagen_status fg_tma_encode_all(const fg_cuda_api *cu, fagen_dtype dtype, int head_dim,
                                      int batch, const fg_tma_operand *ops, int n, fg_err *err) {
  const CUtensorMapDataType t =
      dtype == FAGEN_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  for (int i = 0; i < n; i++) {
    const fg_tma_operand *o = &ops[i];
    fagen_status st = fg_tma_encode(cu, o->map, o->what, o->base, t, head_dim, o->seq, o->heads,
                                    batch, o->stride_s, o->stride_h, o->stride_b, o->rows, err);
    if (st != FAGEN_OK) return st;
  }
  return FAGEN_OK;
}

/* q, k and v: the same fields in the forward's and the backward's blocks. */
#define FG_TMA_QKV(p, v, out)                                                                 \
  {&(out)->q, "q", (p)->q, (p)->seqlen_q, (p)->heads_q, (p)->q_stride_s, (p)->q_stride_h,     \
   (p)->q_stride_b, (v)->block_q},                                                            \
      {&(out)->k, "k", (p)->k, (p)->seqlen_k, (p)->heads_kv, (p)->k_stride_s, (p)->k_stride_h, \
       (p)->k_stride_b, (v)->block_kv},                                                       \
      {&(out)->v, "v", (p)->v, (p)->seqlen_k, (p)->heads_kv, (p)->v_stride_s, (p)->v_stride_h, \
       (p)->v_stride_b, (v)->block_kv}

fagen_status fg_tma_fwd_maps(const fg_cuda_api *cu, const fg_fwd_params *p, const fagen_variant *v,
                             fagen_dtype dtype, fg_tmaps *out, fg_err *err) {
  memset(out, 0, sizeof *out);
  fg_tma_operand ops[] = {
      FG_TMA_QKV(p, v, out),
      {&out->o, "o", p->o, p->seqlen_q, p->heads_q, p->o_stride_s, p->o_stride_h, p->o_stride_b, 64},
  };
  /* Packed sequences: one batch entry of total rows; the kernel adds each
     sequence's offset to the row coordinate. */
  const int packed = p->total_q > 0;
  if (packed) {
    ops[0].seq = ops[3].seq = p->total_q;
    ops[1].seq = ops[2].seq = p->total_k;
  }
  return fg_tma_encode_all(cu, dtype, p->head_dim, packed ? 1 : p->batch, ops, 4, err);
}

fagen_status fg_tma_bwd_maps(const fg_cuda_api *cu, const fg_bwd_params *p, const fagen_variant *v,
                             fagen_dtype dtype, fg_tmaps_bwd *out, fg_err *err) {
  memset(out, 0, sizeof *out);
  const fg_tma_operand ops[] = {
      FG_TMA_QKV(p, v, out),
      {&out->dout, "dout", p->dout, p->seqlen_q, p->heads_q, p->do_stride_s, p->do_stride_h,
       p->do_stride_b, v->block_q},
  };
  return fg_tma_encode_all(cu, dtype, p->head_dim, p->batch, ops, 4, err);
}

fagen_status fg_tma_bwd_workspace_maps(const fg_cuda_api *cu, const fg_bwd_params *p,
                                       const fagen_variant *v, fg_tmaps_bwd *out, fg_err *err) {
  cuuint64_t dims[2] = {(cuuint64_t)p->stats_ld, (cuuint64_t)p->batch * p->heads_q * 2};
  cuuint64_t strides[1] = {(cuuint64_t)p->stats_ld * 4};
  cuuint32_t box[2] = {(cuuint32_t)v->block_q, 1};
  cuuint32_t estride[3] = {1, 1, 1};
  CUresult rc = cu->tensor_map_encode_tiled(
      &out->stats, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, p->stats, dims, strides, box, estride,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (rc != CUDA_SUCCESS) {
    fg_cuda_fail(err, rc, "cuTensorMapEncodeTiled");
    fg_err_prefix(err, "backward row statistics");
    return err->status;
  }
  /* dQacc: rows past seqlen_q of a head are outside the map (not written). */
  const cuuint64_t d = (cuuint64_t)v->head_dim;
  cuuint64_t qdims[3] = {d, (cuuint64_t)p->seqlen_q, (cuuint64_t)p->batch * p->heads_q};
  cuuint64_t qstrides[2] = {d * 4, (cuuint64_t)p->seqlen_q * d * 4};
  cuuint32_t qbox[3] = {32, (cuuint32_t)v->block_q, 1};
  rc = cu->tensor_map_encode_tiled(&out->dq_acc, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, p->dq_acc,
                                   qdims, qstrides, qbox, estride, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                   CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (rc != CUDA_SUCCESS) {
    fg_cuda_fail(err, rc, "cuTensorMapEncodeTiled");
    fg_err_prefix(err, "backward dQ accumulator");
    return err->status;
  }
  return FAGEN_OK;
}

static int fg_tma_stride_ok(int64_t stride, int extent) {
  return extent == 1 || (stride > 0 && stride * 2 < ((int64_t)1 << 40));
}

static int fg_tma_tensor_ok(fagen_strides given, int batch, int seq, int heads, int head_dim) {
  fagen_strides s = fg_effective(given, seq, heads, head_dim);
  return fg_tma_stride_ok(s.seq, seq) && fg_tma_stride_ok(s.head, heads) &&
         fg_tma_stride_ok(s.batch, batch);
}

int fg_tma_fwd_fits(const fagen_attention_args *a) {
  /* Packed sequences: [total, heads, head_dim] buffers, one batch entry. */
  const int packed = fg_features_packed(&a->feat);
  const int b = packed ? 1 : a->batch;
  const int sq = packed ? a->feat.total_q : a->seqlen_q, sk = packed ? a->feat.total_k : a->seqlen_k;
  return fg_tma_tensor_ok(a->q_strides, b, sq, a->heads_q, a->head_dim) &&
         fg_tma_tensor_ok(a->k_strides, b, sk, a->heads_kv, a->head_dim) &&
         fg_tma_tensor_ok(a->v_strides, b, sk, a->heads_kv, a->head_dim) &&
         fg_tma_tensor_ok(a->o_strides, b, sq, a->heads_q, a->head_dim);
}

int fg_tma_bwd_fits(const fagen_attention_bwd_args *a) {
  return fg_tma_tensor_ok(a->q_strides, a->batch, a->seqlen_q, a->heads_q, a->head_dim) &&
         fg_tma_tensor_ok(a->k_strides, a->batch, a->seqlen_k, a->heads_kv, a->head_dim) &&
         fg_tma_tensor_ok(a->v_strides, a->batch, a->seqlen_k, a->heads_kv, a->head_dim) &&
         fg_tma_tensor_ok(a->dout_strides, a->batch, a->seqlen_q, a->heads_q, a->head_dim);
}
