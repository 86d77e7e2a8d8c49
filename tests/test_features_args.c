/* Masks and score features without a GPU: bad feature values get their own
 * status and a message naming the field, in the forward, the backward and
 * the selection, before the driver is touched; fagen_check_offsets; variant
 * names with feature tokens; the feature bits of selected and forced
 * variants.  Also the float64 reference's features against identities that
 * do not use the reference's own code path (features_ref). */
#include <criterion/criterion.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_features.h"
#include "fg_test.h"

#define FAKE(addr) ((const void *)(uintptr_t)(addr))

/* Valid calls with fake (aligned) pointers and no features. */
#define SHAPE(a)                                                                   \
  ((a).dtype = FAGEN_DTYPE_BF16, (a).batch = 3, (a).seqlen_q = 200, (a).seqlen_k = 300, \
   (a).heads_q = 8, (a).heads_kv = 2, (a).head_dim = 128, (a).q = FAKE(0x10000),         \
   (a).k = FAKE(0x20000), (a).v = FAKE(0x30000))

static fagen_attention_args good_fwd(void) {
  fagen_attention_args a;
  fagen_attention_args_init(&a);
  SHAPE(a);
  a.o = (void *)(uintptr_t)0x40000;
  a.lse = (float *)(uintptr_t)0x50000;
  return a;
}

static fagen_attention_bwd_args good_bwd(void) {
  fagen_attention_bwd_args a;
  fagen_attention_bwd_args_init(&a);
  SHAPE(a);
  a.o = FAKE(0x40000), a.dout = FAKE(0x60000);
  a.dq = (void *)(uintptr_t)0x70000, a.dk = (void *)(uintptr_t)0x80000;
  a.dv = (void *)(uintptr_t)0x90000;
  a.lse = (const float *)(uintptr_t)0x50000;
  return a;
}

/* Features that are all valid: packed offsets, both lengths, a window, a
 * cap, slopes (device arrays at fake 16-byte aligned addresses) and
 * dropout. */
static fagen_attention_features all_features(void) {
  fagen_attention_features f;
  memset(&f, 0, sizeof f);
  f.cu_seqlens_q = FAKE(0xa000), f.cu_seqlens_k = FAKE(0xb000);
  f.total_q = 500, f.total_k = 700;
  f.seqused_q = FAKE(0xc000), f.seqused_k = FAKE(0xd000);
  f.window = 1, f.window_left = 16, f.window_right = 0;
  f.softcap = 30.f;
  f.alibi_slopes = FAKE(0xe000);
  f.alibi_batch_stride = 8;
  f.dropout_p = 0.1f, f.dropout_seed = 0x123456789abcdefull, f.dropout_offset = 1ull << 40;
  return f;
}

static const fagen_device_class *h100(void) {
  static fagen_device_class dc;
  cr_assert_eq(fagen_device_class_parse("NVIDIA H100 80GB HBM3,sm_90a,132", &dc), FAGEN_OK);
  return &dc;
}

static void expect_status(fagen_ctx *ctx, const char *call, fagen_status st, fagen_status want,
                          const char *needle) {
  cr_assert_eq(st, want, "%s: got %s, want %s: %s", call, fagen_status_name(st),
               fagen_status_name(want), fagen_errmsg(ctx));
  cr_assert(strstr(fagen_errmsg(ctx), needle), "%s: message '%s' lacks '%s'", call,
            fagen_errmsg(ctx), needle);
}

/* The forward and the backward with features f fail with want and a message
 * holding needle; so do both selections, unless the failure is about
 * pointers (selection does not look at them). */
static void expect(fagen_attention_features f, fagen_status want, const char *needle) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  fagen_attention_args a = good_fwd();
  a.feat = f;
  fagen_attention_bwd_args b = good_bwd();
  b.feat = f;
  expect_status(ctx, "forward", fagen_attention_forward(ctx, &a, NULL), want, needle);
  expect_status(ctx, "backward", fagen_attention_backward(ctx, &b, NULL), want, needle);
  if (want != FAGEN_E_MISALIGNED) {
    fagen_variant v;
    expect_status(ctx, "select", fagen_attention_select(ctx, &a, h100(), &v, NULL), want, needle);
    expect_status(ctx, "backward_select",
                  fagen_attention_backward_select(ctx, &b, h100(), &v, NULL), want, needle);
  }
  fagen_ctx_destroy(ctx);
}

Test(features_args, packed_offsets_need_both_arrays_and_totals) {
  fagen_attention_features f = all_features();
  f.cu_seqlens_k = NULL;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "cu_seqlens_k");
  f = all_features();
  f.cu_seqlens_q = NULL;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "cu_seqlens_q");
  f = all_features();
  f.total_q = 0;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "total_q");
  f = all_features();
  f.total_k = -3;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "total_k");
}

Test(features_args, window_flag_and_extents) {
  fagen_attention_features f = all_features();
  f.window = 2;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "window");
  f.window = -1;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "window");
  f = all_features();
  f.window_left = -2;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "window_left");
  f = all_features();
  f.window_right = -7;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "window_right");
}

Test(features_args, softcap_must_be_finite_and_not_negative) {
  const float bad[] = {-1.f, -1e-30f, NAN, INFINITY, -INFINITY};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fagen_attention_features f = all_features();
    f.softcap = bad[i];
    expect(f, FAGEN_E_INVALID_ARGUMENT, "softcap");
  }
}

Test(features_args, dropout_p_in_0_1) {
  const float bad[] = {-0.1f, -1e-30f, 1.f, 1.5f, NAN, INFINITY, -INFINITY, -NAN};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fagen_attention_features f = all_features();
    f.dropout_p = bad[i];
    expect(f, FAGEN_E_INVALID_ARGUMENT, "dropout_p");
  }
  /* the largest float below 1 is valid (p16 65535), and so are -0 and tiny p */
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  const float good[] = {nextafterf(1.f, 0.f), -0.f, 1e-30f, 0.5f};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    fagen_attention_args a = good_fwd();
    fagen_attention_bwd_args b = good_bwd();
    a.feat = b.feat = all_features();
    a.feat.dropout_p = b.feat.dropout_p = good[i];
    fagen_variant v;
    cr_assert_eq(fagen_attention_select(ctx, &a, h100(), &v, NULL), FAGEN_OK, "%g: %s",
                 (double)good[i], fagen_errmsg(ctx));
    cr_assert_eq(fagen_attention_backward_select(ctx, &b, h100(), &v, NULL), FAGEN_OK, "%g: %s",
                 (double)good[i], fagen_errmsg(ctx));
  }
  fagen_ctx_destroy(ctx);
}

Test(features_args, alibi_batch_stride_not_negative) {
  fagen_attention_features f = all_features();
  f.alibi_batch_stride = -1;
  expect(f, FAGEN_E_INVALID_ARGUMENT, "alibi_batch_stride");
}

Test(features_args, device_arrays_4_byte_aligned) {
  const char *names[] = {"cu_seqlens_q", "cu_seqlens_k", "seqused_q", "seqused_k",
                         "alibi_slopes"};
  for (int i = 0; i < 5; i++) {
    fagen_attention_features f = all_features();
    const void **p[] = {(const void **)&f.cu_seqlens_q, (const void **)&f.cu_seqlens_k,
                        (const void **)&f.seqused_q, (const void **)&f.seqused_k,
                        (const void **)&f.alibi_slopes};
    *p[i] = FAKE(0xf002);
    expect(f, FAGEN_E_MISALIGNED, names[i]);
  }
}

/* ---- fagen_check_offsets ------------------------------------------------ */

/* 1 if the decimal number n stands in s as a whole run of digits. */
static int has_number(const char *s, int n) {
  for (const char *p = s; *p; p++)
    if (isdigit((unsigned char)*p) && (p == s || !isdigit((unsigned char)p[-1])) &&
        strtol(p, NULL, 10) == n)
      return 1;
  return 0;
}

static void expect_bad_offsets(const int32_t *off, int n, int total, int index) {
  fagen_status st = fagen_check_offsets(off, n, total, "cu_seqlens_k");
  cr_assert_eq(st, FAGEN_E_BAD_OFFSETS, "got %s", fagen_status_name(st));
  const char *msg = fagen_last_error();
  cr_assert(strstr(msg, "cu_seqlens_k"), "message '%s' does not name the array", msg);
  cr_assert(has_number(msg, index), "message '%s' lacks the index %d", msg, index);
}

Test(features_args, check_offsets) {
  const int32_t ok[] = {0, 3, 3, 10};
  cr_assert_eq(fagen_check_offsets(ok, 3, 10, "cu_seqlens_q"), FAGEN_OK, "%s",
               fagen_last_error());
  cr_assert_eq(fagen_check_offsets(ok, 3, 12, "cu_seqlens_q"), FAGEN_OK);
  const int32_t start_late[] = {2, 4};
  cr_assert_eq(fagen_check_offsets(start_late, 1, 4, "x"), FAGEN_OK, "%s", fagen_last_error());
  cr_assert_eq(fagen_check_offsets(ok, 0, 0, "x"), FAGEN_OK, "no sequence: only offsets[0]");
  const int32_t decreasing[] = {0, 5, 4, 9};
  expect_bad_offsets(decreasing, 3, 9, 2);
  const int32_t negative[] = {-1, 2, 3};
  expect_bad_offsets(negative, 2, 5, 0);
  const int32_t beyond[] = {0, 4, 11};
  expect_bad_offsets(beyond, 2, 10, 2);
  const int32_t later_beyond[] = {1, 3, 30, 31};
  expect_bad_offsets(later_beyond, 3, 20, 2);
  cr_assert_eq(fagen_check_offsets(NULL, 3, 10, "cu_seqlens_q"), FAGEN_E_NULL_POINTER);
}

/* ---- variant names ------------------------------------------------------ */

static const char *const TOKENS[] = {"varlen", "window", "softcap", "alibi", "dropout"};
enum { NTOKENS = sizeof TOKENS / sizeof TOKENS[0] };

Test(features_args, variant_names_round_trip_every_feature_subset) {
  const char *ops[] = {"fwd", "bwd", "bwddet"};
  for (int op = 0; op < 3; op++)
    for (int causal = 0; causal < 2; causal++)
      for (unsigned bits = 0; bits <= FAGEN_FEATURES_ALL; bits++) {
        char want[FAGEN_VARIANT_NAME_MAX * 2], name[FAGEN_VARIANT_NAME_MAX];
        int n = snprintf(want, sizeof want, "%s_d128_bq64_bk128_w8_s2%s", ops[op],
                         causal ? "_causal" : "");
        for (int t = 0; t < NTOKENS; t++)
          if (bits & (1u << t)) n += snprintf(want + n, sizeof want - n, "_%s", TOKENS[t]);
        snprintf(want + n, sizeof want - n, "_fp16_sm90a");
        fagen_variant v;
        cr_assert_eq(fagen_variant_parse(want, &v), FAGEN_OK, "%s: %s", want,
                     fagen_last_error());
        cr_assert_eq(v.features, bits, "%s parsed to features %u", want, v.features);
        cr_assert_eq(v.causal, causal);
        cr_assert_eq(v.op, (fagen_op)op);
        cr_assert_eq(v.dtype, FAGEN_DTYPE_FP16);
        cr_assert_eq(v.head_dim, 128);
        cr_assert_eq(v.target.arch, 90);
        cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_OK);
        cr_assert_str_eq(name, want);
      }
  cr_assert_eq(1u << NTOKENS, FAGEN_FEATURES_ALL + 1, "a feature bit without a token here");
  /* The longest name still fits FAGEN_VARIANT_NAME_MAX. */
  fagen_variant v;
  cr_assert_eq(fagen_variant_parse("bwddet_d256_bq128_bk128_w16_s4_causal_varlen_window_"
                                   "softcap_alibi_dropout_fp16_sm100a",
                                   &v),
               FAGEN_OK, "%s", fagen_last_error());
  cr_assert_eq(v.features, FAGEN_FEATURES_ALL);
  char name[FAGEN_VARIANT_NAME_MAX];
  cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_OK);
  v.features = FAGEN_FEATURES_ALL + 1; /* a bit with no token */
  cr_assert_eq(fagen_variant_name(&v, name, sizeof name), FAGEN_E_INVALID_ARGUMENT);
}

Test(features_args, variant_parse_rejects_bad_feature_tokens) {
  const char *bad[] = {
      "fwd_d128_bq128_bk64_w4_s2_rope_bf16_sm80",           /* unknown */
      "fwd_d128_bq128_bk64_w4_s2_dropout_dropout_bf16_sm80", /* duplicated */
      "fwd_d128_bq128_bk64_w4_s2_dropout_alibi_bf16_sm80",  /* out of order */
      "fwd_d128_bq128_bk64_w4_s2_dropout_causal_bf16_sm80", /* causal after a feature */
      "fwd_d128_bq128_bk64_w4_s2_drop_bf16_sm80",           /* a prefix */
      "fwd_d128_bq128_bk64_w4_s2_varlen_varlen_bf16_sm80",  /* duplicated */
      "fwd_d128_bq128_bk64_w4_s2_alibi_alibi_bf16_sm80",    /* duplicated */
      "fwd_d128_bq128_bk64_w4_s2_window_varlen_bf16_sm80",  /* out of order */
      "fwd_d128_bq128_bk64_w4_s2_alibi_softcap_bf16_sm80",  /* out of order */
      "fwd_d128_bq128_bk64_w4_s2_varlen_causal_bf16_sm80",  /* causal after a feature */
      "fwd_d128_bq128_bk64_w4_s2_causal_causal_bf16_sm80",  /* duplicated causal */
      "fwd_d128_bq128_bk64_w4_s2_varlen__window_bf16_sm80", /* empty token */
      "fwd_d128_bq128_bk64_w4_s2_Varlen_bf16_sm80",         /* case */
      "fwd_d128_bq128_bk64_w4_s2_bf16_varlen_sm80",         /* after the dtype */
      "fwd_d128_bq128_bk64_w4_s2_bf16_sm80_varlen",         /* after the target */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fagen_variant v;
    cr_assert_eq(fagen_variant_parse(bad[i], &v), FAGEN_E_BAD_NAME, "%s parsed", bad[i]);
  }
}

/* ---- selection ---------------------------------------------------------- */

/* The features of calls and the bits they need. */
typedef struct use {
  const char *what;
  fagen_attention_features f;
  unsigned bits;
} use;

static int uses(use *out) {
  fagen_attention_features all = all_features(), z;
  memset(&z, 0, sizeof z);
  int n = 0;
  out[n++] = (use){"none", z, 0};
  fagen_attention_features f = z;
  f.cu_seqlens_q = all.cu_seqlens_q, f.cu_seqlens_k = all.cu_seqlens_k;
  f.total_q = all.total_q, f.total_k = all.total_k;
  out[n++] = (use){"packed", f, FAGEN_FEATURE_VARLEN};
  f = z, f.seqused_k = all.seqused_k;
  out[n++] = (use){"padded keys", f, FAGEN_FEATURE_VARLEN};
  f = z, f.seqused_q = all.seqused_q;
  out[n++] = (use){"padded queries", f, FAGEN_FEATURE_VARLEN};
  f = z, f.window = 1, f.window_left = -1, f.window_right = -1;
  out[n++] = (use){"window (unbounded)", f, FAGEN_FEATURE_WINDOW};
  f = z, f.window = 0, f.window_left = 16, f.window_right = 4;
  out[n++] = (use){"extents without window", f, 0};
  f = z, f.softcap = 5.f;
  out[n++] = (use){"softcap", f, FAGEN_FEATURE_SOFTCAP};
  f = z, f.alibi_slopes = all.alibi_slopes;
  out[n++] = (use){"alibi", f, FAGEN_FEATURE_ALIBI};
  f = z, f.alibi_batch_stride = 8;
  out[n++] = (use){"a stride without slopes", f, 0};
  f = z, f.total_q = 10, f.total_k = 10;
  out[n++] = (use){"totals without offsets", f, 0};
  f = z, f.dropout_p = 0.1f;
  out[n++] = (use){"dropout", f, FAGEN_FEATURE_DROPOUT};
  f = z, f.dropout_p = 1e-30f; /* p16 = 0: nothing dropped, still the dropout kernel */
  out[n++] = (use){"tiny dropout", f, FAGEN_FEATURE_DROPOUT};
  f = z, f.dropout_p = -0.f, f.dropout_seed = 7, f.dropout_offset = 9;
  out[n++] = (use){"seed and offset without dropout", f, 0};
  f = all, f.seqused_q = f.seqused_k = NULL;
  out[n++] = (use){"all", f, FAGEN_FEATURES_ALL};
  f = all, f.dropout_p = 0;
  out[n++] = (use){"all but dropout", f, FAGEN_FEATURES_ALL & ~(unsigned)FAGEN_FEATURE_DROPOUT};
  f = all, f.cu_seqlens_q = f.cu_seqlens_k = NULL, f.softcap = 0, f.dropout_p = 0;
  out[n++] = (use){"padded, window, alibi", f,
                   FAGEN_FEATURE_VARLEN | FAGEN_FEATURE_WINDOW | FAGEN_FEATURE_ALIBI};
  return n;
}

Test(features_args, selected_variants_carry_the_calls_features) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  use u[24];
  const int n = uses(u);
  for (int i = 0; i < n; i++)
    for (int causal = 0; causal < 2; causal++)
      for (int det = 0; det < 2; det++) {
        fagen_attention_args a = good_fwd();
        fagen_attention_bwd_args b = good_bwd();
        a.feat = b.feat = u[i].f;
        a.causal = b.causal = causal;
        b.deterministic = det;
        a.head_dim = b.head_dim = det ? 96 : 128;
        fagen_variant v;
        char name[FAGEN_VARIANT_NAME_MAX];
        cr_assert_eq(fagen_attention_select(ctx, &a, h100(), &v, NULL), FAGEN_OK, "%s: %s",
                     u[i].what, fagen_errmsg(ctx));
        fagen_variant_name(&v, name, sizeof name);
        cr_assert_eq(v.features, u[i].bits, "%s: forward %s", u[i].what, name);
        /* h100() is sm_90a: calls with no feature but softcap and sequence
           lengths (packed or padded) go to the wgmma family */
        const int mma =
            (u[i].bits & ~(unsigned)(FAGEN_FEATURE_SOFTCAP | FAGEN_FEATURE_VARLEN)) != 0;
        cr_assert(v.op == (mma ? FAGEN_OP_FWD : FAGEN_OP_FWD_WGMMA) && v.causal == causal,
                  "%s: %s", u[i].what, name);
        cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK, "%s", name);
        cr_assert_eq(fagen_attention_backward_select(ctx, &b, h100(), &v, NULL), FAGEN_OK,
                     "%s: %s", u[i].what, fagen_errmsg(ctx));
        fagen_variant_name(&v, name, sizeof name);
        cr_assert_eq(v.features, u[i].bits, "%s: backward %s", u[i].what, name);
        /* and the plain non-deterministic ones to the wgmma backward */
        const fagen_op bwd_op =
            det ? FAGEN_OP_BWD_DET : u[i].bits ? FAGEN_OP_BWD : FAGEN_OP_BWD_WGMMA;
        cr_assert(v.op == bwd_op && v.causal == causal, "%s: %s", u[i].what, name);
        cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK, "%s", name);
      }
  fagen_ctx_destroy(ctx);
}

Test(features_args, forced_variants_must_have_the_calls_features) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  use u[24];
  const int n = uses(u);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      fagen_attention_args a = good_fwd();
      fagen_attention_bwd_args b = good_bwd();
      fagen_variant fv, bv, got;
      a.feat = b.feat = u[j].f; /* the variant is chosen for u[j], forced on u[i] */
      cr_assert_eq(fagen_attention_select(ctx, &a, h100(), &fv, NULL), FAGEN_OK);
      cr_assert_eq(fagen_attention_backward_select(ctx, &b, h100(), &bv, NULL), FAGEN_OK);
      a.feat = b.feat = u[i].f;
      a.variant = &fv;
      b.variant = &bv;
      fagen_select_info info;
      if (u[i].bits == u[j].bits) {
        cr_assert_eq(fagen_attention_select(ctx, &a, h100(), &got, &info), FAGEN_OK, "%s",
                     fagen_errmsg(ctx));
        cr_assert_eq(info.source, FAGEN_SELECT_FORCED);
        cr_assert_eq(fagen_attention_backward_select(ctx, &b, h100(), &got, NULL), FAGEN_OK,
                     "%s", fagen_errmsg(ctx));
        continue;
      }
      expect_status(ctx, "select", fagen_attention_select(ctx, &a, h100(), &got, NULL),
                    FAGEN_E_INVALID_ARGUMENT, "does not fit");
      expect_status(ctx, "backward_select",
                    fagen_attention_backward_select(ctx, &b, h100(), &got, NULL),
                    FAGEN_E_INVALID_ARGUMENT, "does not fit");
      expect_status(ctx, "forward", fagen_attention_forward(ctx, &a, NULL),
                    FAGEN_E_INVALID_ARGUMENT, "does not fit");
      expect_status(ctx, "backward", fagen_attention_backward(ctx, &b, NULL),
                    FAGEN_E_INVALID_ARGUMENT, "does not fit");
    }
  fagen_ctx_destroy(ctx);
}

/* ---- the float64 reference's features ----------------------------------- */

/* Inputs of a reference case: q, k, v, dout with row strides padded by 8. */
typedef struct ref_case {
  fg_ref_args a;
  fg_ref_features f;
  uint16_t *t[4]; /* q, k, v, dout */
  fagen_strides dos;
  size_t nq, nk; /* padded-view sizes of o/dq and dk/dv */
} ref_case;

/* rows_q/rows_k: rows of the (packed or padded) buffers per batch entry. */
static void ref_case_init(ref_case *c, int batch, int rows_q, int rows_k, int Sq, int Sk, int Hq,
                          int Hk, int D, int causal, uint64_t *rng) {
  memset(c, 0, sizeof *c);
  fagen_strides qs = {(int64_t)rows_q * (Hq * D + 8), Hq * D + 8, D};
  fagen_strides ks = {(int64_t)rows_k * (Hk * D + 8), Hk * D + 8, D};
  c->a = (fg_ref_args){FAGEN_DTYPE_BF16, batch, Sq, Sk, Hq, Hk, D, causal,
                       1.0 / sqrt((double)D), NULL, NULL, NULL, qs, ks, ks, &c->f};
  c->dos = qs;
  const size_t n[4] = {(size_t)batch * qs.batch, (size_t)batch * ks.batch,
                       (size_t)batch * ks.batch, (size_t)batch * qs.batch};
  for (int i = 0; i < 4; i++) {
    c->t[i] = malloc(n[i] * 2);
    for (size_t e = 0; e < n[i]; e++)
      c->t[i][e] = fg_elem_from_float(FAGEN_DTYPE_BF16, (i ? 1.f : 2.f) * fg_rand_uniform(rng));
  }
  c->a.q = c->t[0], c->a.k = c->t[1], c->a.v = c->t[2];
  c->nq = (size_t)batch * Sq * Hq * D;
  c->nk = (size_t)batch * Sk * Hk * D;
}

static void ref_case_free(ref_case *c) {
  for (int i = 0; i < 4; i++) free(c->t[i]);
}

/* The reference's outputs: o, lse, dq, dk, dv. */
typedef struct ref_out {
  double *o, *lse, *dq, *dk, *dv;
} ref_out;

static ref_out ref_run(const fg_ref_args *a, const uint16_t *dout, fagen_strides dos) {
  const size_t nq = (size_t)a->batch * a->seqlen_q * a->heads_q * a->head_dim;
  const size_t nk = (size_t)a->batch * a->seqlen_k * a->heads_kv * a->head_dim;
  ref_out r = {malloc(nq * 8 + 8), malloc((size_t)a->batch * a->heads_q * a->seqlen_q * 8 + 8),
               malloc(nq * 8 + 8), malloc(nk * 8 + 8), malloc(nk * 8 + 8)};
  fg_ref_attention(a, r.o, r.lse);
  fg_ref_attention_bwd(a, dout, dos, r.dq, r.dk, r.dv);
  return r;
}

static void ref_out_free(ref_out *r) {
  free(r->o), free(r->lse), free(r->dq), free(r->dk), free(r->dv);
}

/* Each sequence of c, run on its own (batch 1, its own lengths, its slopes,
 * no length arrays), gives bitwise the rows of the batched run; rows past a
 * sequence's lengths are 0 (lse -inf).  With dropout the mask depends on the
 * sequence index b, so sequence b runs as the last of b + 1 packed
 * sequences, the first b of them empty (its slopes then stay at index b). */
static void check_against_sequences(const ref_case *c) {
  const fg_ref_args *a = &c->a;
  const int Sq = a->seqlen_q, Sk = a->seqlen_k, Hq = a->heads_q, Hk = a->heads_kv;
  const int D = a->head_dim;
  ref_out all = ref_run(a, c->t[3], c->dos);
  for (int b = 0; b < a->batch; b++) {
    int lq, lk;
    fg_ref_lengths(a, b, &lq, &lk);
    const int64_t q0 = c->f.cu_seqlens_q ? c->f.cu_seqlens_q[b] * a->qs.seq : b * a->qs.batch;
    const int64_t k0 = c->f.cu_seqlens_k ? c->f.cu_seqlens_k[b] * a->ks.seq : b * a->ks.batch;
    const int lead = c->f.dropout_p > 0 ? b : 0; /* empty sequences before it */
    int32_t cu1[2][64] = {{0}};
    cr_assert(lead + 2 <= 64);
    cu1[0][lead + 1] = lq, cu1[1][lead + 1] = lk;
    fg_ref_features f1 = c->f;
    f1.cu_seqlens_q = f1.cu_seqlens_k = f1.seqused_q = f1.seqused_k = NULL;
    if (lead) f1.cu_seqlens_q = cu1[0], f1.cu_seqlens_k = cu1[1];
    if (f1.alibi_slopes) f1.alibi_slopes += (b - lead) * c->f.alibi_batch_stride;
    fg_ref_args one = *a;
    one.batch = lead + 1, one.seqlen_q = lq, one.seqlen_k = lk, one.feat = &f1;
    one.q = a->q + q0, one.k = a->k + k0, one.v = a->v + k0;
    ref_out r = ref_run(&one, c->t[3] + q0, c->dos);
    for (int h = 0; h < Hq; h++)
      for (int i = 0; i < Sq; i++) {
        const double *o = all.o + (((size_t)b * Sq + i) * Hq + h) * D;
        const double *dq = all.dq + (((size_t)b * Sq + i) * Hq + h) * D;
        const double lse = all.lse[((size_t)b * Hq + h) * Sq + i];
        if (i < lq) {
          const size_t at1 = (((size_t)lead * lq + i) * Hq + h) * D;
          cr_assert_eq(memcmp(o, r.o + at1, D * 8), 0, "o b%d h%d i%d", b, h, i);
          cr_assert_eq(memcmp(dq, r.dq + at1, D * 8), 0, "dq b%d i%d", b, i);
          cr_assert_eq(memcmp(&lse, r.lse + ((size_t)lead * Hq + h) * lq + i, 8), 0,
                       "lse b%d h%d i%d", b, h, i);
          continue;
        }
        cr_assert(lse == -INFINITY, "lse of padded row b%d i%d is %g", b, i, lse);
        for (int e = 0; e < D; e++) cr_assert(o[e] == 0 && dq[e] == 0, "padded row b%d i%d", b, i);
      }
    for (int h = 0; h < Hk; h++)
      for (int j = 0; j < Sk; j++) {
        const size_t at = (((size_t)b * Sk + j) * Hk + h) * D;
        const size_t at1 = (((size_t)lead * lk + j) * Hk + h) * D;
        if (j < lk) {
          cr_assert_eq(memcmp(all.dk + at, r.dk + at1, D * 8), 0, "dk b%d h%d j%d", b, h, j);
          cr_assert_eq(memcmp(all.dv + at, r.dv + at1, D * 8), 0, "dv b%d h%d j%d", b, h, j);
          continue;
        }
        for (int e = 0; e < D; e++)
          cr_assert(all.dk[at + e] == 0 && all.dv[at + e] == 0, "padded key b%d j%d", b, j);
      }
    ref_out_free(&r);
  }
  ref_out_free(&all);
}

Test(features_ref, packed_equals_each_sequence_alone) {
  uint64_t rng = fg_rand_seed();
  const int32_t cu_q[] = {0, 5, 5, 22, 31}, cu_k[] = {2, 9, 12, 29, 30}; /* k starts at row 2 */
  const float slopes[] = {0.5f, 0.25f, 0.125f, 0.0625f, 0.3f, 0.2f, 0.1f, 0.05f,
                          1.0f, 0.7f,  0.4f,   0.2f,    0.01f, 0.02f, 0.03f, 0.04f};
  for (int causal = 0; causal < 2; causal++)
    for (int feats = 0; feats < 4; feats++) {
      ref_case c;
      /* one batch entry of 34 rows: the sequences, then rows outside every one */
      ref_case_init(&c, 1, 34, 34, 17, 17, 4, 2, 16, causal, &rng);
      c.a.batch = 4;
      c.f.cu_seqlens_q = cu_q, c.f.cu_seqlens_k = cu_k;
      if (feats & 1) {
        c.f.window = 1, c.f.window_left = 3, c.f.window_right = 2;
        c.f.softcap = 1.5;
        c.f.alibi_slopes = slopes, c.f.alibi_batch_stride = 4;
      }
      if (feats & 2) {
        c.f.dropout_p = 0.5f, c.f.dropout_seed = rng, c.f.dropout_offset = rng >> 7;
      }
      c.nq = (size_t)4 * 17 * 4 * 16;
      check_against_sequences(&c);
      ref_case_free(&c);
    }
}

Test(features_ref, padded_equals_the_unpadded_prefix) {
  uint64_t rng = fg_rand_seed();
  const int32_t used_q[] = {20, 0, 7, 3}, used_k[] = {99, 5, 0, 24}; /* 99: clamped to 24 */
  const float slopes[] = {0.5f, 0.25f, 0.125f, 0.0625f};
  for (int causal = 0; causal < 2; causal++)
    for (int feats = 0; feats < 4; feats++) {
      ref_case c;
      ref_case_init(&c, 4, 20, 24, 20, 24, 4, 1, 8, causal, &rng);
      c.f.seqused_q = feats == 2 ? NULL : used_q;
      c.f.seqused_k = used_k;
      if (feats) {
        c.f.window = 1, c.f.window_left = -1, c.f.window_right = 4;
        c.f.softcap = 30;
        c.f.alibi_slopes = slopes;
      }
      if (feats == 3) c.f.dropout_p = 0.1f, c.f.dropout_seed = rng;
      check_against_sequences(&c);
      ref_case_free(&c);
    }
}

/* Which keys each query row sees, '1' for seen, against hand-written rows. */
static void expect_mask(int Sq, int Sk, int causal, int window, int left, int right,
                        const char *const *want) {
  fg_ref_features f = {0};
  f.window = window, f.window_left = left, f.window_right = right;
  fg_ref_args a = {FAGEN_DTYPE_BF16, 1, Sq, Sk, 1, 1, 8, causal, 1.0, NULL, NULL, NULL,
                   {0, 0, 0},        {0, 0, 0}, {0, 0, 0}, &f};
  for (int i = 0; i < Sq; i++) {
    char got[64] = {0};
    for (int j = 0; j < Sk; j++) got[j] = fg_ref_visible(&a, 0, i, j) ? '1' : '0';
    cr_assert_str_eq(got, want[i], "Sq %d Sk %d causal %d window %d (%d, %d) row %d", Sq, Sk,
                     causal, window, left, right, i);
  }
}

Test(features_ref, window_and_causal_masks) {
  /* 4 queries, 6 keys: d = 2, the diagonal is j = i + 2 */
  expect_mask(4, 6, 0, 0, 5, 5, (const char *[]){"111111", "111111", "111111", "111111"});
  expect_mask(4, 6, 1, 0, 0, 0, (const char *[]){"111000", "111100", "111110", "111111"});
  expect_mask(4, 6, 0, 1, 1, 0, (const char *[]){"011000", "001100", "000110", "000011"});
  expect_mask(4, 6, 0, 1, 0, 0, (const char *[]){"001000", "000100", "000010", "000001"});
  expect_mask(4, 6, 0, 1, -1, 1, (const char *[]){"111100", "111110", "111111", "111111"});
  expect_mask(4, 6, 1, 1, -1, 1, (const char *[]){"111000", "111100", "111110", "111111"});
  expect_mask(4, 6, 0, 1, 2, -1, (const char *[]){"111111", "011111", "001111", "000111"});
  expect_mask(4, 6, 1, 1, 2, 5, (const char *[]){"111000", "011100", "001110", "000111"});
  /* 6 queries, 4 keys: d = -2; causal rows 0 and 1 see nothing */
  expect_mask(6, 4, 1, 0, 0, 0,
              (const char *[]){"0000", "0000", "1000", "1100", "1110", "1111"});
  expect_mask(6, 4, 0, 1, 0, 1,
              (const char *[]){"0000", "1000", "1100", "0110", "0011", "0001"});
}

/* sum over valid rows of dout . o, the loss whose gradients the backward gives */
static double loss(const ref_case *c, double scale) {
  fg_ref_args a = c->a;
  a.scale = scale;
  double *o = malloc(c->nq * 8), *lse = malloc((size_t)a.batch * a.heads_q * a.seqlen_q * 8);
  fg_ref_attention(&a, o, lse);
  double l = 0;
  for (int b = 0; b < a.batch; b++)
    for (int i = 0; i < a.seqlen_q; i++)
      for (int h = 0; h < a.heads_q; h++)
        for (int e = 0; e < a.head_dim; e++)
          l += o[(((size_t)b * a.seqlen_q + i) * a.heads_q + h) * a.head_dim + e] *
               fg_elem_to_float(a.dtype, c->t[3][b * c->dos.batch + i * c->dos.seq +
                                                 h * c->dos.head + e]);
  free(o), free(lse);
  return l;
}

/* sum of x . dx over the padded view (x read from its 16-bit tensor) */
static double dot_grad(const fg_ref_args *a, const uint16_t *x, fagen_strides st, const double *g,
                       int S, int H) {
  double s = 0;
  for (int b = 0; b < a->batch; b++)
    for (int i = 0; i < S; i++)
      for (int h = 0; h < H; h++)
        for (int e = 0; e < a->head_dim; e++)
          s += g[(((size_t)b * S + i) * H + h) * a->head_dim + e] *
               fg_elem_to_float(a->dtype, x[b * st.batch + i * st.seq + h * st.head + e]);
  return s;
}

/* The scores are scale * q.k, so sum q.dq = sum k.dk = scale * dL/dscale
 * (the cap's derivative included, the ALiBi term being free of scale), and
 * O is linear in V, so sum v.dv = L: checks the backward against a central
 * difference of the forward. */
Test(features_ref, gradients_match_finite_differences) {
  uint64_t rng = fg_rand_seed();
  const int32_t used_q[] = {13, 4}, used_k[] = {19, 2}; /* causal: b1 rows 0, 1 see no key */
  const float slopes[] = {0.5f, 0.25f, 0.125f, 0.0625f};
  for (int v = 0; v < 6; v++) {
    ref_case c;
    ref_case_init(&c, 2, 13, 19, 13, 19, 4, 2, 16, v & 1, &rng);
    c.f.seqused_q = used_q, c.f.seqused_k = used_k;
    c.f.window = 1, c.f.window_left = v == 2 || v == 3 ? 0 : 6;
    c.f.window_right = v == 2 || v == 3 ? 0 : 3;
    c.f.softcap = v == 3 || v == 5 ? 0 : 1.5;
    c.f.alibi_slopes = slopes;
    /* the mask is fixed under a change of scale: the identities still hold */
    c.f.dropout_p = v == 4 ? 0.5f : v == 5 ? 0.1f : 0, c.f.dropout_seed = rng;
    const double scale = c.a.scale, hs = 1e-5 * scale;
    ref_out r = ref_run(&c.a, c.t[3], c.dos);
    const double dl = (loss(&c, scale + hs) - loss(&c, scale - hs)) / (2 * hs) * scale;
    const double qdq = dot_grad(&c.a, c.t[0], c.a.qs, r.dq, 13, 4);
    const double kdk = dot_grad(&c.a, c.t[1], c.a.ks, r.dk, 19, 2);
    const double vdv = dot_grad(&c.a, c.t[2], c.a.vs, r.dv, 19, 2), l = loss(&c, scale);
    const double tol = 1e-6 * (fabs(dl) + 1e-3);
    cr_assert(fabs(qdq - dl) <= tol, "case %d: q.dq %.12g, d %.12g", v, qdq, dl);
    cr_assert(fabs(kdk - dl) <= tol, "case %d: k.dk %.12g, d %.12g", v, kdk, dl);
    cr_assert(fabs(vdv - l) <= 1e-9 * (fabs(l) + 1), "case %d: v.dv %.12g, L %.12g", v, vdv, l);
    for (size_t e = 0; e < c.nq; e++) cr_assert(!isnan(r.dq[e]) && !isnan(r.o[e]));
    if (c.a.causal) /* sequence 1 has 4 queries and 2 keys: d = -2 */
      for (int i = 0; i < 2; i++) {
        cr_assert(r.lse[(1 * 4 + 3) * 13 + i] == -INFINITY, "row %d sees a key", i);
        for (int e = 0; e < 16; e++) cr_assert(r.dq[(((size_t)1 * 13 + i) * 4 + 3) * 16 + e] == 0);
      }
    ref_out_free(&r);
    ref_case_free(&c);
  }
}

Test(features_ref, neutral_values_change_nothing) {
  uint64_t rng = fg_rand_seed();
  ref_case c;
  ref_case_init(&c, 2, 9, 11, 9, 11, 4, 2, 8, 1, &rng);
  c.a.feat = NULL;
  ref_out none = ref_run(&c.a, c.t[3], c.dos);
  c.a.feat = &c.f; /* all zero */
  ref_out zero = ref_run(&c.a, c.t[3], c.dos);
  const float zeros[8] = {0};
  c.f.alibi_slopes = zeros;
  c.f.window = 1, c.f.window_left = c.f.window_right = -1;
  c.f.dropout_seed = 77, c.f.dropout_offset = 99; /* without dropout_p */
  ref_out neutral = ref_run(&c.a, c.t[3], c.dos);
  c.f.dropout_p = 1e-30f; /* p16 = 0: all kept, factor 1 */
  ref_out tiny = ref_run(&c.a, c.t[3], c.dos);
  c.f.dropout_p = 0;
  const size_t nl = (size_t)2 * 4 * 9;
  const ref_out *rs[3] = {&zero, &neutral, &tiny};
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(memcmp(none.o, rs[i]->o, c.nq * 8), 0, "o %d", i);
    cr_assert_eq(memcmp(none.lse, rs[i]->lse, nl * 8), 0, "lse %d", i);
    cr_assert_eq(memcmp(none.dq, rs[i]->dq, c.nq * 8), 0, "dq %d", i);
    cr_assert_eq(memcmp(none.dk, rs[i]->dk, c.nk * 8), 0, "dk %d", i);
    cr_assert_eq(memcmp(none.dv, rs[i]->dv, c.nk * 8), 0, "dv %d", i);
  }
  /* a cap far above every score is the identity up to rounding */
  c.f.softcap = 1e7;
  ref_out capped = ref_run(&c.a, c.t[3], c.dos);
  for (size_t e = 0; e < c.nq; e++) cr_assert(fabs(capped.dq[e] - none.dq[e]) < 1e-9);
  for (size_t e = 0; e < c.nq; e++) cr_assert(fabs(capped.o[e] - none.o[e]) < 1e-9);
  /* one slope per head (stride 0) equals the same slopes repeated per batch */
  const float per_head[4] = {0.5f, 0.25f, 0.125f, 0.0625f};
  const float per_batch[8] = {0.5f, 0.25f, 0.125f, 0.0625f, 0.5f, 0.25f, 0.125f, 0.0625f};
  c.f.softcap = 0;
  c.f.alibi_slopes = per_head, c.f.alibi_batch_stride = 0;
  ref_out s0 = ref_run(&c.a, c.t[3], c.dos);
  c.f.alibi_slopes = per_batch, c.f.alibi_batch_stride = 4;
  ref_out s4 = ref_run(&c.a, c.t[3], c.dos);
  cr_assert_eq(memcmp(s0.o, s4.o, c.nq * 8), 0);
  cr_assert_eq(memcmp(s0.dk, s4.dk, c.nk * 8), 0);
  cr_assert_neq(memcmp(s0.o, none.o, c.nq * 8), 0, "ALiBi changed nothing");
  /* fg_ref_row agrees with the whole forward */
  double row[8], lse;
  fg_ref_row(&c.a, 1, 3, 8, row, &lse);
  cr_assert_eq(memcmp(row, s4.o + (((size_t)1 * 9 + 8) * 4 + 3) * 8, 8 * 8), 0);
  cr_assert_eq(lse, s4.lse[(1 * 4 + 3) * 9 + 8]);
  /* dropout changes O and the gradients, never the lse */
  c.f.dropout_p = 0.5f;
  ref_out dropped = ref_run(&c.a, c.t[3], c.dos);
  cr_assert_eq(memcmp(dropped.lse, s4.lse, nl * 8), 0, "dropout changed the lse");
  cr_assert_neq(memcmp(dropped.o, s4.o, c.nq * 8), 0, "dropout changed nothing");
  cr_assert_neq(memcmp(dropped.dk, s4.dk, c.nk * 8), 0, "dropout changed no dK");
  ref_out *all[] = {&none, &zero, &neutral, &tiny, &capped, &s0, &s4, &dropped};
  for (int i = 0; i < 8; i++) ref_out_free(all[i]);
  ref_case_free(&c);
}

/* ---- dropout ------------------------------------------------------------ */

/* Random123's known answers for philox4x32 with 10 rounds (tests/kat_vectors
 * of github.com/DEShawResearch/random123): counter, key, output. */
Test(dropout_ref, philox_known_answers) {
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
       0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
       0x94fdcceb, 0x5001e420, 0x24126ea1},
  };
  for (int k = 0; k < 3; k++) {
    uint32_t out[4];
    fg_ref_philox(kat[k], kat[k] + 4, out);
    for (int w = 0; w < 4; w++)
      cr_assert_eq(out[w], kat[k][6 + w], "vector %d word %d: %08x, want %08x", k, w, out[w],
                   kat[k][6 + w]);
  }
}

/* Where each key j takes its 16 bits (fagen.h): with seed, offset, bh and i
 * all 0, keys j with (j >> 1) & 3 == 0 and j < 32 use counter {0, 0, 0, 0}
 * and key {0, 0}, the first known answer: j = 8 n + e is half e of word n. */
Test(dropout_ref, random_bits_come_from_the_specified_halves) {
  const uint32_t words[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
  for (int n = 0; n < 4; n++)
    for (int e = 0; e < 2; e++) {
      const int j = 8 * n + e;
      const uint32_t want = e ? words[n] >> 16 : words[n] & 0xffff;
      cr_assert_eq(fg_ref_dropout_random(0, 0, 0, 0, j), want, "j %d: %04x, want %04x", j,
                   fg_ref_dropout_random(0, 0, 0, 0, j), want);
    }
  /* and the counter and key words by hand for one element each */
  const uint64_t seed = 0x0123456789abcdefull, offset = 0xfedcba9876543210ull;
  const int bh = 37, i = 1000, j = 5 * 32 + 3 * 2 + 2 * 8 + 1; /* chunk 5, t 3, n 2, e 1 */
  const uint32_t ctr[4] = {4 * 5 + 3, 1000, 37, 0x76543210};
  const uint32_t key[2] = {0x89abcdef, 0x01234567 ^ 0xfedcba98};
  uint32_t r[4];
  fg_ref_philox(ctr, key, r);
  cr_assert_eq(fg_ref_dropout_random(seed, offset, bh, i, j), r[2] >> 16);
  cr_assert_eq(fg_ref_dropout_random(seed, offset, bh, i, j - 1), r[2] & 0xffff);
  /* the key holds seed_hi ^ offset_hi: these two (seed, offset) pairs share a mask */
  for (int jj = 0; jj < 64; jj++)
    cr_assert_eq(fg_ref_dropout_random(1ull << 32, 5, 3, 4, jj),
                 fg_ref_dropout_random(0, (1ull << 32) | 5, 3, 4, jj));
}

Test(dropout_ref, p16_rounding_and_factors) {
  cr_assert_eq(fg_ref_dropout_p16(0), 0);
  cr_assert_eq(fg_ref_dropout_p16(-0.0), 0);
  cr_assert_eq(fg_ref_dropout_p16(1e-30f), 0);
  cr_assert_eq(fg_ref_dropout_p16(0.1f), 6554);  /* 6553.6 */
  cr_assert_eq(fg_ref_dropout_p16(0.5f), 32768);
  cr_assert_eq(fg_ref_dropout_p16(0.9f), 58982); /* 58982.4 */
  cr_assert_eq(fg_ref_dropout_p16(1.0 / 65536), 1);
  cr_assert_eq(fg_ref_dropout_p16(nextafterf(1.f, 0.f)), 65535); /* 65535.996: at most 65535 */
  fg_ref_features f;
  memset(&f, 0, sizeof f);
  f.dropout_seed = 5;
  for (int j = 0; j < 100; j++) cr_assert_eq(fg_ref_dropout_factor(&f, 1, 2, j), 1.0);
  for (int j = 0; j < 100; j++) cr_assert_eq(fg_ref_dropout_factor(NULL, 1, 2, j), 1.0);
  f.dropout_p = 0.9f;
  int kept = 0;
  for (int j = 0; j < 1000; j++) {
    const double z = fg_ref_dropout_factor(&f, 1, 2, j);
    const int keep = fg_ref_dropout_random(5, 0, 1, 2, j) >= 58982;
    cr_assert_eq(z, keep ? 65536.0 / (65536 - 58982) : 0.0, "j %d: %g", j, z);
    kept += keep;
  }
  cr_assert(kept > 0 && kept < 1000);
}

/* The kept fraction over 10^6 elements (4 heads x 500 x 512, so every
 * counter word changes) is within 5 sigma of 1 - p16 / 65536, overall and for
 * each of the 8 halves a counter gives; kept elements carry the exact factor
 * and the mean factor is 1 within 5 sigma. */
Test(dropout_ref, kept_fraction_matches_p16) {
  const float ps[] = {0.1f, 0.5f, 0.9f};
  for (int k = 0; k < 3; k++) {
    fg_ref_features f;
    memset(&f, 0, sizeof f);
    f.dropout_p = ps[k], f.dropout_seed = 0x5eed0000ull + k, f.dropout_offset = 12345;
    const uint32_t p16 = fg_ref_dropout_p16(f.dropout_p);
    const double q = 1 - p16 / 65536.0, zk = 65536.0 / (65536.0 - p16);
    long kept = 0, kept_half[8] = {0}, n_half[8] = {0}, n = 0;
    double sum = 0;
    for (int bh = 0; bh < 4; bh++)
      for (int i = 0; i < 500; i++)
        for (int j = 0; j < 512; j++) {
          const double z = fg_ref_dropout_factor(&f, bh, i, j);
          cr_assert(z == 0 || z == zk, "factor %g", z);
          const int half = (j & 1) | ((j >> 3) & 3) << 1;
          kept += z != 0, kept_half[half] += z != 0, n_half[half]++, n++;
          sum += z;
        }
    const double sigma = sqrt(q * (1 - q) / n);
    cr_assert(fabs((double)kept / n - q) < 5 * sigma, "p %g: kept %.5f, want %.5f +- %.5f",
              (double)ps[k], (double)kept / n, q, 5 * sigma);
    for (int h = 0; h < 8; h++)
      cr_assert(fabs((double)kept_half[h] / n_half[h] - q) < 5 * sqrt(q * (1 - q) / n_half[h]),
                "p %g: half %d kept %.5f, want %.5f", (double)ps[k], h,
                (double)kept_half[h] / n_half[h], q);
    const double zsigma = zk * sqrt(q * (1 - q) / n);
    cr_assert(fabs(sum / n - 1) < 5 * zsigma, "p %g: mean factor %.6f", (double)ps[k], sum / n);
  }
}

/* Masks of other seeds, offsets (low or high half), heads, rows and columns
 * agree on about half the elements (p = 0.5), not all: each input reaches
 * the bits.  The same inputs give the same mask. */
Test(dropout_ref, masks_differ_across_seeds_offsets_and_positions) {
  enum { N = 64 * 256 };
  static unsigned char m[8][N];
  const struct {
    uint64_t seed, offset;
    int bh, i0, j0;
  } in[8] = {
      {1, 0, 0, 0, 0},          {2, 0, 0, 0, 0},          {1ull << 32 | 1, 0, 0, 0, 0},
      {1, 1, 0, 0, 0},          {1, 1ull << 32, 0, 0, 0}, {1, 0, 1, 0, 0},
      {1, 0, 0, 64, 0},         {1, 0, 0, 0, 256},
  };
  for (int c = 0; c < 8; c++) {
    fg_ref_features f;
    memset(&f, 0, sizeof f);
    f.dropout_p = 0.5f, f.dropout_seed = in[c].seed, f.dropout_offset = in[c].offset;
    for (int e = 0; e < N; e++)
      m[c][e] = fg_ref_dropout_factor(&f, in[c].bh, in[c].i0 + e / 256, in[c].j0 + e % 256) != 0;
  }
  for (int c = 1; c < 8; c++) {
    int same = 0;
    for (int e = 0; e < N; e++) same += m[0][e] == m[c][e];
    const double sigma = sqrt(0.25 / N);
    cr_assert(fabs((double)same / N - 0.5) < 5 * sigma, "input set %d agrees on %.4f of the mask",
              c, (double)same / N);
  }
  fg_ref_features f;
  memset(&f, 0, sizeof f);
  f.dropout_p = 0.5f, f.dropout_seed = 1;
  for (int e = 0; e < N; e++)
    cr_assert_eq(fg_ref_dropout_factor(&f, 0, e / 256, e % 256) != 0, m[0][e]);
}

/* Dropout keeps the expectation: the mean of O over many seeds approaches
 * the undropped O within 5 standard errors (Var z = (1 - q) / q). */
Test(dropout_ref, unbiased_over_seeds) {
  uint64_t rng = fg_rand_seed();
  ref_case c;
  ref_case_init(&c, 1, 3, 40, 3, 40, 1, 1, 8, 0, &rng);
  double o0[24], lse[3], o[24], mean[24] = {0}, var[24] = {0};
  c.a.feat = NULL;
  fg_ref_attention(&c.a, o0, lse);
  c.a.feat = &c.f;
  c.f.dropout_p = 0.3f;
  const double q = 1 - fg_ref_dropout_p16(c.f.dropout_p) / 65536.0;
  enum { SEEDS = 4000 };
  for (int s = 0; s < SEEDS; s++) {
    c.f.dropout_seed = 1000 + s;
    fg_ref_attention(&c.a, o, lse);
    for (int e = 0; e < 24; e++) mean[e] += o[e] / SEEDS;
  }
  /* the variance of O_e: sum_j P_j^2 v_je^2 (1 - q) / q, P computed here
     from q and k (no mask, no cap, no bias) */
  for (int i = 0; i < 3; i++) {
    double s[40], m = -INFINITY, sum = 0;
    for (int j = 0; j < 40; j++) {
      s[j] = 0;
      for (int d = 0; d < 8; d++)
        s[j] += fg_elem_to_float(c.a.dtype, c.a.q[i * c.a.qs.seq + d]) *
                fg_elem_to_float(c.a.dtype, c.a.k[j * c.a.ks.seq + d]);
      s[j] *= c.a.scale;
      m = s[j] > m ? s[j] : m;
    }
    for (int j = 0; j < 40; j++) sum += exp(s[j] - m);
    for (int j = 0; j < 40; j++) {
      const double pj = exp(s[j] - m) / sum;
      for (int d = 0; d < 8; d++) {
        const double v = fg_elem_to_float(c.a.dtype, c.a.v[j * c.a.vs.seq + d]);
        var[i * 8 + d] += pj * pj * v * v * (1 - q) / q;
      }
    }
  }
  for (int e = 0; e < 24; e++) {
    const double se = sqrt(var[e] / SEEDS);
    cr_assert(fabs(mean[e] - o0[e]) < 5 * se + 1e-12, "O[%d]: mean %.6f, undropped %.6f, se %.2e",
              e, mean[e], o0[e], se);
  }
  ref_case_free(&c);
}

/* The runtime's kernel parameters carry the specified p16, factor, Philox
 * key and counter word: the random numbers rebuilt from them equal the
 * reference's.  (Values exactly halfway between two p16 are left out: see
 * fg_ref_dropout_p16.) */
Test(dropout_ref, runtime_parameters_match_the_reference) {
  const float ps[] = {1e-30f, 1.0f / 65536, 0.1f, 0.3f, 0.5f, 0.9f, 0.999f,
                      nextafterf(1.f, 0.f)};
  const uint64_t seeds[][2] = {
      {0, 0}, {0x0123456789abcdefull, 0xfedcba9876543210ull}, {7, 1ull << 33}};
  for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++)
    for (int s = 0; s < 3; s++) {
      fagen_attention_features f;
      memset(&f, 0, sizeof f);
      f.dropout_p = ps[k], f.dropout_seed = seeds[s][0], f.dropout_offset = seeds[s][1];
      fg_feat_params prm;
      fg_features_params(&f, 0, 100, 100, 0.125f, &prm);
      const uint32_t p16 = fg_ref_dropout_p16(f.dropout_p);
      cr_assert_eq(prm.drop_p16, p16, "p %.9g: runtime p16 %u, reference %u", (double)ps[k],
                   prm.drop_p16, p16);
      cr_assert_eq(prm.drop_scale, (float)(65536.0 / (65536.0 - p16)), "p %.9g", (double)ps[k]);
      for (int j = 0; j < 64; j += 3) {
        const uint32_t uj = (uint32_t)j, ctr[4] = {4 * (uj >> 5) + ((uj >> 1) & 3), 11, 22,
                                                    prm.drop_ctr3};
        const uint32_t key[2] = {prm.drop_key0, prm.drop_key1};
        uint32_t r[4];
        fg_ref_philox(ctr, key, r);
        const uint32_t w = r[(uj >> 3) & 3], got = uj & 1 ? w >> 16 : w & 0xffff;
        cr_assert_eq(got, fg_ref_dropout_random(f.dropout_seed, f.dropout_offset, 22, 11, j),
                     "seed set %d j %d", s, j);
      }
    }
}

/* The mask the reference applies is the specified one at (b * heads_q + h,
 * i, j) with i and j within each packed sequence: with q = 0 every visible
 * P is 1 / len_k, and v_j = 2^(j / 8) e_(j % 8) makes O_i[e] * len_k / z the
 * bits kept(i, e), kept(i, e + 8), kept(i, e + 16). */
Test(dropout_ref, mask_positions_in_packed_sequences) {
  uint64_t rng = fg_rand_seed();
  const int32_t cu_q[] = {0, 9, 9, 20, 23}, cu_k[] = {1, 24, 31, 31, 45}; /* k starts at row 1 */
  ref_case c;
  ref_case_init(&c, 1, 26, 48, 11, 23, 3, 1, 8, 0, &rng);
  c.a.batch = 4;
  c.f.cu_seqlens_q = cu_q, c.f.cu_seqlens_k = cu_k;
  c.f.dropout_p = 0.5f, c.f.dropout_seed = rng, c.f.dropout_offset = rng * 3;
  for (int r = 0; r < 26; r++)
    for (int e = 0; e < 3 * 8; e++) c.t[0][r * c.a.qs.seq + e] = 0;
  for (int r = 0; r < 48; r++)
    for (int e = 0; e < 8; e++) c.t[2][r * c.a.vs.seq + e] = 0;
  /* v row of key j of sequence b: 2^(j / 8) at e = j % 8 */
  for (int b = 0; b < 4; b++)
    for (int j = 0; j < cu_k[b + 1] - cu_k[b]; j++)
      c.t[2][(cu_k[b] + j) * c.a.vs.seq + j % 8] =
          fg_elem_from_float(FAGEN_DTYPE_BF16, (float)(1 << (j / 8)));
  double *o = malloc(sizeof(double) * 4 * 11 * 3 * 8), lse[4 * 3 * 11];
  fg_ref_attention(&c.a, o, lse);
  const uint32_t p16 = fg_ref_dropout_p16(c.f.dropout_p);
  const double z = 65536.0 / (65536.0 - p16);
  int kept = 0, n = 0;
  for (int b = 0; b < 4; b++) {
    const int lq = cu_q[b + 1] - cu_q[b], lk = cu_k[b + 1] - cu_k[b];
    for (int h = 0; h < 3; h++)
      for (int i = 0; i < lq; i++)
        for (int e = 0; e < 8; e++) {
          const double code = o[(((size_t)b * 11 + i) * 3 + h) * 8 + e] * lk / z;
          cr_assert(fabs(code - nearbyint(code)) < 1e-9, "b%d h%d i%d e%d: %g", b, h, i, e, code);
          const int bits = (int)nearbyint(code);
          for (int j = e; j < lk; j += 8) {
            const int want =
                fg_ref_dropout_random(c.f.dropout_seed, c.f.dropout_offset, b * 3 + h, i, j) >=
                p16;
            cr_assert_eq((bits >> (j / 8)) & 1, want, "b%d h%d i%d j%d", b, h, i, j);
            kept += want, n++;
          }
        }
  }
  cr_assert(kept > n / 4 && kept < 3 * n / 4, "kept %d of %d", kept, n);
  free(o);
  ref_case_free(&c);
}
