/* Prints the layout of the public argument structs, "STRUCT FIELD OFFSET",
 * and "STRUCT sizeof SIZE": tests/check_ctypes_layout.py compares it with
 * the ctypes mirror in python/fagen_ctypes.py, which cannot see the header. */
#include <stddef.h>
#include <stdio.h>

#include "fagen.h"

#define F(s, f) printf("%s %s %zu\n", #s, #f, offsetof(s, f))
#define SIZE(s) printf("%s sizeof %zu\n", #s, sizeof(s))

int main(void) {
  F(fagen_strides, batch), F(fagen_strides, seq), F(fagen_strides, head), SIZE(fagen_strides);

  F(fagen_attention_features, cu_seqlens_q), F(fagen_attention_features, cu_seqlens_k);
  F(fagen_attention_features, total_q), F(fagen_attention_features, total_k);
  F(fagen_attention_features, seqused_q), F(fagen_attention_features, seqused_k);
  F(fagen_attention_features, window), F(fagen_attention_features, window_left);
  F(fagen_attention_features, window_right), F(fagen_attention_features, softcap);
  F(fagen_attention_features, alibi_slopes), F(fagen_attention_features, alibi_batch_stride);
  F(fagen_attention_features, dropout_p), F(fagen_attention_features, dropout_seed);
  F(fagen_attention_features, dropout_offset), SIZE(fagen_attention_features);

  F(fagen_attention_args, dtype), F(fagen_attention_args, batch);
  F(fagen_attention_args, seqlen_q), F(fagen_attention_args, seqlen_k);
  F(fagen_attention_args, heads_q), F(fagen_attention_args, heads_kv);
  F(fagen_attention_args, head_dim), F(fagen_attention_args, causal);
  F(fagen_attention_args, softmax_scale), F(fagen_attention_args, q);
  F(fagen_attention_args, k), F(fagen_attention_args, v), F(fagen_attention_args, o);
  F(fagen_attention_args, lse), F(fagen_attention_args, q_strides);
  F(fagen_attention_args, k_strides), F(fagen_attention_args, v_strides);
  F(fagen_attention_args, o_strides), F(fagen_attention_args, feat);
  F(fagen_attention_args, variant), SIZE(fagen_attention_args);

  F(fagen_attention_bwd_args, dtype), F(fagen_attention_bwd_args, batch);
  F(fagen_attention_bwd_args, seqlen_q), F(fagen_attention_bwd_args, seqlen_k);
  F(fagen_attention_bwd_args, heads_q), F(fagen_attention_bwd_args, heads_kv);
  F(fagen_attention_bwd_args, head_dim), F(fagen_attention_bwd_args, causal);
  F(fagen_attention_bwd_args, softmax_scale), F(fagen_attention_bwd_args, q);
  F(fagen_attention_bwd_args, k), F(fagen_attention_bwd_args, v);
  F(fagen_attention_bwd_args, o), F(fagen_attention_bwd_args, dout);
  F(fagen_attention_bwd_args, lse), F(fagen_attention_bwd_args, dq);
  F(fagen_attention_bwd_args, dk), F(fagen_attention_bwd_args, dv);
  F(fagen_attention_bwd_args, q_strides), F(fagen_attention_bwd_args, k_strides);
  F(fagen_attention_bwd_args, v_strides), F(fagen_attention_bwd_args, o_strides);
  F(fagen_attention_bwd_args, dout_strides), F(fagen_attention_bwd_args, dq_strides);
  F(fagen_attention_bwd_args, dk_strides), F(fagen_attention_bwd_args, dv_strides);
  F(fagen_attention_bwd_args, feat), F(fagen_attention_bwd_args, deterministic);
  F(fagen_attention_bwd_args, workspace), F(fagen_attention_bwd_args, workspace_bytes);
  F(fagen_attention_bwd_args, variant), SIZE(fagen_attention_bwd_args);
  return 0;
}
