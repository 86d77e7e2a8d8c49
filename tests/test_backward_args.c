/* The backward without a GPU: each bad input gets its own status and a
 * message before anything touches the driver or is launched; the workspace
 * size; selection of backward variants. */
#include <criterion/criterion.h>
#include <stdio.h>
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
   * compiled head_dim (120 -> 128) */
  size_t rows = 2 * 8 * 100;
  cr_assert_eq(bytes, rows * 4 + rows * 128 * 4);
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

Test(bwd_select, defaults_per_head_dim_and_mode) {
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_device_class dc = {"", {90, 1}, 132};
  fagen_attention_bwd_args a = good();
  fagen_variant v;
  fagen_select_info info;
  const struct {
    int head_dim, det;
    const char *name;
  } want[] = {{120, 0, "bwd_d128_bq64_bk128_w8_s2_bf16_sm90a"},
              {64, 0, "bwd_d64_bq32_bk128_w4_s2_bf16_sm90a"}, /* the measured deviation */
              {64, 1, "bwddet_d64_bq128_bk128_w8_s2_bf16_sm90a"},
              {256, 1, "bwddet_d256_bq64_bk64_w8_s2_bf16_sm90a"}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
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
