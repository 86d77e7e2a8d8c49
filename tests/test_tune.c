/* Tuning tables: device classes, the heuristic, table lookup and precedence,
 * and bad tables (reported once, skipped, never a crash or a wrong kernel). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_embedded.h"
#include "fg_test.h"

extern const fg_embedded_file fg_embedded_tables[];
extern const size_t fg_embedded_tables_count;

static char *dir;
static const fagen_device_class TEST_GPU = {"Test GPU 9000", {90, 1}, 7};

static void setup(void) {
  dir = fg_test_tmpdir();
  setenv("FAGEN_TUNE_DIR", dir, 1);
  setenv("FAGEN_CACHE_DIR", dir, 1);
}

static void teardown(void) {
  fg_test_rmrf(dir);
  free(dir);
}

typedef struct warn_count {
  int warnings;
  char last[1024];
} warn_count;

static void count_warnings(void *user, fagen_log_level level, const char *msg) {
  warn_count *w = user;
  if (level == FAGEN_LOG_WARN) {
    w->warnings++;
    snprintf(w->last, sizeof w->last, "%s", msg);
  }
}

/* A context whose warnings w counts (w zeroed first). */
static fagen_ctx *ctx_counting_warnings(warn_count *w) {
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  *w = (warn_count){0, ""};
  fagen_set_log_callback(ctx, count_warnings, w, FAGEN_LOG_WARN);
  return ctx;
}

/* The shape of a one-sequence, one-head bf16 call: the fields the forward's
 * and the backward's argument structs share. */
#define SET_SHAPE(x, d, s, c)                                             \
  ((x).dtype = FAGEN_DTYPE_BF16, (x).batch = (x).heads_q = (x).heads_kv = 1, \
   (x).seqlen_q = (x).seqlen_k = (s), (x).head_dim = (d), (x).causal = (c))

static fagen_attention_args call(int head_dim, int seqlen, int causal) {
  fagen_attention_args a;
  fagen_attention_args_init(&a);
  SET_SHAPE(a, head_dim, seqlen, causal);
  return a;
}

static fagen_attention_bwd_args bwd_call(int head_dim, int seqlen, int causal) {
  fagen_attention_bwd_args b;
  fagen_attention_bwd_args_init(&b);
  SET_SHAPE(b, head_dim, seqlen, causal);
  return b;
}

/* Turns on the FAGEN_FEATURE_* bits of a forward call (select reads no
 * array's contents: a length array and the slopes stand in for any). */
static void set_features(fagen_attention_args *a, unsigned bits) {
  static int32_t used[1] = {1};
  static float slopes[1] = {0.5f};
  if (bits & FAGEN_FEATURE_VARLEN) a->feat.seqused_q = a->feat.seqused_k = used;
  if (bits & FAGEN_FEATURE_WINDOW) a->feat.window = 1, a->feat.window_left = 64, a->feat.window_right = 0;
  if (bits & FAGEN_FEATURE_SOFTCAP) a->feat.softcap = 30.f;
  if (bits & FAGEN_FEATURE_ALIBI) a->feat.alibi_slopes = slopes;
  if (bits & FAGEN_FEATURE_DROPOUT) a->feat.dropout_p = 0.1f;
}

/* Writes a table for TEST_GPU to the user dir; `entries` is a JSON array. */
static void write_table(const char *entries, const char *version, const char *hash_override,
                        const char *device_name) {
  char hash[65], slug[200], path[1400];
  cr_assert_eq(fagen_template_hash(hash), FAGEN_OK);
  fagen_device_class_slug(&TEST_GPU, slug, sizeof slug);
  snprintf(path, sizeof path, "%s/%s.json", dir, slug);
  FILE *f = fopen(path, "w");
  fprintf(f,
          "{\"format\": \"fagen-tune-table\", \"format_version\": 1, \"fagen_version\": \"%s\", "
          "\"template_hash\": \"%s\", \"device\": {\"name\": \"%s\", \"target\": \"sm_90a\", "
          "\"sm_count\": 7}, \"measured\": true, \"entries\": %s}",
          version ? version : FAGEN_VERSION_STRING, hash_override ? hash_override : hash,
          device_name ? device_name : TEST_GPU.name, entries);
  fclose(f);
}

static const char *ENTRY_FMT = "{\"op\": \"fwd\", \"dtype\": \"bf16\", \"head_dim\": 128, "
                               "\"causal\": false, \"seqlen\": %d, \"variant\": \"%s\", \"ms\": 1.5}";
/* The same for the wgmma family, which serves plain calls on sm_90a. */
static const char *ENTRY_WG_FMT = "{\"op\": \"fwdwg\", \"dtype\": \"bf16\", \"head_dim\": 128, "
                                  "\"causal\": false, \"seqlen\": %d, \"variant\": \"%s\", \"ms\": 1.5}";

/* An fwdwg entry measured with features (S 4096, 2.5 ms): features, variant. */
static const char *ENTRY_WG_FEATURES_FMT =
    "{\"op\": \"fwdwg\", \"dtype\": \"bf16\", \"head_dim\": 128, \"causal\": false, "
    "\"seqlen\": 4096, \"features\": \"%s\", \"variant\": \"%s\", \"ms\": 2.5}";

Test(tune, slug_and_parse) {
  char slug[200];
  fagen_device_class h100 = {"NVIDIA H100 80GB HBM3", {90, 1}, 132};
  cr_assert_eq(fagen_device_class_slug(&h100, slug, sizeof slug), FAGEN_OK);
  cr_assert_str_eq(slug, "sm90a-nvidia-h100-80gb-hbm3-132sm");
  fagen_device_class dc;
  cr_assert_eq(fagen_device_class_parse("NVIDIA A100-SXM4-80GB,sm_80,108", &dc), FAGEN_OK);
  cr_assert_str_eq(dc.name, "NVIDIA A100-SXM4-80GB");
  cr_assert(dc.target.arch == 80 && dc.sm_count == 108);
  cr_assert_eq(fagen_device_class_parse("A, weird, name,sm_90a,132", &dc), FAGEN_OK);
  cr_assert_str_eq(dc.name, "A, weird, name");
  const char *bad[] = {"", "name", "name,sm_80", ",sm_80,108", "x,sm_75,10", "x,sm_80,0", "x,sm_80,12a"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_eq(fagen_device_class_parse(bad[i], &dc), FAGEN_E_INVALID_ARGUMENT, "%s", bad[i]);
  cr_assert_eq(fagen_device_class_slug(&h100, slug, 10), FAGEN_E_BUFFER_TOO_SMALL);
}

/* The heuristic: FlashAttention-2's published tiles, per target. */
static void expect_heuristic(int arch, int specific, int d, int causal, const char *want) {
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_device_class anon = {"", {arch, specific}, 0};
  fagen_attention_args a = call(d, 2048, causal);
  fagen_variant v;
  fagen_select_info info;
  cr_assert_eq(fagen_attention_select(ctx, &a, &anon, &v, &info), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(info.source, FAGEN_SELECT_HEURISTIC);
  char name[FAGEN_VARIANT_NAME_MAX];
  fagen_variant_name(&v, name, sizeof name);
  cr_assert_str_eq(name, want);
  fagen_ctx_destroy(ctx);
}

Test(tune, heuristic_is_flashattention2s_published_tiles) {
  expect_heuristic(80, 0, 64, 0, "fwd_d64_bq128_bk128_w4_s1_bf16_sm80");
  expect_heuristic(80, 0, 64, 1, "fwd_d64_bq128_bk64_w4_s1_causal_bf16_sm80"); /* the deviation */
  /* sm_90a: plain calls take the wgmma family's heuristic (gen/fg_variant.c) */
  expect_heuristic(90, 1, 64, 1, "fwdwg_d64_bq128_bk128_w12_s2_causal_bf16_sm90a");
  expect_heuristic(80, 0, 128, 0, "fwd_d128_bq128_bk64_w4_s1_bf16_sm80");
  expect_heuristic(86, 0, 128, 0, "fwd_d128_bq128_bk32_w4_s1_bf16_sm86");
  expect_heuristic(86, 0, 128, 1, "fwd_d128_bq64_bk64_w4_s1_causal_bf16_sm86");
  expect_heuristic(86, 0, 96, 1, "fwd_d96_bq64_bk64_w4_s1_causal_bf16_sm86");
  expect_heuristic(80, 0, 192, 0, "fwd_d192_bq128_bk64_w8_s1_bf16_sm80");
  expect_heuristic(80, 0, 256, 0, "fwd_d256_bq128_bk64_w8_s1_bf16_sm80"); /* A100: 2 x 64 KB */
  expect_heuristic(90, 1, 256, 0, "fwdwg_d256_bq128_bk80_w12_s2_pp_bf16_sm90a"); /* H100 */
  expect_heuristic(86, 0, 224, 0, "fwd_d224_bq64_bk64_w4_s1_bf16_sm86");  /* 128x64x8 does not fit */
}

/* The wgmma family serves exactly the plain sm_90a calls whose tensors TMA
 * can describe; everything else selects the mma.sync family. */
Test(tune, wgmma_family_only_where_it_applies) {
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  const fagen_device_class hopper = {"", {90, 1}, 0}, ampere = {"", {80, 0}, 0};
  fagen_variant v;
  fagen_attention_args a = call(128, 2048, 1);
  cr_assert_eq(fagen_attention_select(ctx, &a, &hopper, &v, NULL), FAGEN_OK);
  cr_assert_eq(v.op, FAGEN_OP_FWD_WGMMA);
  cr_assert_eq(fagen_attention_select(ctx, &a, &ampere, &v, NULL), FAGEN_OK);
  cr_assert_eq(v.op, FAGEN_OP_FWD);
  a.feat.window = 1;
  a.feat.window_left = 256;
  a.feat.window_right = 0;
  cr_assert_eq(fagen_attention_select(ctx, &a, &hopper, &v, NULL), FAGEN_OK);
  cr_assert(v.op == FAGEN_OP_FWD && v.features == FAGEN_FEATURE_WINDOW);
  /* One key row broadcast along the sequence (stride 0, allowed for inputs):
     a layout TMA cannot describe. */
  a = call(128, 2048, 0);
  a.k_strides.seq = 0;
  a.k_strides.head = 128;
  a.k_strides.batch = 128;
  cr_assert_eq(fagen_attention_select(ctx, &a, &hopper, &v, NULL), FAGEN_OK);
  cr_assert_eq(v.op, FAGEN_OP_FWD);
  /* A zero stride along an axis of extent 1 is fine. */
  a.k_strides.seq = 128;
  a.k_strides.batch = 0;
  cr_assert_eq(fagen_attention_select(ctx, &a, &hopper, &v, NULL), FAGEN_OK);
  cr_assert_eq(v.op, FAGEN_OP_FWD_WGMMA);
  /* Softcap is the one feature the wgmma family has. */
  a = call(128, 2048, 0);
  a.feat.softcap = 30.f;
  cr_assert_eq(fagen_attention_select(ctx, &a, &hopper, &v, NULL), FAGEN_OK);
  cr_assert(v.op == FAGEN_OP_FWD_WGMMA && v.features == FAGEN_FEATURE_SOFTCAP);
  /* A forced wgmma variant must fit: the call's features included. */
  fagen_variant forced;
  cr_assert_eq(fagen_variant_parse("fwdwg_d128_bq128_bk128_w12_s2_bf16_sm90a", &forced), FAGEN_OK);
  a.variant = &forced;
  cr_assert_eq(fagen_attention_select(ctx, &a, &hopper, &v, NULL), FAGEN_E_INVALID_ARGUMENT);
  a.feat.softcap = 0.f;
  cr_assert_eq(fagen_attention_select(ctx, &a, &hopper, &v, NULL), FAGEN_OK);
  cr_assert_eq(v.op, FAGEN_OP_FWD_WGMMA);
  fagen_ctx_destroy(ctx);
}

Test(tune, user_table_entry_and_nearest_bucket, .init = setup, .fini = teardown) {
  char entries[1024], e1[300], e2[300];
  snprintf(e1, sizeof e1, ENTRY_WG_FMT, 1024, "fwdwg_d128_bq64_bk64_w8_s2_bf16_sm90a");
  snprintf(e2, sizeof e2, ENTRY_WG_FMT, 8192, "fwdwg_d128_bq192_bk64_w16_s2_bf16_sm90a");
  snprintf(entries, sizeof entries, "[%s, %s]", e1, e2);
  write_table(entries, NULL, NULL, NULL);
  warn_count w;
  fagen_ctx *ctx = ctx_counting_warnings(&w);
  const struct {
    int seqlen;
    const char *want;
    int bucket;
  } cases[] = {{512, "fwdwg_d128_bq64_bk64_w8_s2_bf16_sm90a", 1024},
               {2896, "fwdwg_d128_bq64_bk64_w8_s2_bf16_sm90a", 1024}, /* just under 2^11.5: nearer 1024 */
               {3000, "fwdwg_d128_bq192_bk64_w16_s2_bf16_sm90a", 8192},
               {65536, "fwdwg_d128_bq192_bk64_w16_s2_bf16_sm90a", 8192}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fagen_attention_args a = call(120, cases[i].seqlen, 0); /* 120 runs as 128 */
    fagen_variant v;
    fagen_select_info info;
    cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK, "%s",
                 fagen_errmsg(ctx));
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&v, name, sizeof name);
    cr_assert_str_eq(name, cases[i].want, "seqlen %d: %s (%s)", cases[i].seqlen, name, w.last);
    cr_assert_eq(info.source, FAGEN_SELECT_USER_TABLE);
    cr_assert_eq(info.bucket, cases[i].bucket);
    cr_assert(strstr(info.table, dir), "%s", info.table);
    cr_assert_float_eq(info.measured_ms, 1.5, 1e-9);
  }
  /* A case the table does not have: the next source, the table shipped for
     another sm_90a device (Test GPU 9000 has none of its own). */
  fagen_attention_args a = call(64, 1024, 1);
  fagen_variant v;
  fagen_select_info info;
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK);
  cr_assert_eq(info.source, FAGEN_SELECT_SIBLING_TABLE);
  cr_assert_eq(w.warnings, 0, "%s", w.last);
  fagen_ctx_destroy(ctx);
}

/* A bad table: one warning per context, the next source (the sibling table,
 * or with FAGEN_TUNE_SIBLING=0 the heuristic), no crash. */
static void bad_table(const char *needle) {
  for (int pass = 0; pass < 2; pass++) {
    if (pass) setenv("FAGEN_TUNE_SIBLING", "0", 1);
    warn_count w;
    fagen_ctx *ctx = ctx_counting_warnings(&w);
    for (int i = 0; i < 3; i++) {
      fagen_attention_args a = call(128, 1024 << i, 0);
      fagen_variant v;
      fagen_select_info info;
      cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK);
      cr_assert_eq(info.source, pass ? FAGEN_SELECT_HEURISTIC : FAGEN_SELECT_SIBLING_TABLE);
      cr_assert_eq(fagen_variant_validate(&v, NULL, 0), FAGEN_OK);
    }
    cr_assert_eq(w.warnings, 1, "%d warnings; last: %s", w.warnings, w.last);
    cr_assert(strstr(w.last, needle), "'%s' lacks '%s'", w.last, needle);
    fagen_ctx_destroy(ctx);
  }
  unsetenv("FAGEN_TUNE_SIBLING");
}

/* Entries measured with features: a call with exactly those features takes
 * theirs; a call with other features, or none, the plain call's entry (its
 * features compiled into the plain tiles). */
Test(tune, entries_measured_with_features, .init = setup, .fini = teardown) {
  char entries[2048], e1[300], e2[400];
  snprintf(e1, sizeof e1, ENTRY_WG_FMT, 4096, "fwdwg_d128_bq128_bk128_w12_s2_pp_bf16_sm90a");
  snprintf(e2, sizeof e2, ENTRY_WG_FEATURES_FMT, "softcap", "fwdwg_d128_bq128_bk96_w12_s2_softcap_bf16_sm90a");
  snprintf(entries, sizeof entries, "[%s, %s]", e1, e2);
  write_table(entries, NULL, NULL, NULL);
  warn_count w;
  fagen_ctx *ctx = ctx_counting_warnings(&w);
  fagen_variant v;
  fagen_select_info info;
  char name[FAGEN_VARIANT_NAME_MAX];
  fagen_attention_args a = call(128, 4096, 0);
  a.feat.softcap = 30.f;
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK, "%s", fagen_errmsg(ctx));
  fagen_variant_name(&v, name, sizeof name);
  cr_assert_str_eq(name, "fwdwg_d128_bq128_bk96_w12_s2_softcap_bf16_sm90a");
  cr_assert_eq(info.source, FAGEN_SELECT_USER_TABLE);
  cr_assert_eq(info.entry_features, (unsigned)FAGEN_FEATURE_SOFTCAP);
  cr_assert_float_eq(info.measured_ms, 2.5, 1e-9);
  a.feat.softcap = 0.f; /* plain: the plain entry */
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK);
  fagen_variant_name(&v, name, sizeof name);
  cr_assert_str_eq(name, "fwdwg_d128_bq128_bk128_w12_s2_pp_bf16_sm90a");
  cr_assert_eq(info.entry_features, 0u);
  /* Padded sequence lengths (varlen, no entry of their own): the plain
     entry's tiles with the feature; select reads no pointer's contents. */
  static int32_t used[1] = {4096};
  a.feat.seqused_q = a.feat.seqused_k = used;
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK, "%s", fagen_errmsg(ctx));
  fagen_variant_name(&v, name, sizeof name);
  cr_assert_str_eq(name, "fwdwg_d128_bq128_bk128_w12_s2_pp_varlen_bf16_sm90a");
  cr_assert_eq(info.source, FAGEN_SELECT_USER_TABLE);
  cr_assert_eq(info.entry_features, 0u);
  /* Softcap and varlen together: not exactly the softcap entry's set. */
  a.feat.softcap = 30.f;
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK);
  fagen_variant_name(&v, name, sizeof name);
  cr_assert_str_eq(name, "fwdwg_d128_bq128_bk128_w12_s2_pp_varlen_softcap_bf16_sm90a");
  /* A case the user table lacks: the sibling (the H100's shipped table),
     whose softcap entries come before its plain ones. */
  a = call(64, 4096, 0);
  a.feat.softcap = 30.f;
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK);
  cr_assert(info.source == FAGEN_SELECT_SIBLING_TABLE && info.entry_features == FAGEN_FEATURE_SOFTCAP,
            "%d %u", info.source, info.entry_features);
  cr_assert_eq(w.warnings, 0, "%s", w.last);
  fagen_ctx_destroy(ctx);
}

/* A device with no shipped table of its own uses the measured one of another
 * device of the same target (nearest SM count, ties to the first file name),
 * unless FAGEN_TUNE_SIBLING=0; unmeasured tables, other targets and the
 * anonymous class get none. */
Test(tune, sibling_table_for_a_device_without_one, .init = setup, .fini = teardown) {
  fagen_device_class pcie, h100, a10, a100x, anon = {"", {90, 1}, 114};
  cr_assert_eq(fagen_device_class_parse("NVIDIA H100 PCIe,sm_90a,114", &pcie), FAGEN_OK);
  cr_assert_eq(fagen_device_class_parse("NVIDIA H100 80GB HBM3,sm_90a,132", &h100), FAGEN_OK);
  cr_assert_eq(fagen_device_class_parse("NVIDIA A10,sm_86,72", &a10), FAGEN_OK);
  cr_assert_eq(fagen_device_class_parse("NVIDIA A100 Test,sm_80,98", &a100x), FAGEN_OK);
  warn_count w;
  fagen_ctx *ctx = ctx_counting_warnings(&w);
  const int dims[] = {64, 128, 256};
  for (int i = 0; i < 3; i++)
    for (int causal = 0; causal < 2; causal++) {
      fagen_attention_args a = call(dims[i], 4096, causal);
      fagen_variant v, want;
      fagen_select_info info, winfo;
      cr_assert_eq(fagen_attention_select(ctx, &a, &pcie, &v, &info), FAGEN_OK);
      cr_assert_eq(info.source, FAGEN_SELECT_SIBLING_TABLE);
      /* H100 and H200 tables both have 132 SMs: the first name wins */
      cr_assert_str_eq(info.table, "builtin:sm90a-nvidia-h100-80gb-hbm3-132sm.json");
      cr_assert_eq(fagen_attention_select(ctx, &a, &h100, &want, &winfo), FAGEN_OK);
      cr_assert_eq(winfo.source, FAGEN_SELECT_SHIPPED_TABLE);
      char got_name[FAGEN_VARIANT_NAME_MAX], want_name[FAGEN_VARIANT_NAME_MAX];
      fagen_variant_name(&v, got_name, sizeof got_name);
      fagen_variant_name(&want, want_name, sizeof want_name);
      cr_assert_str_eq(got_name, want_name, "d%d causal %d", dims[i], causal);
      cr_assert_eq(info.bucket, winfo.bucket);
    }
  const fagen_device_class *none[] = {&a10, &a100x, &anon};
  for (size_t i = 0; i < 3; i++) {
    fagen_attention_args a = call(128, 4096, 0);
    fagen_variant v;
    fagen_select_info info;
    cr_assert_eq(fagen_attention_select(ctx, &a, none[i], &v, &info), FAGEN_OK);
    cr_assert_eq(info.source, FAGEN_SELECT_HEURISTIC, "%s", none[i]->name);
  }
  cr_assert_eq(w.warnings, 0, "%s", w.last);
  fagen_ctx_destroy(ctx);
  setenv("FAGEN_TUNE_SIBLING", "0", 1);
  fagen_ctx_create(&ctx);
  fagen_attention_args a = call(128, 4096, 0);
  fagen_variant v;
  fagen_select_info info;
  cr_assert_eq(fagen_attention_select(ctx, &a, &pcie, &v, &info), FAGEN_OK);
  cr_assert_eq(info.source, FAGEN_SELECT_HEURISTIC);
  fagen_ctx_destroy(ctx);
  unsetenv("FAGEN_TUNE_SIBLING");
}

Test(tune, corrupt_table, .init = setup, .fini = teardown) {
  write_table("[{\"op\": ", NULL, NULL, NULL); /* truncated JSON */
  bad_table("not valid JSON");
}

Test(tune, table_from_another_fagen, .init = setup, .fini = teardown) {
  write_table("[]", "0.0.1", NULL, NULL);
  bad_table("made by fagen 0.0.1");
}

Test(tune, table_from_other_templates, .init = setup, .fini = teardown) {
  write_table("[]", NULL, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", NULL);
  bad_table("template hash differs");
}

Test(tune, table_for_another_device, .init = setup, .fini = teardown) {
  write_table("[]", NULL, NULL, "Some Other GPU");
  bad_table("not this device");
}

Test(tune, entries_that_do_not_validate, .init = setup, .fini = teardown) {
  char entries[1024], e1[300];
  /* bq16 is not a block_q of this kernel family */
  snprintf(e1, sizeof e1, ENTRY_FMT, 4096, "fwd_d128_bq16_bk64_w4_s1_bf16_sm90a");
  snprintf(entries, sizeof entries, "[%s]", e1);
  write_table(entries, NULL, NULL, NULL);
  bad_table("does not validate");
}

Test(tune, entries_for_another_case_or_target, .init = setup, .fini = teardown) {
  char entries[1024], e1[300];
  snprintf(e1, sizeof e1, ENTRY_FMT, 4096, "fwd_d128_bq128_bk64_w4_s1_bf16_sm80");
  snprintf(entries, sizeof entries, "[%s]", e1);
  write_table(entries, NULL, NULL, NULL);
  bad_table("another target");
  /* Another head_dim; "features" not the variant's; a variant with features
     in an entry that names none. */
  const char *const softcap_variant = "fwdwg_d128_bq128_bk96_w12_s2_softcap_bf16_sm90a";
  for (int k = 0; k < 3; k++) {
    if (k == 0) snprintf(e1, sizeof e1, ENTRY_FMT, 4096, "fwd_d64_bq128_bk64_w4_s1_bf16_sm90a");
    if (k == 1) snprintf(e1, sizeof e1, ENTRY_WG_FEATURES_FMT, "varlen", softcap_variant);
    if (k == 2) snprintf(e1, sizeof e1, ENTRY_WG_FMT, 4096, softcap_variant);
    snprintf(entries, sizeof entries, "[%s]", e1);
    write_table(entries, NULL, NULL, NULL);
    bad_table("does not fit its case");
  }
}

Test(tune, shipped_tables_are_current_and_user_tables_come_first, .init = setup, .fini = teardown) {
  /* Every table in tables/ is built in and must load cleanly against the
     current templates; if this fails after a template change, re-run
     fagen-autotune (or scripts/heuristic-tables.sh) and replace the table. */
  fagen_device_class a100;
  fagen_device_class_parse("NVIDIA A100-SXM4-80GB,sm_80,108", &a100);
  warn_count w;
  fagen_ctx *ctx = ctx_counting_warnings(&w);
  fagen_attention_args a = call(128, 4096, 0);
  fagen_variant v;
  fagen_select_info info;
  cr_assert_eq(fagen_attention_select(ctx, &a, &a100, &v, &info), FAGEN_OK);
  cr_assert_eq(w.warnings, 0, "the shipped table is stale: %s", w.last);
  cr_assert_eq(info.source, FAGEN_SELECT_SHIPPED_TABLE);
  cr_assert_str_eq(info.table, "builtin:sm80-nvidia-a100-sxm4-80gb-108sm.json");
  fagen_ctx_destroy(ctx);
  /* A user table for the same class wins. */
  char hash[65], path[1400];
  fagen_template_hash(hash);
  snprintf(path, sizeof path, "%s/sm80-nvidia-a100-sxm4-80gb-108sm.json", dir);
  FILE *f = fopen(path, "w");
  fprintf(f,
          "{\"format\": \"fagen-tune-table\", \"format_version\": 1, \"fagen_version\": \"%s\", "
          "\"template_hash\": \"%s\", \"device\": {\"name\": \"NVIDIA A100-SXM4-80GB\", "
          "\"target\": \"sm_80\", \"sm_count\": 108}, \"entries\": [{\"op\": \"fwd\", "
          "\"dtype\": \"bf16\", \"head_dim\": 128, \"causal\": false, \"seqlen\": 4096, "
          "\"variant\": \"fwd_d128_bq64_bk64_w4_s2_bf16_sm80\", \"ms\": 2.0}]}",
          FAGEN_VERSION_STRING, hash);
  fclose(f);
  fagen_ctx_create(&ctx);
  cr_assert_eq(fagen_attention_select(ctx, &a, &a100, &v, &info), FAGEN_OK);
  cr_assert_eq(info.source, FAGEN_SELECT_USER_TABLE);
  char name[FAGEN_VARIANT_NAME_MAX];
  fagen_variant_name(&v, name, sizeof name);
  cr_assert_str_eq(name, "fwd_d128_bq64_bk64_w4_s2_bf16_sm80");
  fagen_ctx_destroy(ctx);
}

static int run(const char *prog, const char *const *args, char **out, char **err) {
  return fg_test_run_prog(prog, args, NULL, out, err);
}

/* Every built-in table loads without a warning for its own device class: a
 * template change makes them stale (re-run fagen-autotune on that GPU, or
 * scripts/heuristic-tables.sh for the unmeasured ones). */
Test(tune, every_shipped_table_is_current, .init = setup, .fini = teardown) {
  cr_assert_geq(fg_embedded_tables_count, 1);
  for (size_t i = 0; i < fg_embedded_tables_count; i++) {
    json_error_t jerr;
    json_t *root = json_loadb((const char *)fg_embedded_tables[i].data, fg_embedded_tables[i].size, 0, &jerr);
    cr_assert_not_null(root, "%s: %s", fg_embedded_tables[i].name, jerr.text);
    json_t *dev = json_object_get(root, "device");
    char spec[300];
    snprintf(spec, sizeof spec, "%s,%s,%lld", json_string_value(json_object_get(dev, "name")),
             json_string_value(json_object_get(dev, "target")),
             (long long)json_integer_value(json_object_get(dev, "sm_count")));
    fagen_device_class dc;
    cr_assert_eq(fagen_device_class_parse(spec, &dc), FAGEN_OK, "%s", spec);
    char slug[200], file[220];
    fagen_device_class_slug(&dc, slug, sizeof slug);
    snprintf(file, sizeof file, "%s.json", slug);
    cr_assert_str_eq(fg_embedded_tables[i].name, file, "a table's file name must be its class's slug");
    warn_count w;
    fagen_ctx *ctx = ctx_counting_warnings(&w);
    json_t *e0 = json_array_get(json_object_get(root, "entries"), 0);
    fagen_attention_args a = call((int)json_integer_value(json_object_get(e0, "head_dim")),
                                  (int)json_integer_value(json_object_get(e0, "seqlen")),
                                  json_is_true(json_object_get(e0, "causal")));
    a.dtype = strcmp(json_string_value(json_object_get(e0, "dtype")), "bf16") == 0 ? FAGEN_DTYPE_BF16
                                                                                  : FAGEN_DTYPE_FP16;
    /* On sm_90a, "fwd" (mma.sync) entries serve the calls the wgmma family
       does not take, e.g. those with features: the entry's tiles plus the
       call's feature bits. */
    const int mma_on_hopper = dc.target.arch == 90 && dc.target.arch_specific &&
                              strcmp(json_string_value(json_object_get(e0, "op")), "fwd") == 0;
    if (mma_on_hopper) /* ALiBi: a feature the wgmma family lacks, with no entries of its own */
      set_features(&a, FAGEN_FEATURE_ALIBI);
    fagen_variant v;
    fagen_select_info info;
    cr_assert_eq(fagen_attention_select(ctx, &a, &dc, &v, &info), FAGEN_OK);
    if (mma_on_hopper) {
      cr_assert(v.features == FAGEN_FEATURE_ALIBI && info.entry_features == 0, "%s", file);
      v.features = 0;
    }
    cr_assert_eq(w.warnings, 0, "%s: %s", file, w.last);
    cr_assert_eq(info.source, FAGEN_SELECT_SHIPPED_TABLE, "%s", file);
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&v, name, sizeof name);
    cr_assert_str_eq(name, json_string_value(json_object_get(e0, "variant")), "%s", file);
    /* Each feature family's first forward entry is what a call with exactly
       those features takes. */
    json_t *entries = json_object_get(root, "entries");
    char seen[16][64];
    int n_seen = 0;
    for (size_t k = 0; k < json_array_size(entries); k++) {
      json_t *e = json_array_get(entries, k);
      const char *feats = json_string_value(json_object_get(e, "features"));
      const char *op = json_string_value(json_object_get(e, "op"));
      if (!feats || strncmp(op, "fwd", 3) != 0) continue;
      char fam[64];
      snprintf(fam, sizeof fam, "%s:%s", op, feats);
      int dup = 0;
      for (int q = 0; q < n_seen; q++) dup |= strcmp(seen[q], fam) == 0;
      if (dup || n_seen == 16) continue;
      snprintf(seen[n_seen++], sizeof seen[0], "%s", fam);
      fagen_variant want;
      cr_assert_eq(fagen_variant_parse(json_string_value(json_object_get(e, "variant")), &want), FAGEN_OK);
      fagen_attention_args fa = call(want.head_dim, (int)json_integer_value(json_object_get(e, "seqlen")),
                                     want.causal);
      fa.dtype = want.dtype;
      set_features(&fa, want.features);
      cr_assert_eq(fagen_attention_select(ctx, &fa, &dc, &v, &info), FAGEN_OK, "%s", fagen_errmsg(ctx));
      fagen_variant_name(&v, name, sizeof name);
      cr_assert_str_eq(name, json_string_value(json_object_get(e, "variant")), "%s: %s", file, fam);
      cr_assert_eq(info.entry_features, want.features, "%s: %s", file, fam);
    }
    fagen_ctx_destroy(ctx);
    json_decref(root);
  }
}

Test(tune, cli_tune_show, .init = setup, .fini = teardown) {
  char *out, *err;
  cr_assert_eq(run(FAGEN_CLI, (const char *[]){"tune", "show", "--device", "NVIDIA A100-SXM4-80GB,sm_80,108",
                                               "--head-dim", "64", "--seqlen", "3000", "--causal", NULL},
                   &out, &err),
               0, "%s", err);
  cr_assert(strstr(out, "sm80-nvidia-a100-sxm4-80gb-108sm"), "%s", out);
  cr_assert(strstr(out, "user table: "), "%s", out);
  cr_assert(strstr(out, "selected:   fwd_d64_"), "%s", out);
  cr_assert(strstr(out, "shipped table builtin:sm80-nvidia-a100-sxm4-80gb-108sm.json"), "%s", out);
  free(out), free(err);
  cr_assert_eq(run(FAGEN_CLI, (const char *[]){"tune", "show", "--device", "NVIDIA A100-SXM4-80GB,sm_80,108",
                                               "--backward", "--deterministic", "--head-dim", "96", NULL},
                   &out, &err),
               0, "%s", err);
  cr_assert(strstr(out, "call:       deterministic backward bf16 head_dim 96"), "%s", out);
  cr_assert(strstr(out, "selected:   bwddet_d96_"), "%s", out);
  cr_assert(strstr(out, "shipped table builtin:sm80-nvidia-a100-sxm4-80gb-108sm.json"), "%s", out);
  free(out), free(err);
  /* A device with no table of its own: the sibling, named as such. */
  cr_assert_eq(run(FAGEN_CLI, (const char *[]){"tune", "show", "--device", "NVIDIA H100 PCIe,sm_90a,114",
                                               "--head-dim", "128", "--seqlen", "4096", NULL},
                   &out, &err),
               0, "%s", err);
  cr_assert(strstr(out, "selected:   fwdwg_d128_"), "%s", out);
  cr_assert(strstr(out, "shipped table of another device "
                        "builtin:sm90a-nvidia-h100-80gb-hbm3-132sm.json, entry for seqlen 4096"),
            "%s", out);
  free(out), free(err);
  /* --softcap: whether the entry was measured with it (the H100 table's
     fwdwg entries at d64 include softcap ones only if tuned so: either line). */
  cr_assert_eq(run(FAGEN_CLI, (const char *[]){"tune", "show", "--device", "NVIDIA H100 80GB HBM3,sm_90a,132",
                                               "--head-dim", "64", "--softcap", "30", NULL},
                   &out, &err),
               0, "%s", err);
  cr_assert(strstr(out, "selected:   fwdwg_d64_") && strstr(out, "_softcap_bf16_sm90a"), "%s", out);
  cr_assert(strstr(out, "features:   the entry was measured with softcap") ||
                strstr(out, "features:   no entry measured with softcap"),
            "%s", out);
  free(out), free(err);
  cr_assert_eq(run(FAGEN_CLI, (const char *[]){"tune", "show", "--softcap", "-1", NULL}, &out, &err), 2);
  cr_assert(strstr(err, "--softcap takes a cap > 0"), "%s", err);
  free(out), free(err);
  cr_assert_eq(run(FAGEN_CLI, (const char *[]){"tune", "show", "--deterministic", NULL}, &out, &err), 2);
  cr_assert(strstr(err, "--deterministic needs --backward"), "%s", err);
  free(out), free(err);
  cr_assert_eq(run(FAGEN_CLI, (const char *[]){"tune", "show", "--head-dim", "x", NULL}, &out, &err), 2);
  free(out), free(err);
  cr_assert_eq(run(FAGEN_CLI, (const char *[]){"tune", "list", NULL}, &out, &err), 2);
  free(out), free(err);
}

Test(tune, autotune_cli, .init = setup, .fini = teardown) {
  char *out, *err;
  cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--help", NULL}, &out, &err), 0);
  cr_assert(strstr(out, "--budget SECONDS"), "%s", out);
  free(out), free(err);
  cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--frobnicate", NULL}, &out, &err), 2);
  free(out), free(err);
  cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--heuristic-table", NULL}, &out, &err), 2);
  cr_assert(strstr(err, "--device"), "%s", err);
  free(out), free(err);
  /* The heuristic table it writes is one the runtime accepts. */
  char slug[200], path[1400];
  fagen_device_class_slug(&TEST_GPU, slug, sizeof slug);
  snprintf(path, sizeof path, "%s/%s.json", dir, slug);
  cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--heuristic-table", "--device", "Test GPU 9000,sm_90a,7",
                                                    "--head-dims", "64,128", "--seqlens", "2048",
                                                    "--out", path, NULL},
                   &out, &err),
               0, "%s", err);
  free(out), free(err);
  /* On sm_90a it holds every family's entries: "fwdwg" and "bwdwg" (wgmma,
     plain calls), "fwd" and "bwd" (mma.sync, calls with features) and
     "bwddet"; elsewhere no wgmma family. */
  char path80[1400];
  snprintf(path80, sizeof path80, "%s/heuristic-sm80.json", dir);
  cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--heuristic-table", "--device", "NVIDIA A100-SXM4-80GB,sm_80,108",
                                                    "--head-dims", "64,128", "--seqlens", "2048",
                                                    "--out", path80, NULL},
                   &out, &err),
               0, "%s", err);
  free(out), free(err);
  const char *const written[2] = {path, path80};
  for (int t = 0; t < 2; t++) {
    json_error_t jerr;
    json_t *root = json_load_file(written[t], 0, &jerr);
    cr_assert_not_null(root, "%s: %s", written[t], jerr.text);
    json_t *entries = json_object_get(root, "entries");
    const char *const ops[5] = {"fwd", "fwdwg", "bwd", "bwdwg", "bwddet"};
    int count[5] = {0};
    for (size_t i = 0; i < json_array_size(entries); i++) {
      const char *op = json_string_value(json_object_get(json_array_get(entries, i), "op"));
      for (int k = 0; k < 5; k++) count[k] += op && strcmp(op, ops[k]) == 0;
    }
    for (int k = 0; k < 5; k++) /* 2 head dims x 2 dtypes x causal or not */
      cr_assert_eq(count[k], t == 0 || k == 0 || k == 2 || k == 4 ? 8 : 0, "%s: %d %s entries",
                   written[t], count[k], ops[k]);
    json_decref(root);
  }
  warn_count w;
  fagen_ctx *ctx = ctx_counting_warnings(&w);
  fagen_attention_args a = call(64, 8192, 1);
  fagen_variant v;
  fagen_select_info info;
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK);
  cr_assert_eq(info.source, FAGEN_SELECT_USER_TABLE, "%s", w.last);
  cr_assert_eq(info.bucket, 2048);
  cr_assert_eq(v.op, FAGEN_OP_FWD_WGMMA);
  a.feat.window = 1; /* a feature the wgmma family lacks: the table's mma.sync entry */
  a.feat.window_left = 64;
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK);
  cr_assert_eq(info.source, FAGEN_SELECT_USER_TABLE, "%s", w.last);
  cr_assert_eq(v.op, FAGEN_OP_FWD);
  /* The backward reads the same table: bwdwg for plain calls, bwddet for
     deterministic ones, bwd for those with features. */
  fagen_attention_bwd_args b = bwd_call(64, 8192, 1);
  cr_assert_eq(fagen_attention_backward_select(ctx, &b, &TEST_GPU, &v, &info), FAGEN_OK);
  cr_assert(info.source == FAGEN_SELECT_USER_TABLE && v.op == FAGEN_OP_BWD_WGMMA, "%d %d: %s",
            info.source, v.op, w.last);
  b.deterministic = 1;
  cr_assert_eq(fagen_attention_backward_select(ctx, &b, &TEST_GPU, &v, &info), FAGEN_OK);
  cr_assert(info.source == FAGEN_SELECT_USER_TABLE && v.op == FAGEN_OP_BWD_DET);
  b.deterministic = 0;
  b.feat.softcap = 30.f;
  cr_assert_eq(fagen_attention_backward_select(ctx, &b, &TEST_GPU, &v, &info), FAGEN_OK);
  cr_assert(info.source == FAGEN_SELECT_USER_TABLE && v.op == FAGEN_OP_BWD &&
            v.features == FAGEN_FEATURE_SOFTCAP);
  cr_assert_eq(w.warnings, 0, "%s", w.last);
  fagen_ctx_destroy(ctx);
  /* --ops limits the families; an unknown one is a usage error. */
  cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--heuristic-table", "--device", "Test GPU 9000,sm_90a,7",
                                                    "--ops", "bwdwg,fwd", "--head-dims", "32,64",
                                                    "--seqlens", "2048", "--out", path, NULL},
                   &out, &err),
               0, "%s", err);
  free(out), free(err);
  json_error_t jerr;
  json_t *root = json_load_file(path, 0, &jerr);
  cr_assert_not_null(root, "%s", jerr.text);
  json_t *entries = json_object_get(root, "entries");
  int n_bwdwg = 0, n_fwd = 0;
  for (size_t i = 0; i < json_array_size(entries); i++) {
    json_t *e = json_array_get(entries, i);
    const char *op = json_string_value(json_object_get(e, "op"));
    n_fwd += strcmp(op, "fwd") == 0;
    n_bwdwg += strcmp(op, "bwdwg") == 0;
    cr_assert(strcmp(op, "bwdwg") != 0 || json_integer_value(json_object_get(e, "head_dim")) == 64,
              "bwdwg has no head_dim 32 kernel: no entry");
  }
  cr_assert(n_fwd == 8 && n_bwdwg == 4 && json_array_size(entries) == 12, "%d %d %zu", n_fwd,
            n_bwdwg, json_array_size(entries));
  json_decref(root);
  cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--ops", "fwd,bwdx", NULL}, &out, &err), 2);
  cr_assert(strstr(err, "'bwdx' is not one of"), "%s", err);
  free(out), free(err);
  /* --features: cases of those feature sets, only in the families that have
     kernels for them (fwdwg: softcap and varlen; bwdwg: none), their entries
     marked; the runtime takes them for calls with exactly those features. */
  cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--heuristic-table", "--device", "Test GPU 9000,sm_90a,7",
                                                    "--ops", "fwdwg,bwdwg,bwd", "--features", "softcap,window",
                                                    "--head-dims", "64", "--causal", "no", "--dtypes", "bf16",
                                                    "--seqlens", "2048", "--out", path, NULL},
                   &out, &err),
               0, "%s", err);
  free(out), free(err);
  root = json_load_file(path, 0, &jerr);
  cr_assert_not_null(root, "%s", jerr.text);
  entries = json_object_get(root, "entries");
  char got[256] = "";
  for (size_t i = 0; i < json_array_size(entries); i++) {
    json_t *e = json_array_get(entries, i);
    size_t n = strlen(got);
    snprintf(got + n, sizeof got - n, "%s:%s ", json_string_value(json_object_get(e, "op")),
             json_string_value(json_object_get(e, "features")));
  }
  cr_assert_str_eq(got, "fwdwg:softcap bwd:softcap bwd:window ");
  json_decref(root);
  ctx = ctx_counting_warnings(&w); /* no warnings so far (asserted above) */
  a = call(64, 2048, 0);
  a.feat.softcap = 30.f;
  cr_assert_eq(fagen_attention_select(ctx, &a, &TEST_GPU, &v, &info), FAGEN_OK);
  cr_assert(info.source == FAGEN_SELECT_USER_TABLE && info.entry_features == FAGEN_FEATURE_SOFTCAP &&
                v.op == FAGEN_OP_FWD_WGMMA && v.features == FAGEN_FEATURE_SOFTCAP,
            "%d %u %d: %s", info.source, info.entry_features, v.op, w.last);
  cr_assert_eq(w.warnings, 0, "%s", w.last);
  fagen_ctx_destroy(ctx);
  const char *const bad_sets[] = {"softcap+bogus", "", ",", NULL};
  for (int k = 0; bad_sets[k]; k++) {
    cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--features", bad_sets[k], NULL}, &out, &err), 2,
                 "--features '%s'", bad_sets[k]);
    free(out), free(err);
  }
  if (!fg_test_gpu_available(NULL)) {
    cr_assert_eq(run(FAGEN_AUTOTUNE, (const char *[]){"--seqlens", "512", NULL}, &out, &err), 1);
    cr_assert(strstr(err, "no GPU"), "%s", err);
    free(out), free(err);
  }
}
