#include "fg_features.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fg_forward.h"

unsigned fg_features_bits(const fagen_attention_features *f) {
  unsigned bits = 0;
  if (f->cu_seqlens_q || f->cu_seqlens_k || f->seqused_q || f->seqused_k)
    bits |= FAGEN_FEATURE_VARLEN;
  if (f->window) bits |= FAGEN_FEATURE_WINDOW;
  if (f->softcap > 0.f) bits |= FAGEN_FEATURE_SOFTCAP;
  if (f->alibi_slopes) bits |= FAGEN_FEATURE_ALIBI;
  if (f->dropout_p > 0.f) bits |= FAGEN_FEATURE_DROPOUT;
  return bits;
}

int fg_features_packed(const fagen_attention_features *f) { return f->cu_seqlens_q != NULL; }

FAGEN_API fagen_status fagen_check_offsets(const int32_t *offsets, int n, int total,
                                           const char *what) {
  char msg[256];
  const char *name = what ? what : "offsets";
  if (!offsets) {
    snprintf(msg, sizeof msg, "fagen_check_offsets: %s is NULL", name);
    fg_set_last_error(FAGEN_E_NULL_POINTER, msg);
    return FAGEN_E_NULL_POINTER;
  }
  if (n < 0 || total < 0) {
    snprintf(msg, sizeof msg, "fagen_check_offsets: n %d and total %d must not be negative", n,
             total);
    fg_set_last_error(FAGEN_E_INVALID_ARGUMENT, msg);
    return FAGEN_E_INVALID_ARGUMENT;
  }
  for (int i = 0; i <= n; i++) {
    const char *why = NULL;
    if (offsets[i] < 0)
      why = "is negative";
    else if (i > 0 && offsets[i] < offsets[i - 1])
      why = "is below the offset before it";
    else if (offsets[i] > total)
      why = "exceeds the buffer's rows";
    if (why) {
      snprintf(msg, sizeof msg, "%s[%d] = %d %s (%s[%d] = %d, total %d)", name, i, offsets[i],
               why, name, i > 0 ? i - 1 : i, offsets[i > 0 ? i - 1 : i], total);
      fg_set_last_error(FAGEN_E_BAD_OFFSETS, msg);
      return FAGEN_E_BAD_OFFSETS;
    }
  }
  return FAGEN_OK;
}

fagen_status fg_features_validate(const fagen_attention_features *f, int seqlen_q, int seqlen_k,
                                  fg_err *err) {
  if ((f->cu_seqlens_q == NULL) != (f->cu_seqlens_k == NULL))
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                   "feat.cu_seqlens_%s is set but feat.cu_seqlens_%s is NULL: packed sequences "
                   "need both",
                   f->cu_seqlens_q ? "q" : "k", f->cu_seqlens_q ? "k" : "q");
  if (f->cu_seqlens_q && (f->total_q <= 0 || f->total_k <= 0))
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                   "feat.total_q %d and feat.total_k %d (rows of the packed buffers) must be "
                   "positive with feat.cu_seqlens_q/_k",
                   f->total_q, f->total_k);
  if (f->window != 0 && f->window != 1)
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT, "feat.window is %d; it must be 0 or 1",
                   f->window);
  if (f->window && (f->window_left < -1 || f->window_right < -1))
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                   "feat.window_left %d and feat.window_right %d must be >= -1 (-1: unbounded)",
                   f->window_left, f->window_right);
  /* Window bounds are int arithmetic on the device: keep them far from overflow. */
  if (f->window && (int64_t)seqlen_q + seqlen_k >= (1 << 29))
    return fg_fail(err, FAGEN_E_BAD_SHAPE,
                   "seqlen_q %d + seqlen_k %d must stay below 2^29 with a sliding window",
                   seqlen_q, seqlen_k);
  if (!isfinite(f->softcap) || f->softcap < 0.f)
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                   "feat.softcap %g must be finite and > 0 (0: no softcapping)",
                   (double)f->softcap);
  if (!(f->dropout_p >= 0.f && f->dropout_p < 1.f)) /* also NaN */
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT,
                   "feat.dropout_p %g must be in [0, 1) (0: no dropout)", (double)f->dropout_p);
  if (f->alibi_batch_stride < 0)
    return fg_fail(err, FAGEN_E_INVALID_ARGUMENT, "feat.alibi_batch_stride %lld is negative",
                   (long long)f->alibi_batch_stride);
  return FAGEN_OK;
}

fagen_status fg_features_check_arrays(const fagen_attention_features *f, fg_err *err) {
  const struct {
    const char *name;
    const void *p;
  } arrays[] = {{"feat.cu_seqlens_q", f->cu_seqlens_q}, {"feat.cu_seqlens_k", f->cu_seqlens_k},
                {"feat.seqused_q", f->seqused_q},       {"feat.seqused_k", f->seqused_k},
                {"feat.alibi_slopes", f->alibi_slopes}};
  for (size_t i = 0; i < FG_ARRAY_LEN(arrays); i++)
    if (arrays[i].p && !fg_aligned(arrays[i].p, 4))
      return fg_fail(err, FAGEN_E_MISALIGNED, "%s (%p) is not 4-byte aligned", arrays[i].name,
                     arrays[i].p);
  return FAGEN_OK;
}

void fg_features_params(const fagen_attention_features *f, int causal, int seqlen_q,
                        int seqlen_k, float scale, fg_feat_params *out) {
  memset(out, 0, sizeof *out);
  out->cu_q = f->cu_seqlens_q;
  out->cu_k = f->cu_seqlens_k;
  out->used_q = f->seqused_q;
  out->used_k = f->seqused_k;
  out->alibi = f->alibi_slopes;
  out->alibi_stride_b = f->alibi_batch_stride;
  out->total_q = f->cu_seqlens_q ? f->total_q : 0;
  out->total_k = f->cu_seqlens_k ? f->total_k : 0;
  /* "Unbounded" becomes an extent no row can reach (every |i + d - j| is
     below seqlen_q + seqlen_k), so the kernels need no special case. */
  const int big = seqlen_q + seqlen_k;
  int left = f->window && f->window_left >= 0 ? f->window_left : big;
  int right = f->window && f->window_right >= 0 ? f->window_right : big;
  if (left > big) left = big;
  if (right > big) right = big;
  if (causal && right > 0) right = 0;
  out->win_left = left;
  out->win_right = right;
  if (f->dropout_p > 0.f) {
    long p16 = lroundf(f->dropout_p * 65536.f); /* exact product; halves away from 0 */
    if (p16 > 65535) p16 = 65535;
    out->drop_p16 = (uint32_t)p16;
    out->drop_scale = (float)(65536.0 / (65536.0 - (double)p16));
    out->drop_key0 = (uint32_t)f->dropout_seed;
    out->drop_key1 = (uint32_t)(f->dropout_seed >> 32) ^ (uint32_t)(f->dropout_offset >> 32);
    out->drop_ctr3 = (uint32_t)f->dropout_offset;
  }
  if (f->softcap > 0.f) {
    out->cap_pre = scale / f->softcap;
    out->cap_log2 = f->softcap * 1.4426950408889634f;
  }
}
