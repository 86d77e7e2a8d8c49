/*
 * fg_jax_attention.h — what libfagen_jax exports: the XLA FFI handlers of
 * fagen's attention (one per stage) and two helpers for the Python side.
 * Python (python/fagen_jax/_lib.py) loads them with ctypes; the signatures
 * here are the contract.
 */
#ifndef FG_JAX_ATTENTION_H
#define FG_JAX_ATTENTION_H

#include <stddef.h>

#include "xla/ffi/api/c_api.h"

#if defined(__GNUC__)
#define FG_JAX_API __attribute__((visibility("default")))
#else
#define FG_JAX_API
#endif

/* Forward: args q, k, v[, seqused_q][, seqused_k]; results o, lse. */
FG_JAX_API XLA_FFI_Error *fagen_jax_fwd_instantiate(XLA_FFI_CallFrame *frame);
FG_JAX_API XLA_FFI_Error *fagen_jax_fwd_execute(XLA_FFI_CallFrame *frame);

/* Backward: args q, k, v, o, lse, dout[, seqused_q][, seqused_k]; results
 * dq, dk, dv, workspace. */
FG_JAX_API XLA_FFI_Error *fagen_jax_bwd_instantiate(XLA_FFI_CallFrame *frame);
FG_JAX_API XLA_FFI_Error *fagen_jax_bwd_execute(XLA_FFI_CallFrame *frame);

FG_JAX_API int fagen_jax_bwd_workspace_per_batch(int dtype, int seqlen_q, int seqlen_k,
                                                 int heads_q, int heads_kv, int head_dim,
                                                 int causal, int deterministic,
                                                 unsigned long long *bytes, char *msg,
                                                 size_t msg_size);
FG_JAX_API const char *fagen_jax_fagen_version(void);

#endif /* FG_JAX_ATTENTION_H */
