/* fg_kernel_abi: the parameter blocks that the runtime passes to generated
 * kernels by value.  Each block's fields are listed once, here; the C struct
 * and the CUDA struct that the generator writes into every kernel come from
 * the same list, so they cannot drift apart (the kernel also static_asserts
 * the size). */
#ifndef FG_KERNEL_ABI_H
#define FG_KERNEL_ABI_H

#include <stdint.h>

#include "fg_base.h"

/* The run-time values of the features (fagen_attention_features), shared by
 * both blocks and prepared by the runtime (runtime/fg_features.c): NULL
 * pointers where a layout is not used; the window extents effective
 * (causal folded in, "unbounded" as a large finite value); the softcap as
 * scale / cap and cap * log2(e). */
#define FG_FEAT_PARAMS_FIELDS(X)                                             \
  X(const int32_t *, "const int *", cu_q) /* packed offsets, batch + 1 */   \
  X(const int32_t *, "const int *", cu_k)                                    \
  X(const int32_t *, "const int *", used_q) /* padded lengths, batch */     \
  X(const int32_t *, "const int *", used_k)                                  \
  X(const float *, "const float *", alibi) /* slopes */                      \
  X(int64_t, "fg_i64", alibi_stride_b)                                       \
  X(int32_t, "int", total_q) /* packed buffer rows */                        \
  X(int32_t, "int", total_k)                                                 \
  X(int32_t, "int", win_left)  /* >= 0 */                                    \
  X(int32_t, "int", win_right) /* >= 0, or 0 with causal */                  \
  X(float, "float", cap_pre)   /* scale / softcap */                         \
  X(float, "float", cap_log2)  /* softcap * log2(e) */                       \
  X(uint32_t, "unsigned", drop_key0) /* Philox key: seed_lo */               \
  X(uint32_t, "unsigned", drop_key1) /* seed_hi ^ offset_hi */               \
  X(uint32_t, "unsigned", drop_ctr3) /* offset_lo */                         \
  X(uint32_t, "unsigned", drop_p16)  /* keep iff 16-bit random >= p16 */     \
  X(float, "float", drop_scale)      /* 65536 / (65536 - p16) */             \
  X(int32_t, "int", feat_reserved)

#define FG_ABI_C_FIELD_(ctype, cudatype, name) ctype name;
typedef struct fg_feat_params {
  FG_FEAT_PARAMS_FIELDS(FG_ABI_C_FIELD_)
} fg_feat_params;
#undef FG_ABI_C_FIELD_


/* X(C type, CUDA type, name).  Strides are in elements; the grid is 1-D,
 * blockIdx.x = (b * heads_q + h) * q_blocks + q_block. */
#define FG_FWD_PARAMS_FIELDS(X)                                              \
  X(const void *, "const void *", q)                                         \
  X(const void *, "const void *", k)                                         \
  X(const void *, "const void *", v)                                         \
  X(void *, "void *", o)                                                     \
  X(float *, "float *", lse) /* NULL: not written */                         \
  X(int64_t, "fg_i64", q_stride_b)                                           \
  X(int64_t, "fg_i64", q_stride_s)                                           \
  X(int64_t, "fg_i64", q_stride_h)                                           \
  X(int64_t, "fg_i64", k_stride_b)                                           \
  X(int64_t, "fg_i64", k_stride_s)                                           \
  X(int64_t, "fg_i64", k_stride_h)                                           \
  X(int64_t, "fg_i64", v_stride_b)                                           \
  X(int64_t, "fg_i64", v_stride_s)                                           \
  X(int64_t, "fg_i64", v_stride_h)                                           \
  X(int64_t, "fg_i64", o_stride_b)                                           \
  X(int64_t, "fg_i64", o_stride_s)                                           \
  X(int64_t, "fg_i64", o_stride_h)                                           \
  X(int32_t, "int", batch)                                                   \
  X(int32_t, "int", heads_q)                                                 \
  X(int32_t, "int", heads_kv)                                                \
  X(int32_t, "int", seqlen_q)                                                \
  X(int32_t, "int", seqlen_k)                                                \
  X(int32_t, "int", head_dim) /* actual head_dim, <= the compiled one */     \
  X(int32_t, "int", q_blocks) /* ceil(seqlen_q / block_q) */                 \
  X(int32_t, "int", group)    /* heads_q / heads_kv */                       \
  X(float, "float", scale_log2) /* softmax scale * log2(e) */                \
  X(int32_t, "int", stats_ld) /* rows per (batch, head) in stats */         \
  FG_FEAT_PARAMS_FIELDS(X)                                                   \
  X(int32_t *, "int *", sched) /* Hopper forward with sequence lengths: the  \
                                  work-item counter, 0 at launch */

#define FG_ABI_C_FIELD_(ctype, cudatype, name) ctype name;
typedef struct fg_fwd_params {
  FG_FWD_PARAMS_FIELDS(FG_ABI_C_FIELD_)
} fg_fwd_params;
#undef FG_ABI_C_FIELD_

/* Appends the CUDA definition of struct fg_fwd_params. */
void fg_abi_fwd_struct(fg_buf *out);

/* Copies the feature fields into a forward parameter block. */
void fg_abi_fwd_set_features(fg_fwd_params *p, const fg_feat_params *f);

/* The backward kernels' block (templates/bwd_sm80.cu.tpl).  dsum and dq_acc
 * point into the workspace: D = rowsum(dO * O) as fp32 [batch, heads_q,
 * seqlen_q], and (atomic mode) the fp32 dQ accumulator [batch, heads_q,
 * seqlen_q, compiled head_dim].  stats (the Hopper backward only, else
 * NULL): per (batch, query head) stats_ld rows of LSE in the exp2 domain (+inf
 * where P must be 0), then stats_ld rows of D (0 past the end), stats_ld =
 * seqlen_q rounded up to FG_BWD_STATS_ALIGN, so that a block of rows is
 * 16-byte aligned for a bulk copy. */
#define FG_BWD_STATS_ALIGN 128
#define FG_BWD_STRIDES_(X, t)                                                \
  X(int64_t, "fg_i64", t##_stride_b)                                         \
  X(int64_t, "fg_i64", t##_stride_s)                                         \
  X(int64_t, "fg_i64", t##_stride_h)
#define FG_BWD_PARAMS_FIELDS(X)                                              \
  X(const void *, "const void *", q)                                         \
  X(const void *, "const void *", k)                                         \
  X(const void *, "const void *", v)                                         \
  X(const void *, "const void *", o)                                         \
  X(const void *, "const void *", dout)                                      \
  X(const float *, "const float *", lse)                                     \
  X(void *, "void *", dq)                                                    \
  X(void *, "void *", dk)                                                    \
  X(void *, "void *", dv)                                                    \
  X(float *, "float *", dsum)                                                \
  X(float *, "float *", dq_acc) /* NULL in the deterministic mode */         \
  X(float *, "float *", stats)  /* bwdwg: padded LSE2/D rows, see below */     \
  FG_BWD_STRIDES_(X, q)                                                      \
  FG_BWD_STRIDES_(X, k)                                                      \
  FG_BWD_STRIDES_(X, v)                                                      \
  FG_BWD_STRIDES_(X, o)                                                      \
  FG_BWD_STRIDES_(X, do)                                                     \
  FG_BWD_STRIDES_(X, dq)                                                     \
  FG_BWD_STRIDES_(X, dk)                                                     \
  FG_BWD_STRIDES_(X, dv)                                                     \
  X(int32_t, "int", batch)                                                   \
  X(int32_t, "int", heads_q)                                                 \
  X(int32_t, "int", heads_kv)                                                \
  X(int32_t, "int", seqlen_q)                                                \
  X(int32_t, "int", seqlen_k)                                                \
  X(int32_t, "int", head_dim)                                                \
  X(int32_t, "int", group)     /* heads_q / heads_kv */                      \
  X(int32_t, "int", q_blocks)  /* ceil(seqlen_q / block_q) */               \
  X(int32_t, "int", kv_blocks) /* ceil(seqlen_k / block_kv) */              \
  X(float, "float", scale_log2) /* softmax scale * log2(e) */                \
  X(float, "float", scale)                                                   \
  X(int32_t, "int", stats_ld) /* rows per (batch, head) in stats */         \
  X(int32_t, "int", lpt_heads) /* bwdwg causal: kv heads per grid chunk */   \
  FG_FEAT_PARAMS_FIELDS(X)

#define FG_ABI_C_FIELD_(ctype, cudatype, name) ctype name;
typedef struct fg_bwd_params {
  FG_BWD_PARAMS_FIELDS(FG_ABI_C_FIELD_)
} fg_bwd_params;
#undef FG_ABI_C_FIELD_

/* Appends the CUDA definition of struct fg_bwd_params. */
void fg_abi_bwd_struct(fg_buf *out);

/* Copies the feature fields into a backward parameter block. */
void fg_abi_bwd_set_features(fg_bwd_params *p, const fg_feat_params *f);

#endif
