/* The backward without a GPU: each bad input gets its own status and a
 * message before anything touches the driver or is launched; the workspace
 * size; selection of backward variants. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_test.h"

/* A valid call with fake (aligned) pointers. */
static fagen_attention_bwd_args good(void) {
  fagen_attention_bwd_args a;
  fagen_attention_bwd_args_init(&a);
  a.dtype = FAGEN_DTYPE_BF16;
  a.batch = 2;
  a.seqlen_q = 100;
  a.seqlen_k = 256;
  a.heads_q = 8;
  a.heads_kv = 2;
  a.head_dim = 120;
  void *p[] = {(void *)0x10000, (void *)0x20000, (void *)0x30000, (void *)0x40000,
               (void *)0x50000, (void *)0x60000, (void *)0x70000, (void *)0x80000};
  a.q = p[0], a.k = p[1], a.v = p[2], a.o = p[3], a.dout = p[4];
  a.dq = p[5], a.dk = p[6], a.dv = p[7];
  a.lse = (const float *)0x90000;
  return a;
}

/* The call fails with `want` and a message holding `needle`, whether or not a
 * driver is present: validation comes first.  (Where a GPU is present, the
 * good call would launch on fake pointers, so only bad calls are made.) */
static void expect(fagen_attention_bwd_args a, fagen_status want, const char *needle) {
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  fagen_status st = fagen_attention_backward(ctx, &a, NULL);
  cr_assert_eq(st, want, "got %s, want %s: %s", fagen_status_name(st), fagen_status_name(want),
               fagen_errmsg(ctx));
  cr_assert(strstr(fagen_errmsg(ctx), needle), "message '%s' lacks '%s'", fagen_errmsg(ctx),
            needle);
  fagen_ctx_destroy(ctx);
}

Test(bwd_args, missing_lse_and_null_tensors) {
  fagen_attention_bwd_args a = good();
  a.lse = NULL;
  expect(a, FAGEN_E_NULL_POINTER, "lse is NULL: the backward needs the forward's log-sum-exp");
  const char *names[] = {"q", "o", "dout", "dq", "dk", "dv"};
  for (int i = 0; i < 6; i++) {
    a = good();
    const void **in[] = {&a.q, &a.o, &a.dout};
    void **out[] = {&a.dq, &a.dk, &a.dv};
    if (i < 3)
      *in[i] = NULL;
    else
      *out[i - 3] = NULL;
    char msg[32];
    snprintf(msg, sizeof msg, "%s is NULL", names[i]);
    expect(a, FAGEN_E_NULL_POINTER, msg);
  }
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  cr_assert_eq(fagen_attention_backward(ctx, NULL, NULL), FAGEN_E_NULL_POINTER);
  a = good();
  cr_assert_eq(fagen_attention_backward(NULL, &a, NULL), FAGEN_E_NULL_POINTER);
  fagen_ctx_destroy(ctx);
}

Test(bwd_args, misaligned) {
  fagen_attention_bwd_args a = good();
  a.dout = (void *)0x50008;
  expect(a, FAGEN_E_MISALIGNED, "dout (0x50008) is not 16-byte aligned");
  a = good();
  a.lse = (const float *)0x90002;
  expect(a, FAGEN_E_MISALIGNED, "lse");
  a = good();
  a.workspace = (void *)0xa0004;
  a.workspace_bytes = 1u << 30;
  expect(a, FAGEN_E_MISALIGNED, "workspace");
}

/* O, dO and the gradients are read with q's (or k's) sizes and their own
 * strides: a stride that breaks the rules is caught per tensor. */
Test(bwd_args, strides_of_every_tensor) {
  fagen_attention_bwd_args a = good();
  a.dout_strides = (fagen_strides){0, 960, 120};
  a.dout_strides.batch = 100 * 960 + 4;
  expect(a, FAGEN_E_BAD_STRIDE, "dout batch stride");
  a = good();
  a.dk_strides = (fagen_strides){256 * 240, 0, 120};
  expect(a, FAGEN_E_BAD_STRIDE, "dk seq stride is 0 with 256 seq entries: outputs would overlap");
  a = good();
  a.dq_strides = (fagen_strides){-8, 960, 120};
  expect(a, FAGEN_E_BAD_STRIDE, "dq batch stride is -8");
  a = good();
  a.o_strides = (fagen_strides){8, 8, 3};
  expect(a, FAGEN_E_BAD_STRIDE, "o head stride 3");
}

Test(bwd_args, workspace) {
  fagen_attention_bwd_args a = good();
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  size_t bytes = 0;
  cr_assert_eq(fagen_attention_backward_workspace(ctx, &a, &bytes), FAGEN_OK, "%s",
               fagen_errmsg(ctx));
  /* D (fp32 per row, rounded to 16 bytes) + the fp32 dQ accumulator at the
   * compiled head_dim (120 -> 128) + the Hopper backward's LSE and D rows,
   * seqlen_q 100 padded to 128 per (batch, head) */
  size_t rows = 2 * 8 * 100;
  cr_assert_eq(bytes, rows * 4 + rows * 128 * 4 + 2 * 8 * 2 * 128 * 4);
  a.deterministic = 1;
  cr_assert_eq(fagen_attention_backward_workspace(ctx, &a, &bytes), FAGEN_OK);
  cr_assert_eq(bytes, rows * 4);
  a.seqlen_q = 3; /* 2 * 8 * 3 rows of 4 bytes = 192, a multiple of 16 already; 1 row: 64 */
  a.batch = 1;
  a.heads_q = 2;
  a.heads_kv = 1;
  cr_assert_eq(fagen_attention_backward_workspace(ctx, &a, &bytes), FAGEN_OK);
  cr_assert_eq(bytes, 32, "6 rows of 4 bytes rounded up to 16");
  cr_assert_eq(fagen_attention_backward_workspace(ctx, &a, NULL), FAGEN_E_NULL_POINTER);
  a.batch = 0;
  cr_assert_eq(fagen_attention_backward_workspace(ctx, &a, &bytes), FAGEN_E_BAD_SHAPE);
  fagen_ctx_destroy(ctx);

  a = good();
  a.workspace = (void *)0xa0000;
  a.workspace_bytes = rows * 4 + rows * 128 * 4 - 16;
  expect(a, FAGEN_E_BUFFER_TOO_SMALL, "the workspace has");
  a.workspace = NULL;
  expect(a, FAGEN_E_BUFFER_TOO_SMALL, "workspace is NULL");
}

Test(bwd_args, shapes_flags_and_forced_variants) {
  fagen_attention_bwd_args a = good();
  a.heads_kv = 3;
  expect(a, FAGEN_E_BAD_HEADS, "heads_q 8 is not a multiple of heads_kv 3");
  a = good();
  a.seqlen_k = 0;
  expect(a, FAGEN_E_BAD_SHAPE, "seqlen_k is 0");
  a = good();
  a.head_dim = 260;
  expect(a, FAGEN_E_UNSUPPORTED_HEAD_DIM, "head_dim 260");
  a = good();
  a.deterministic = 2;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "deterministic is 2");
  a = good();
  a.dtype = (fagen_dtype)7;
  expect(a, FAGEN_E_UNSUPPORTED_DTYPE, "dtype 7");
  fagen_variant v;
  cr_assert_eq(fagen_variant_parse("fwd_d128_bq128_bk64_w4_s1_bf16_sm80", &v), FAGEN_OK);
  a = good();
  a.variant = &v;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "does not fit the call (op bwd");
  cr_assert_eq(fagen_variant_parse("bwd_d128_bq64_bk128_w8_s2_bf16_sm80", &v), FAGEN_OK);
  a.deterministic = 1;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "(op bwddet");
}

/* The mma.sync family's heuristic on sm_90a (the wgmma backward turned off
 * where it would apply: FAGEN_BWD_WGMMA=0). */
Test(bwd_select, defaults_per_head_dim_and_mode) {
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_device_class dc = {"", {90, 1}, 132};
  fagen_attention_bwd_args a = good();
  fagen_variant v;
  fagen_select_info info;
  const struct {
    int head_dim, det, no_wgmma;
    const char *name;
  } want[] = {{120, 0, 1, "bwd_d128_bq64_bk128_w8_s2_bf16_sm90a"},
              {64, 0, 1, "bwd_d64_bq32_bk128_w4_s2_bf16_sm90a"}, /* the measured deviation */
              {64, 1, 0, "bwddet_d64_bq128_bk128_w8_s2_bf16_sm90a"},
              {256, 1, 0, "bwddet_d256_bq64_bk64_w8_s2_bf16_sm90a"},
              {256, 0, 1, "bwd_d256_bq64_bk64_w8_s2_bf16_sm90a"},
              {256, 0, 0, "bwdwg_d256_bq64_bk64_w12_s1_bf16_sm90a"},
              {120, 0, 0, "bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a"},
              {64, 0, 0, "bwdwg_d64_bq128_bk128_w12_s2_bf16_sm90a"}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    if (want[i].no_wgmma)
      setenv("FAGEN_BWD_WGMMA", "0", 1);
    else
      unsetenv("FAGEN_BWD_WGMMA");
    a.head_dim = want[i].head_dim;
    a.deterministic = want[i].det;
    cr_assert_eq(fagen_attention_backward_select(ctx, &a, &dc, &v, &info), FAGEN_OK, "%s",
                 fagen_errmsg(ctx));
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&v, name, sizeof name);
    cr_assert_str_eq(name, want[i].name);
    cr_assert_eq(info.source, FAGEN_SELECT_HEURISTIC);
  }
  /* A part with 99 KB of shared memory per block still gets a valid kernel. */
  fagen_device_class small = {"", {86, 0}, 84};
  a.head_dim = 256;
  a.deterministic = 0;
  cr_assert_eq(fagen_attention_backward_select(ctx, &a, &small, &v, NULL), FAGEN_OK, "%s",
               fagen_errmsg(ctx));
  cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK);
  cr_assert_eq(v.op, FAGEN_OP_BWD);
  fagen_ctx_destroy(ctx);
}

/* ---- the Hopper backward (bwdwg) ---------------------------------------- */

/* The name of what fagen_attention_backward_select picks for a on dc. */
static void select_name(fagen_ctx *ctx, const fagen_attention_bwd_args *a,
                        const fagen_device_class *dc, char name[FAGEN_VARIANT_NAME_MAX],
                        fagen_select_info *info) {
  fagen_variant v;
  cr_assert_eq(fagen_attention_backward_select(ctx, a, dc, &v, info), FAGEN_OK, "%s",
               fagen_errmsg(ctx));
  cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK);
  fagen_variant_name(&v, name, sizeof(char[FAGEN_VARIANT_NAME_MAX]));
}

/* The wgmma family serves exactly the plain, non-deterministic sm_90a calls
 * at head_dim 33..128 whose q, k, v and dout TMA can describe; everything else
 * the mma.sync family. */
Test(bwd_select, hopper_family_where_it_applies) {
  unsetenv("FAGEN_BWD_WGMMA");
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  const fagen_device_class h100 = {"", {90, 1}, 132}, a100 = {"", {80, 0}, 108},
                           sm90 = {"", {90, 0}, 132};
  char name[FAGEN_VARIANT_NAME_MAX];
  fagen_select_info info;
  fagen_attention_bwd_args a = good();
  a.head_dim = 128;
  select_name(ctx, &a, &h100, name, &info);
  cr_assert_str_eq(name, "bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a");
  cr_assert_eq(info.source, FAGEN_SELECT_HEURISTIC);
  a.causal = 1;
  a.dtype = FAGEN_DTYPE_FP16;
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwdwg_d128_bq64_bk128_w12_s2_causal_fp16_sm90a");
  a = good();
  a.head_dim = 72; /* compiled as 96 */
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwdwg_d96_bq64_bk64_w8_s2_bf16_sm90a");
  a.head_dim = 40; /* compiled as 64 */
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwdwg_d64_bq128_bk128_w12_s2_bf16_sm90a");

  /* Not the wgmma family: */
  a = good();
  a.head_dim = 128;
  a.deterministic = 1;
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwddet_d128_bq64_bk128_w8_s2_bf16_sm90a");
  a = good();
  a.head_dim = 128;
  a.feat.softcap = 30.f;
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwd_d128_bq64_bk128_w8_s2_softcap_bf16_sm90a");
  const int dims[] = {32, 136, 192, 224};
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
    a = good();
    a.head_dim = dims[i];
    select_name(ctx, &a, &h100, name, NULL);
    cr_assert_eq(strncmp(name, "bwd_", 4), 0, "head_dim %d: %s", dims[i], name);
  }
  a = good();
  a.head_dim = 256;
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwdwg_d256_bq64_bk64_w12_s1_bf16_sm90a");
  a.head_dim = 232; /* compiled as 256 */
  a.causal = 1;
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwdwg_d256_bq64_bk64_w12_s1_causal_bf16_sm90a");
  a = good();
  a.head_dim = 128;
  select_name(ctx, &a, &a100, name, NULL);
  cr_assert_str_eq(name, "bwd_d128_bq64_bk128_w8_s2_bf16_sm80");
  select_name(ctx, &a, &sm90, name, NULL);
  cr_assert_str_eq(name, "bwd_d128_bq64_bk128_w8_s2_bf16_sm90");
  /* TMA cannot describe a zero stride along an axis longer than 1 (allowed for
     inputs) nor one of 2^40 bytes or more: q, k, v and dout are checked; o is
     not read through TMA. */
  const int64_t huge = (int64_t)1 << 39; /* elements: 2^40 bytes */
  a.dout_strides = (fagen_strides){huge, 8 * 128, 128};
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwd_d128_bq64_bk128_w8_s2_bf16_sm90a");
  a.dout_strides = (fagen_strides){huge - 8, 8 * 128, 128}; /* just under */
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a");
  a.dout_strides = (fagen_strides){0, 0, 0};
  fagen_strides *in[] = {&a.q_strides, &a.k_strides, &a.v_strides};
  for (int t = 0; t < 3; t++) {
    const int seq = t ? a.seqlen_k : a.seqlen_q, heads = t ? a.heads_kv : a.heads_q;
    *in[t] = (fagen_strides){(int64_t)seq * heads * 128, 0, 128}; /* one row for every key */
    select_name(ctx, &a, &h100, name, NULL);
    cr_assert_str_eq(name, "bwd_d128_bq64_bk128_w8_s2_bf16_sm90a", "tensor %d", t);
    *in[t] = (fagen_strides){0, 0, 0};
  }
  a.o_strides = (fagen_strides){huge, 8 * 128, 128};
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a");

  /* FAGEN_BWD_WGMMA=0 turns it off; any other value leaves it on. */
  a = good();
  a.head_dim = 128;
  setenv("FAGEN_BWD_WGMMA", "0", 1);
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwd_d128_bq64_bk128_w8_s2_bf16_sm90a");
  setenv("FAGEN_BWD_WGMMA", "1", 1);
  select_name(ctx, &a, &h100, name, NULL);
  cr_assert_str_eq(name, "bwdwg_d128_bq64_bk128_w12_s2_bf16_sm90a");
  unsetenv("FAGEN_BWD_WGMMA");
  fagen_ctx_destroy(ctx);
}

/* A forced bwdwg variant: accepted for a non-deterministic call that it fits,
 * refused for a deterministic one with its own reason, and held to dtype,
 * causal, features and head_dim like any forced variant. */
Test(bwd_select, forced_bwdwg) {
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  const fagen_device_class h100 = {"", {90, 1}, 132};
  fagen_variant forced, got;
  fagen_select_info info;
  cr_assert_eq(fagen_variant_parse("bwdwg_d128_bq64_bk128_w12_s1_bf16_sm90a", &forced), FAGEN_OK);
  fagen_attention_bwd_args a = good(); /* head_dim 120: compiled as 128 */
  a.variant = &forced;
  setenv("FAGEN_BWD_WGMMA", "0", 1); /* the switch concerns selection, not forced variants */
  cr_assert_eq(fagen_attention_backward_select(ctx, &a, &h100, &got, &info), FAGEN_OK, "%s",
               fagen_errmsg(ctx));
  unsetenv("FAGEN_BWD_WGMMA");
  cr_assert_eq(info.source, FAGEN_SELECT_FORCED);
  cr_assert_eq(memcmp(&got, &forced, sizeof got), 0);
  a.deterministic = 1;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "cannot serve a deterministic call");
  a.deterministic = 0;
  a.causal = 1;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "does not fit the call (op bwd or bwdwg");
  a = good();
  a.variant = &forced;
  a.feat.softcap = 30.f;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "does not fit the call");
  a = good();
  a.variant = &forced;
  a.head_dim = 64;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "head_dim 64 must match");
  /* An invalid bwdwg variant is refused with the validity predicate's reason. */
  forced.features = FAGEN_FEATURE_SOFTCAP;
  a = good();
  a.variant = &forced;
  a.feat.softcap = 30.f;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "has no features");
  fagen_ctx_destroy(ctx);
}
