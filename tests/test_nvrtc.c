/* NVRTC: every default variant compiles for sm_80 and sm_90a without a GPU;
 * compile errors and a missing NVRTC are reported with what a user needs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fagen.h"
#include "fg_ctx.h"
#include "fg_jit.h"
#include "fg_nvrtc.h"
#include "fg_templates.h"
#include "fg_test.h"
#include "fg_tool_util.h"

static char *cache_dir;

static void setup(void) {
  cache_dir = fg_test_tmpdir();
  setenv("FAGEN_CACHE_DIR", cache_dir, 1);
}

static void teardown(void) {
  fg_test_rmrf(cache_dir);
  free(cache_dir);
}

/* Compiles the default variants with this head_dim for both targets and
 * checks the ptxas report (resources, and no serialized wgmma).  Spills stay within a small bound: some default
 * tiles spill a few dozen bytes and still measure fastest (gen/fg_variant.c);
 * a regression in register use shows as hundreds. */
#define FG_SPILL_BOUND 128
static void compile_head_dim(int head_dim) {
  fagen_target t[2] = {{80, 0}, {90, 1}};
  fagen_variant vs[240];
  size_t n;
  cr_assert_eq(fagen_default_variants(t, 2, vs, 240, &n), FAGEN_OK);
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  int compiled = 0;
  for (size_t i = 0; i < n; i++) {
    if (vs[i].head_dim != head_dim) continue;
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&vs[i], name, sizeof name);
    fagen_kernel_info info;
    fagen_status st = fagen_compile(ctx, &vs[i], &info);
    cr_assert_eq(st, FAGEN_OK, "%s: %s\n%s", name, fagen_errmsg(ctx), fagen_compile_log(ctx));
    /* The compile's log (from the in-memory store): shown where the ptxas
       report is missing, and ptxas must not have serialized a kernel's wgmma
       products (C7510-C7520: every product waited for on its own, no
       overlap with the softmax; correct results, a slower kernel, easy to
       cause by a branch or a register-hungry edit of a Hopper template). */
    fg_cache_blob blob;
    fg_err err;
    cr_assert_eq(fg_jit_cubin(ctx, &vs[i], &blob, NULL, &err), FAGEN_OK, "%s", name);
    if (info.registers <= 0)
      printf("%s: NVRTC log without a usable ptxas report:\n%s\n", name, blob.log ? blob.log : "(none)");
    char loss[256];
    cr_assert_eq(fg_ptxas_perf_loss(blob.log, loss, sizeof loss), 0, "%s: ptxas: %s", name, loss);
    fg_cache_blob_free(&blob);
    cr_assert_str_eq(info.name, name);
    cr_assert_gt(info.cubin_bytes, 0);
    cr_assert(info.registers > 0 && info.registers <= 255, "%s: %d registers", name,
              info.registers);
    cr_assert_leq(info.spill_store_bytes, FG_SPILL_BOUND, "%s spills %d/%d bytes", name,
                  info.spill_store_bytes, info.spill_load_bytes);
    cr_assert_geq(info.spill_store_bytes, 0, "%s: no ptxas report", name);
    cr_assert_eq(info.threads, vs[i].warps * 32);
    cr_assert_eq(info.from_disk_cache, 0);
    compiled++;
  }
  const int bwdwg = head_dim == 64 || head_dim == 96 || head_dim == 128 || head_dim == 256;
  cr_assert_eq(compiled, bwdwg ? 32 : 28,
               "fwd/bwd/bwddet x fp16/bf16 x causal or not x 2 targets, + fwdwg (and at d64, "
               "d96, d128, d256 bwdwg) x fp16/bf16 x causal or not on sm_90a: %d",
               compiled);
  fagen_ctx_destroy(ctx);
}

#define COMPILE_TEST(d) \
  Test(nvrtc, default_variants_d##d, .init = setup, .fini = teardown, .timeout = 600) { compile_head_dim(d); }
COMPILE_TEST(32)
COMPILE_TEST(64)
COMPILE_TEST(96)
COMPILE_TEST(128)
COMPILE_TEST(160)
COMPILE_TEST(192)
COMPILE_TEST(224)
COMPILE_TEST(256)

/* Every feature compiles, alone and all together, in each op, for both
 * targets, within the same register and spill bounds as the default set
 * (d64 and d128 default tiles; the GPU tests run these). */
Test(nvrtc, feature_variants, .init = setup, .fini = teardown, .timeout = 900) {
  static const char *const bases[] = {"fwd_d128_bq128_bk64_w4_s1", "bwd_d64_bq128_bk128_w8_s2",
                                      "bwddet_d128_bq64_bk128_w8_s2"};
  static const char *const feats[] = {"varlen",  "window", "softcap",
                                      "alibi",   "dropout",
                                      "causal_varlen_window_softcap_alibi_dropout"};
  static const char *const targets[] = {"sm80", "sm90a"};
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  for (size_t b = 0; b < FG_ARRAY_LEN(bases); b++)
    for (size_t f = 0; f < FG_ARRAY_LEN(feats); f++) {
      /* The combination on both targets, single features on one each. */
      for (size_t t = 0; t < FG_ARRAY_LEN(targets); t++) {
        if (f + 1 < FG_ARRAY_LEN(feats) && (f + b) % 2 != t) continue;
        char name[FAGEN_VARIANT_NAME_MAX];
        snprintf(name, sizeof name, "%s_%s_bf16_%s", bases[b], feats[f], targets[t]);
        fagen_variant v;
        cr_assert_eq(fagen_variant_parse(name, &v), FAGEN_OK, "%s", name);
        cr_assert_neq(v.features, 0u, "%s", name);
        fagen_kernel_info info;
        fagen_status st = fagen_compile(ctx, &v, &info);
        cr_assert_eq(st, FAGEN_OK, "%s: %s\n%s", name, fagen_errmsg(ctx), fagen_compile_log(ctx));
        cr_assert_str_eq(info.name, name);
        cr_assert(info.registers > 0 && info.registers <= 255, "%s: %d registers", name,
                  info.registers);
        cr_assert_leq(info.spill_store_bytes, FG_SPILL_BOUND, "%s spills %d/%d bytes", name,
                      info.spill_store_bytes, info.spill_load_bytes);
      }
    }
  fagen_ctx_destroy(ctx);
}

/* The Hopper forward with its features (sequence lengths, softcap, both),
 * in the tiles the shipped H100 table uses most: compiles for sm_90a without
 * spills, and with sequence lengths O goes out through registers (no O tile
 * in shared memory: a tile's TMA store would write past a packed sequence). */
Test(nvrtc, fwdwg_feature_variants, .init = setup, .fini = teardown, .timeout = 600) {
  static const char *const names[] = {
      "fwdwg_d128_bq128_bk128_w12_s2_pp_varlen_bf16_sm90a",
      "fwdwg_d128_bq128_bk128_w12_s2_pp_causal_varlen_softcap_fp16_sm90a",
      "fwdwg_d64_bq192_bk112_w16_s3_pp_pq_causal_varlen_bf16_sm90a",
      "fwdwg_d256_bq128_bk80_w12_s2_pp_varlen_softcap_bf16_sm90a",
  };
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  for (size_t i = 0; i < FG_ARRAY_LEN(names); i++) {
    fagen_variant v, plain;
    cr_assert_eq(fagen_variant_parse(names[i], &v), FAGEN_OK, "%s", names[i]);
    cr_assert(v.features & FAGEN_FEATURE_VARLEN, "%s", names[i]);
    fagen_kernel_info info, plain_info;
    cr_assert_eq(fagen_compile(ctx, &v, &info), FAGEN_OK, "%s: %s", names[i], fagen_errmsg(ctx));
    cr_assert_eq(info.spill_store_bytes, 0, "%s spills %d/%d bytes", names[i],
                 info.spill_store_bytes, info.spill_load_bytes);
    cr_assert_eq(info.spill_load_bytes, 0, "%s", names[i]);
    plain = v;
    plain.features = 0;
    cr_assert_eq(fagen_compile(ctx, &plain, &plain_info), FAGEN_OK, "%s", fagen_errmsg(ctx));
    /* the plain d128 kernels store O through a shared tile; the varlen ones do not */
    if (v.head_dim == 128)
      cr_assert_lt(info.dynamic_smem_bytes, plain_info.dynamic_smem_bytes,
                   "%s: %d bytes, plain %d", names[i], info.dynamic_smem_bytes,
                   plain_info.dynamic_smem_bytes);
  }
  fagen_ctx_destroy(ctx);
}

Test(nvrtc, compile_error_keeps_the_log, .init = setup, .fini = teardown) {
  char *tdir = fg_test_tmpdir();
  for (size_t i = 0; i < fg_embedded_templates_count; i++) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", tdir, fg_embedded_templates[i].name);
    fg_test_write(path, fg_embedded_templates[i].data, fg_embedded_templates[i].size);
  }
  const char *bad = "{% include('common.cuh.tpl') %}\n__device__ int broken = undeclared_thing;\n";
  char path[2048];
  snprintf(path, sizeof path, "%s/fwd_sm80.cu.tpl", tdir);
  fg_test_write(path, bad, strlen(bad));
  setenv("FAGEN_TEMPLATE_DIR", tdir, 1);
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_variant v;
  fagen_variant_parse("fwd_d64_bq64_bk64_w4_s1_bf16_sm80", &v);
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_E_COMPILE);
  cr_assert(strstr(fagen_errmsg(ctx), "could not compile fwd_d64_bq64_bk64_w4_s1_bf16_sm80"),
            "%s", fagen_errmsg(ctx));
  /* the first error line, pointing into the template, is in the message */
  cr_assert(strstr(fagen_errmsg(ctx), "templates/fwd_sm80.cu.tpl(2)"), "%s", fagen_errmsg(ctx));
  cr_assert(strstr(fagen_compile_log(ctx), "undeclared_thing"), "%s", fagen_compile_log(ctx));
  cr_assert_str_eq(fagen_last_error(), fagen_errmsg(ctx));
  char kdir[1200];
  snprintf(kdir, sizeof kdir, "%s/kernels", cache_dir);
  cr_assert_leq(fg_test_count_files(kdir, ".fgk"), 0, "a failed compile left a cache file");
  fagen_ctx_destroy(ctx);
  fg_test_rmrf(tdir);
  free(tdir);
}

Test(nvrtc, missing_nvrtc_names_the_paths_tried, .init = setup, .fini = teardown) {
  setenv("FAGEN_NVRTC", "/nonexistent/dir/libnvrtc.so.13", 1);
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_variant v;
  fagen_variant_parse("fwd_d64_bq64_bk64_w4_s1_bf16_sm80", &v);
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_E_NO_NVRTC);
  cr_assert(strstr(fagen_errmsg(ctx), "/nonexistent/dir/libnvrtc.so.13"), "%s", fagen_errmsg(ctx));
  cr_assert(strstr(fagen_errmsg(ctx), "FAGEN_NVRTC"), "%s", fagen_errmsg(ctx));
  fagen_ctx_destroy(ctx);
}

Test(nvrtc, a_file_that_is_not_nvrtc_is_refused, .init = setup, .fini = teardown) {
  char path[1200];
  snprintf(path, sizeof path, "%s/libnvrtc.so.13", cache_dir);
  fg_test_write(path, "not a library", 13);
  setenv("FAGEN_NVRTC", path, 1);
  fagen_ctx *ctx;
  fagen_ctx_create(&ctx);
  fagen_variant v;
  fagen_variant_parse("fwd_d64_bq64_bk64_w4_s1_bf16_sm80", &v);
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_E_NO_NVRTC);
  cr_assert(strstr(fagen_errmsg(ctx), path), "%s", fagen_errmsg(ctx));
  fagen_ctx_destroy(ctx);
}

Test(nvrtc, search_order) {
  setenv("CUDA_HOME", "/opt/my-cuda", 1);
  unsetenv("CUDA_PATH");
  unsetenv("FAGEN_NVRTC");
  char list[8192];
  int then_loader = 0;
  fg_nvrtc_candidates(list, sizeof list, &then_loader);
  const char *a = strstr(list, "/opt/my-cuda/lib64/libnvrtc.so.13");
  const char *b = strstr(list, "/usr/local/cuda/lib64/libnvrtc.so.13");
  cr_assert(a && b && a < b, "CUDA_HOME must come before /usr/local/cuda: %s", list);
  cr_assert(then_loader);
  setenv("FAGEN_NVRTC", "/x/libnvrtc.so", 1);
  fg_nvrtc_candidates(list, sizeof list, &then_loader);
  cr_assert_str_eq(list, "/x/libnvrtc.so");
  cr_assert_not(then_loader, "an explicit FAGEN_NVRTC is the only candidate");
}

Test(nvrtc, ptxas_report_is_parsed) {
  const char *log =
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
      "ptxas info    : Function properties for k\n"
      "ptxas         .     24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
      "ptxas info    : Used 168 registers, used 1 barriers, 4096 bytes smem, 528 bytes cmem[0]\n";
  fg_nvrtc_result r;
  memset(&r, 0, sizeof r);
  fg_nvrtc_parse_ptxas(log, &r);
  cr_assert_eq(r.registers, 168);
  cr_assert_eq(r.stack_bytes, 24);
  cr_assert_eq(r.spill_stores, 8);
  cr_assert_eq(r.spill_loads, 12);
  cr_assert_eq(r.static_smem, 4096);
}

/* ptxas's note that it serialized a kernel's wgmma products is found and
 * quoted from its message number; a clean report has none. */
Test(nvrtc, ptxas_performance_loss_is_found) {
  const char *log =
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : (C7520) Potential Performance Loss: wgmma.mma_async instructions are "
      "serialized due to program dependence on compiler-inserted WG.AR in divergent path in "
      "the function 'k'\n"
      "ptxas info    : Used 168 registers\n";
  char line[256];
  cr_assert_eq(fg_ptxas_perf_loss(log, line, sizeof line), 1);
  cr_assert(strncmp(line, "(C7520) Potential Performance Loss: wgmma.mma_async", 51) == 0, "%s", line);
  cr_assert(strstr(line, "in the function 'k'") != NULL && !strchr(line, '\n'), "%s", line);
  char small[8];
  cr_assert_eq(fg_ptxas_perf_loss(log, small, sizeof small), 1);
  cr_assert_str_eq(small, "(C7520)");
  cr_assert_eq(fg_ptxas_perf_loss("ptxas info    : Used 40 registers\n", line, sizeof line), 0);
  cr_assert_eq(fg_ptxas_perf_loss(NULL, line, sizeof line), 0);
}

/* A log without a ptxas report (e.g. a result NVRTC took from its own cache)
 * must read as unknown, not as 0 registers. */
Test(nvrtc, missing_ptxas_report_reads_as_unknown) {
  fg_nvrtc_result r;
  memset(&r, 0, sizeof r);
  fg_nvrtc_parse_ptxas("", &r);
  cr_assert_eq(r.registers, -1);
  cr_assert_eq(r.spill_stores, -1);
  cr_assert_eq(r.spill_loads, -1);
  cr_assert_eq(r.stack_bytes, -1);
}

/* The options are sorted (they feed cache keys) and include --minimal: the
 * kernels are self-contained, and without NVRTC's builtin declarations the
 * front end is shorter with the same SASS. */
Test(nvrtc, options_are_sorted_and_minimal) {
  fagen_target t = {90, 1};
  char opts[8][64];
  size_t n = fg_nvrtc_options(&t, opts, 8);
  cr_assert_geq(n, 5);
  int minimal = 0, arch = 0;
  for (size_t i = 0; i < n; i++) {
    if (i) cr_assert_lt(strcmp(opts[i - 1], opts[i]), 0, "%s before %s", opts[i - 1], opts[i]);
    minimal += strcmp(opts[i], FG_NVRTC_MINIMAL) == 0;
    arch += strcmp(opts[i], "--gpu-architecture=sm_90a") == 0;
  }
  cr_assert_eq(minimal, 1);
  cr_assert_eq(arch, 1);
  cr_assert_eq(fg_nvrtc_options(&t, opts, 6), 0, "a list too short for every option is refused");
}

/* --minimal reaches NVRTC 12.4+: a builtin texture type is then unknown. */
Test(nvrtc, minimal_reaches_nvrtc, .init = setup, .fini = teardown) {
  int major = 0, minor = 0;
  fg_err err;
  if (fg_nvrtc_version(&major, &minor, &err) != FAGEN_OK) cr_skip_test("no NVRTC");
  if (major == 12 && minor < 4) cr_skip_test("NVRTC %d.%d has no --minimal", major, minor);
  fagen_target t = {80, 0};
  fg_nvrtc_result r;
  const char *tex = "__global__ void k(cudaTextureObject_t t, int *p) { p[0] = (int)t; }\n";
  cr_assert_eq(fg_nvrtc_compile(tex, "tex", &t, &r, &err), FAGEN_E_COMPILE);
  cr_assert(strstr(r.log, "cudaTextureObject_t"), "%s", r.log);
  fg_nvrtc_result_free(&r);
  const char *plain = "__global__ void k(int *p) { p[threadIdx.x] = 1; }\n";
  cr_assert_eq(fg_nvrtc_compile(plain, "plain", &t, &r, &err), FAGEN_OK, "%s", err.msg);
  cr_assert_gt(r.cubin_size, 0);
  fg_nvrtc_result_free(&r);
}

/* fg_compile_start's queue (fagen-autotune measures each block of cases as
 * soon as its candidates are compiled): waiting for a variant returns once it
 * is in the disk cache, every variant is reported once, and cancelling skips
 * what has not started. */
static const char *queue_names[] = {
    "fwd_d32_bq64_bk64_w4_s1_bf16_sm80", "fwd_d32_bq64_bk32_w4_s1_bf16_sm80",
    "fwd_d32_bq64_bk64_w4_s1_fp16_sm80", "fwd_d32_bq64_bk32_w4_s1_fp16_sm80",
    "fwd_d32_bq64_bk64_w4_s1_causal_bf16_sm80", "fwd_d32_bq64_bk32_w4_s1_causal_bf16_sm80"};

/* Runs on the compile threads (serialized): records, the test asserts. */
static void count_compiled(void *user, size_t i, fagen_status st, size_t done) {
  int *calls = user;
  calls[i] += st == FAGEN_OK && done >= 1 && done <= 6 ? 1 : 100;
}

static void queue_variants(fagen_variant vs[6]) {
  for (int i = 0; i < 6; i++)
    cr_assert_eq(fagen_variant_parse(queue_names[i], &vs[i]), FAGEN_OK, "%s", queue_names[i]);
}

Test(nvrtc, compile_queue_hands_out_variants_as_they_finish, .init = setup, .fini = teardown) {
  fagen_variant vs[6];
  queue_variants(vs);
  int calls[6] = {0};
  fagen_ctx *ctx, *other;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  cr_assert_eq(fagen_ctx_create(&other), FAGEN_OK);
  fg_compile_queue *q = fg_compile_start(ctx, vs, 3, 2, count_compiled, calls);
  cr_assert_not_null(q);
  for (int i = 2; i >= 0; i--) {
    fg_compile_wait(q, (size_t)i);
    fagen_kernel_info info;
    cr_assert_eq(fagen_compile(other, &vs[i], &info), FAGEN_OK);
    cr_assert_eq(info.from_disk_cache, 1, "%s: not in the disk cache when its wait returned",
                 queue_names[i]);
  }
  cr_assert_eq(fg_compile_done(q), 3);
  cr_assert_eq(fg_compile_finish(q, 0), 2, "threads used");
  for (int i = 0; i < 3; i++) cr_assert_eq(calls[i], 1, "variant %d reported %d times", i, calls[i]);
  fagen_ctx_destroy(other);
  fagen_ctx_destroy(ctx);
}

Test(nvrtc, compile_queue_cancel_skips_what_has_not_started, .init = setup, .fini = teardown) {
  fagen_variant vs[6];
  queue_variants(vs);
  int calls[6] = {0};
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  fg_compile_queue *q = fg_compile_start(ctx, vs, 6, 1, count_compiled, calls);
  cr_assert_not_null(q);
  fg_compile_wait(q, 0);
  cr_assert_eq(fg_compile_finish(q, 1), 1);
  int total = 0;
  for (int i = 0; i < 6; i++) total += calls[i];
  /* the first, and the second if the thread took it before the cancel */
  cr_assert(calls[0] == 1 && total <= 2, "%d of 6 compiled after a cancel", total);
  fagen_ctx_destroy(ctx);
}
