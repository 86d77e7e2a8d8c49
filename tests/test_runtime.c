/* The runtime without a GPU: every invalid argument gets its own status and
 * a message before anything touches the driver; selection; contexts and
 * error plumbing; GPU calls on a machine without a driver. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <math.h>
#include <string.h>

#include "fagen.h"
#include "fg_forward.h"
#include "fg_test.h"

/* A valid call with fake (aligned) pointers: validation must pass it. */
static fagen_attention_args good(void) {
  fagen_attention_args a;
  fagen_attention_args_init(&a);
  a.dtype = FAGEN_DTYPE_BF16;
  a.batch = 2;
  a.seqlen_q = 128;
  a.seqlen_k = 256;
  a.heads_q = 8;
  a.heads_kv = 2;
  a.head_dim = 128;
  a.q = (void *)0x10000;
  a.k = (void *)0x20000;
  a.v = (void *)0x30000;
  a.o = (void *)0x40000;
  return a;
}

static void expect(fagen_attention_args a, fagen_status want, const char *needle) {
  fg_err err;
  fagen_status st = fg_fwd_validate(&a, 1, &err);
  cr_assert_eq(st, want, "got %s, want %s", fagen_status_name(st), fagen_status_name(want));
  cr_assert(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
  /* The public entry point gives the same status before touching a driver. */
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  cr_assert_eq(fagen_attention_forward(ctx, &a, NULL), want);
  cr_assert(strstr(fagen_errmsg(ctx), needle), "%s", fagen_errmsg(ctx));
  cr_assert(strstr(fagen_last_error(), needle));
  fagen_ctx_destroy(ctx);
}

Test(args, a_good_call_validates) {
  fagen_attention_args a = good();
  fg_err err;
  cr_assert_eq(fg_fwd_validate(&a, 1, &err), FAGEN_OK, "%s", err.msg);
}

Test(args, null_pointers) {
  fagen_attention_args a = good();
  a.q = NULL;
  expect(a, FAGEN_E_NULL_POINTER, "q is NULL");
  a = good();
  a.o = NULL;
  expect(a, FAGEN_E_NULL_POINTER, "o is NULL");
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  cr_assert_eq(fagen_attention_forward(ctx, NULL, NULL), FAGEN_E_NULL_POINTER);
  cr_assert_eq(fagen_attention_forward(NULL, &a, NULL), FAGEN_E_NULL_POINTER);
  fagen_ctx_destroy(ctx);
}

Test(args, misaligned_pointers) {
  fagen_attention_args a = good();
  a.k = (void *)0x20008;
  expect(a, FAGEN_E_MISALIGNED, "k (0x20008) is not 16-byte aligned");
  a = good();
  a.lse = (float *)0x50002;
  expect(a, FAGEN_E_MISALIGNED, "lse");
}

Test(args, strides) {
  fagen_attention_args a = good();
  a.q_strides = (fagen_strides){128 * 8 * 128, 8 * 128 + 4, 128};
  expect(a, FAGEN_E_BAD_STRIDE, "q seq stride 1028 is not a multiple of 8");
  a = good();
  a.v_strides = (fagen_strides){-1024, 1024, 128};
  expect(a, FAGEN_E_BAD_STRIDE, "must not be negative");
  a = good();
  a.o_strides = (fagen_strides){0, 1024, 128};
  expect(a, FAGEN_E_BAD_STRIDE, "outputs would overlap");
  a = good();
  a.k_strides = (fagen_strides){0, 256, 128}; /* broadcasting an input is allowed */
  fg_err err;
  cr_assert_eq(fg_fwd_validate(&a, 1, &err), FAGEN_OK, "%s", err.msg);
}

Test(args, sizes) {
  const char *names[] = {"batch", "seqlen_q", "seqlen_k", "heads_q", "heads_kv", "head_dim"};
  for (int i = 0; i < 6; i++)
    for (int bad = -1; bad <= 0; bad++) {
      fagen_attention_args a = good();
      int *fields[] = {&a.batch, &a.seqlen_q, &a.seqlen_k, &a.heads_q, &a.heads_kv, &a.head_dim};
      *fields[i] = bad;
      char needle[64];
      snprintf(needle, sizeof needle, "%s is %d", names[i], bad);
      expect(a, FAGEN_E_BAD_SHAPE, needle);
    }
}

Test(args, offsets_that_overflow) {
  fagen_attention_args a = good();
  a.q_strides = (fagen_strides){INT64_MAX / 8 * 8, 1024, 128};
  expect(a, FAGEN_E_BAD_SHAPE, "overflow");
  a = good();
  a.batch = 1 << 20;
  a.heads_q = 1 << 10;
  a.heads_kv = 1;
  a.seqlen_q = 1 << 12;
  expect(a, FAGEN_E_BAD_SHAPE, "too large for one launch");
}

Test(args, heads) {
  fagen_attention_args a = good();
  a.heads_q = 6;
  a.heads_kv = 4;
  expect(a, FAGEN_E_BAD_HEADS, "heads_q 6 is not a multiple of heads_kv 4");
}

Test(args, dtype_and_head_dim) {
  fagen_attention_args a = good();
  a.dtype = (fagen_dtype)5;
  expect(a, FAGEN_E_UNSUPPORTED_DTYPE, "dtype 5");
  a = good();
  a.head_dim = 33;
  expect(a, FAGEN_E_UNSUPPORTED_HEAD_DIM, "head_dim 33");
  a.head_dim = 264;
  expect(a, FAGEN_E_UNSUPPORTED_HEAD_DIM, "head_dim 264");
}

Test(args, causal_scale_and_forced_variant) {
  fagen_attention_args a = good();
  a.causal = 3;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "causal is 3");
  a = good();
  a.softmax_scale = NAN;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "softmax_scale");
  a.softmax_scale = -0.5f;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "softmax_scale");
  a = good();
  fagen_variant v;
  fagen_variant_parse("fwd_d64_bq64_bk64_w4_s1_bf16_sm80", &v); /* head_dim 64 < 128 */
  a.variant = &v;
  expect(a, FAGEN_E_INVALID_ARGUMENT, "does not fit the call");
  fagen_variant_parse("fwd_d128_bq64_bk40_w4_s1_bf16_sm80", &v); /* invalid */
  expect(a, FAGEN_E_INVALID_ARGUMENT, "forced variant fwd_d128_bq64_bk40_w4_s1_bf16_sm80");
}

Test(select, buckets_head_dim_and_keeps_features) {
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_attention_args a = good();
  a.head_dim = 72;
  a.causal = 1;
  a.dtype = FAGEN_DTYPE_FP16;
  fagen_device_class dc = {"", {86, 0}, 0}; /* an anonymous class: the heuristic */
  fagen_target t = dc.target;
  fagen_variant v;
  fagen_select_info info;
  cr_assert_eq(fagen_attention_select(ctx, &a, &dc, &v, &info), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(info.source, FAGEN_SELECT_HEURISTIC);
  /* the default variant of the (d96 bucket, fp16, causal, sm_86) case */
  cr_assert_eq(v.head_dim, 96);
  cr_assert_eq(v.causal, 1);
  cr_assert_eq(v.dtype, FAGEN_DTYPE_FP16);
  cr_assert(v.target.arch == 86 && v.target.arch_specific == 0);
  fagen_variant defaults[96]; /* fwd, bwd, bwddet x 8 head dims x 2 dtypes x 2 causal */
  size_t nd;
  cr_assert_eq(fagen_default_variants(&t, 1, defaults, 96, &nd), FAGEN_OK);
  int found = 0;
  for (size_t i = 0; i < nd; i++) found |= memcmp(&defaults[i], &v, sizeof v) == 0;
  cr_assert(found, "select did not return the default variant of its case");
  a.head_dim = 256;
  cr_assert_eq(fagen_attention_select(ctx, &a, &dc, &v, NULL), FAGEN_OK);
  cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK);
  dc.target.arch = 61;
  cr_assert_eq(fagen_attention_select(ctx, &a, &dc, &v, NULL), FAGEN_E_UNSUPPORTED_ARCH);
  a.heads_kv = 3;
  cr_assert_eq(fagen_attention_select(ctx, &a, &dc, &v, NULL), FAGEN_E_BAD_HEADS);
  fagen_ctx_destroy(ctx);
}

Test(context, lifecycle_and_errors) {
  fagen_ctx_destroy(NULL);
  cr_assert_eq(fagen_ctx_create(NULL), FAGEN_E_NULL_POINTER);
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  cr_assert_str_eq(fagen_errmsg(ctx), "");
  cr_assert_str_eq(fagen_compile_log(ctx), "");
  fagen_variant v;
  fagen_variant_parse("fwd_d64_bq64_bk64_w4_s1_bf16_sm80", &v);
  v.head_dim = 300;
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_E_INVALID_VARIANT);
  cr_assert(strstr(fagen_errmsg(ctx), "head_dim=300"), "%s", fagen_errmsg(ctx));
  cr_assert_str_eq(fagen_errmsg(NULL), fagen_last_error());
  cr_assert_eq(fagen_set_log_callback(NULL, NULL, NULL, FAGEN_LOG_INFO), FAGEN_E_NULL_POINTER);
  fagen_ctx_destroy(ctx);
}

Test(no_driver, gpu_calls_say_why) {
  const char *why;
  if (fg_test_gpu_available(&why)) cr_skip_test("a GPU is present: this test is for machines without one");
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_attention_args a = good();
  fagen_status st = fagen_attention_forward(ctx, &a, NULL);
  cr_assert(st == FAGEN_E_NO_DRIVER || st == FAGEN_E_NO_DEVICE, "%s", fagen_status_name(st));
  cr_assert(strstr(fagen_errmsg(ctx), "driver") || strstr(fagen_errmsg(ctx), "device"), "%s",
            fagen_errmsg(ctx));
  fagen_variant v;
  fagen_variant_parse("fwd_d64_bq64_bk64_w4_s1_bf16_sm80", &v);
  st = fagen_prepare(ctx, &v, 1);
  cr_assert(st == FAGEN_E_NO_DRIVER || st == FAGEN_E_NO_DEVICE, "%s", fagen_status_name(st));
  fagen_variant out;
  st = fagen_attention_select(ctx, &a, NULL, &out, NULL);
  cr_assert(st == FAGEN_E_NO_DRIVER || st == FAGEN_E_NO_DEVICE, "%s", fagen_status_name(st));
  fagen_ctx_destroy(ctx);
}
