/* The fagen CLI: help, version, exit codes 0/1/2, --emit output and manifest,
 * and no partial output on failure; fagen-bench-runtime's arguments. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fagen.h"
#include "fg_templates.h"
#include "fg_test.h"

static int fagen(const char *const *args, const char *const *env, char **out, char **err) {
  return fg_test_run_prog(FAGEN_CLI, args, env, out, err);
}

Test(cli, help_and_version) {
  char *out, *err;
  cr_assert_eq(fagen((const char *[]){"--help", NULL}, NULL, &out, &err), 0);
  cr_assert(strstr(out, "usage: fagen --emit"));
  cr_assert(strstr(out, "Exit status"));
  cr_assert(strstr(out, "FAGEN_CACHE_DIR"));
  free(out), free(err);
  /* Help after a command, too (it used to be an unknown option). */
  const char *after[][4] = {{"list", "--help", NULL}, {"tune", "show", "-h", NULL},
                            {"cache", "warm", "--help", NULL}, {"--emit", "-h", NULL}, {NULL}};
  for (size_t i = 0; after[i][0]; i++) {
    cr_assert_eq(fagen(after[i], NULL, &out, &err), 0, "'%s ... help': %s", after[i][0], err);
    cr_assert(strstr(out, "Exit status"), "no help for '%s'", after[i][0]);
    free(out), free(err);
  }
  cr_assert_eq(fagen((const char *[]){"--version", NULL}, NULL, &out, &err), 0);
  cr_assert_str_eq(out, "fagen " FAGEN_VERSION_STRING "\n");
  free(out), free(err);
}

Test(cli, usage_errors_exit_2) {
  const char *cases[][4] = {{"--bogus", NULL},
                            {"--emit", "--bogus", NULL},
                            {"--emit", "-o", NULL},
                            {"--emit", "--arch", "sm_75", NULL},
                            {"list", "extra", NULL},
                            {"cache", "frobnicate", NULL},
                            {NULL}};
  for (size_t i = 0; cases[i][0]; i++) {
    char *out, *err;
    int rc = fagen(cases[i], NULL, &out, &err);
    cr_assert_eq(rc, 2, "'%s %s' exited %d: %s", cases[i][0], cases[i][1] ? cases[i][1] : "", rc,
                 err);
    cr_assert(strstr(err, "error"), "no message for '%s': %s", cases[i][0], err);
    free(out), free(err);
  }
  char *out, *err;
  cr_assert_eq(fagen((const char *[]){NULL}, NULL, &out, &err), 2);
  free(out), free(err);
}

Test(cli, emit_writes_default_set_and_manifest) {
  char *dir = fg_test_tmpdir(), sub[1024];
  snprintf(sub, sizeof sub, "%s/a/b", dir);
  char *out, *err;
  int rc = fagen((const char *[]){"--emit", "-o", sub, NULL}, NULL, &out, &err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_eq(fg_test_count_files(sub, ".cu"), 240);
  cr_assert_eq(fg_test_count_files(sub, "bwdwg_"), 16);
  cr_assert_eq(fg_test_count_files(sub, ".tmp"), 0);
  char path[1200];
  snprintf(path, sizeof path, "%s/manifest.json", sub);
  char *m = fg_test_read(path, NULL);
  cr_assert_not_null(m);
  cr_assert(strstr(m, "\"name\": \"fwd_d256_") && strstr(m, "_causal_bf16_sm90a\""), "%s", m);
  cr_assert(strstr(m, "\"target\": \"sm_80\""));
  /* Each entry names its own op (regression: every entry used to say "fwd"). */
  cr_assert(strstr(m, "\"file\": \"bwddet_d64_bq128_bk128_w8_s2_bf16_sm80.cu\", \"op\": \"bwddet\""),
            "%s", m);
  cr_assert(strstr(m, ".cu\", \"op\": \"fwdwg\", \"head_dim\": 128, \"block_q\": 128, "
                      "\"block_kv\": 128, \"warps\": 12, \"stages\": 2, \"pingpong\": true"),
            "%s", m);
  cr_assert(strstr(m, "\"file\": \"bwdwg_d128_bq64_bk128_w12_s2_causal_fp16_sm90a.cu\", "
                      "\"op\": \"bwdwg\", \"head_dim\": 128, \"block_q\": 64, \"block_kv\": 128, "
                      "\"warps\": 12, \"stages\": 2, \"pingpong\": false, \"prefetch_q\": false, "
                      "\"causal\": true, "
                      "\"dtype\": \"fp16\", \"target\": \"sm_90a\""),
            "%s", m);
  free(m);
  /* Every file matches the library's source for that variant. */
  fagen_target t80 = {80, 0};
  fagen_variant defaults[96];
  size_t nd;
  cr_assert_eq(fagen_default_variants(&t80, 1, defaults, 96, &nd), FAGEN_OK);
  fagen_variant v = defaults[nd / 2];
  char vname[FAGEN_VARIANT_NAME_MAX];
  fagen_variant_name(&v, vname, sizeof vname);
  snprintf(path, sizeof path, "%s/%s.cu", sub, vname);
  size_t size = 0;
  char *file = fg_test_read(path, &size);
  cr_assert_not_null(file, "%s was not emitted", path);
  char *src;
  size_t len;
  cr_assert_eq(fagen_variant_source(&v, &src, &len), FAGEN_OK);
  cr_assert_eq(size, len);
  cr_assert_eq(memcmp(file, src, len), 0);
  free(file), fagen_free(src), free(out), free(err);
  fg_test_rmrf(dir);
  free(dir);
}

Test(cli, emit_only_glob_arch_and_named_variants) {
  char *dir = fg_test_tmpdir();
  char *out, *err;
  int rc = fagen((const char *[]){"--emit", "-o", dir, "--only", "fwd_d128_*causal_bf16*", "--arch",
                                  "sm_86", NULL},
                 NULL, &out, &err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_eq(fg_test_count_files(dir, ".cu"), 1);
  cr_assert_eq(fg_test_count_files(dir, "fwd_d128_"), 1);
  cr_assert_eq(fg_test_count_files(dir, "_causal_bf16_sm86.cu"), 1);
  free(out), free(err);
  rc = fagen((const char *[]){"emit", "-o", dir, "fwd_d32_bq64_bk32_w4_s1_fp16_sm90a", NULL}, NULL,
             &out, &err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_eq(fg_test_count_files(dir, "fwd_d32_bq64_bk32_w4_s1_fp16_sm90a.cu"), 1);
  free(out), free(err);
  rc = fagen((const char *[]){"--emit", "-o", dir, "--only", "nothing*", NULL}, NULL, &out, &err);
  cr_assert_eq(rc, 1);
  cr_assert(strstr(err, "no variant matches"), "%s", err);
  free(out), free(err);
  fg_test_rmrf(dir);
  free(dir);
}

Test(cli, emit_invalid_variant_fails_without_output) {
  char *dir = fg_test_tmpdir();
  char *out, *err;
  /* valid name syntax, but block_q 18 is not divisible by 4 warps */
  int rc = fagen((const char *[]){"--emit", "-o", dir, "fwd_d64_bq64_bk64_w4_s1_fp16_sm80",
                                  "fwd_d64_bq18_bk64_w4_s1_fp16_sm80", NULL},
                 NULL, &out, &err);
  cr_assert_eq(rc, 1);
  cr_assert(strstr(err, "must be 16 x warps"), "%s", err);
  cr_assert_eq(fg_test_count_files(dir, NULL), 0, "files were left behind");
  free(out), free(err);
  rc = fagen((const char *[]){"--emit", "-o", dir, "fwd_d300_bq64_bk64_w4_s1_fp16_sm80", NULL}, NULL,
             &out, &err);
  cr_assert_eq(rc, 1);
  cr_assert(strstr(err, "head_dim=300"), "%s", err);
  free(out), free(err);
  rc = fagen((const char *[]){"--emit", "-o", dir, "not_a_variant", NULL}, NULL, &out, &err);
  cr_assert_eq(rc, 1);
  cr_assert(strstr(err, "not a variant name"), "%s", err);
  free(out), free(err);
  fg_test_rmrf(dir);
  free(dir);
}

Test(cli, emit_into_unwritable_dir_fails_cleanly) {
  if (geteuid() == 0) {
    /* root ignores permissions: use a path below a regular file instead */
    char *dir = fg_test_tmpdir(), file[1024], target[1100];
    snprintf(file, sizeof file, "%s/file", dir);
    fg_test_write(file, "x", 1);
    snprintf(target, sizeof target, "%s/sub", file);
    char *out, *err;
    int rc = fagen((const char *[]){"--emit", "-o", target, NULL}, NULL, &out, &err);
    cr_assert_eq(rc, 1);
    cr_assert(strstr(err, "cannot create output directory"), "%s", err);
    free(out), free(err);
    fg_test_rmrf(dir);
    free(dir);
    return;
  }
  char *dir = fg_test_tmpdir();
  chmod(dir, 0500);
  char *out, *err;
  int rc = fagen((const char *[]){"--emit", "-o", dir, NULL}, NULL, &out, &err);
  cr_assert_eq(rc, 1);
  cr_assert(strstr(err, "cannot"), "%s", err);
  cr_assert_eq(fg_test_count_files(dir, NULL), 0);
  free(out), free(err);
  fg_test_rmrf(dir);
  free(dir);
}

Test(cli, template_error_fails_without_partial_output) {
  char *tdir = fg_test_tmpdir(), *odir = fg_test_tmpdir();
  for (size_t i = 0; i < fg_embedded_templates_count; i++) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", tdir, fg_embedded_templates[i].name);
    fg_test_write(path, fg_embedded_templates[i].data, fg_embedded_templates[i].size);
  }
  char path[2048], env[1100];
  snprintf(path, sizeof path, "%s/fwd_sm80.cu.tpl", tdir);
  const char *bad = "{% include('common.cuh.tpl') %}\n{% if v.causal then error('boom') end %}\n";
  fg_test_write(path, bad, strlen(bad));
  snprintf(env, sizeof env, "FAGEN_TEMPLATE_DIR=%s", tdir);
  char *out, *err;
  int rc = fagen((const char *[]){"--emit", "-o", odir, NULL}, (const char *[]){env, NULL}, &out,
                 &err);
  cr_assert_eq(rc, 1);
  cr_assert(strstr(err, "templates/fwd_sm80.cu.tpl:2: boom"), "%s", err);
  cr_assert_eq(fg_test_count_files(odir, NULL), 0, "partial output left behind");
  free(out), free(err);
  fg_test_rmrf(tdir), fg_test_rmrf(odir);
  free(tdir), free(odir);
}

Test(cli, list_and_verbose_culls) {
  char *out, *err;
  cr_assert_eq(fagen((const char *[]){"list", NULL}, NULL, &out, &err), 0);
  int lines = 0;
  for (char *p = out; *p; p++) lines += *p == '\n';
  cr_assert_eq(lines, 240);
  cr_assert(strstr(out, "fwd_d128_") && strstr(out, "_causal_bf16_sm90a\n"));
  cr_assert(strstr(out, "\nbwdwg_d96_bq64_bk64_w8_s2_bf16_sm90a\n"), "%s", out);
  cr_assert_null(strstr(out, "bwdwg_d32_"), "%s", out);
  cr_assert_null(strstr(out, "bwdwg_d192_"), "%s", out);
  cr_assert(strstr(out, "\nbwdwg_d256_bq64_bk64_w12_s1_causal_fp16_sm90a\n"), "%s", out);
  cr_assert(strstr(out, "\nbwd_d128_bq64_bk128_w8_s2_bf16_sm80\n"), "%s", out);
  cr_assert(strstr(out, "\nbwddet_d128_"), "%s", out);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"list", "-v", "--only", "fwd_d256*", "--arch", "sm_86",
                                      NULL},
                     NULL, &out, &err),
               0);
  cr_assert(strstr(out, "# culled fwd_d256_bq128_bk128_w8_s1_fp16_sm86: needs"), "%s", out);
  cr_assert(strstr(out, "bytes of shared memory"), "%s", out);
  cr_assert(strstr(out, "# culled fwd_d256_bq64_bk32_w8_s1_fp16_sm86: block_q=64 must be 16 x warps"),
            "%s", out);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"list", "--space", "--only", "*_d64_*_causal_fp16_sm80", NULL},
                     NULL, &out, &err),
               0);
  cr_assert(strstr(out, "fwd_d64_bq128_bk128_w8_s1_causal_fp16_sm80\n"), "%s", out);
  cr_assert_null(strstr(out, "culled"));
  free(out), free(err);
  /* The bwdwg space at d64: one consumer with 64 query rows, two with 128,
     each in one and two stages; causal or not (the glob spans both). */
  cr_assert_eq(fagen((const char *[]){"list", "--space", "--only", "bwdwg_d64_*_fp16_sm90a", NULL},
                     NULL, &out, &err),
               0, "%s", err);
  const char *space[] = {"bwdwg_d64_bq64_bk64_w8_s1_fp16_sm90a\n",
                         "bwdwg_d64_bq64_bk64_w8_s2_fp16_sm90a\n",
                         "bwdwg_d64_bq128_bk128_w12_s1_causal_fp16_sm90a\n",
                         "bwdwg_d64_bq128_bk128_w12_s2_causal_fp16_sm90a\n"};
  for (size_t i = 0; i < sizeof space / sizeof space[0]; i++)
    cr_assert(strstr(out, space[i]), "%s lacks %s", out, space[i]);
  int n = 0;
  for (char *p = out; *p; p++) n += *p == '\n';
  cr_assert_eq(n, 8, "%s", out);
  free(out), free(err);
  /* -v names why the rest of it is culled */
  cr_assert_eq(fagen((const char *[]){"list", "-v", "--only", "bwdwg_d64_*_fp16_sm90a", NULL},
                     NULL, &out, &err),
               0, "%s", err);
  cr_assert(strstr(out, "# culled bwdwg_d64_bq64_bk128_w12_s1_fp16_sm90a: block_q=64 with 2 "
                        "consumer warpgroups leaves each a dQ share of 32 columns"),
            "%s", out);
  free(out), free(err);
}

Test(cli, show_bwdwg) {
  char *out, *err;
  cr_assert_eq(fagen((const char *[]){"show", "bwdwg_d128_bq64_bk128_w12_s2_causal_bf16_sm90a", NULL},
                     NULL, &out, &err),
               0, "%s", err);
  cr_assert(strstr(out, "// template: templates/bwd_sm90.cu.tpl\n"), "%s", out);
  cr_assert(strstr(out, "\nbwdwg_d128_bq64_bk128_w12_s2_causal_bf16_sm90a_post("), "no post kernel");
  free(out), free(err);
  /* an invalid one says why */
  cr_assert_eq(fagen((const char *[]){"show", "bwdwg_d128_bq64_bk128_w12_s2_bf16_sm80", NULL}, NULL,
                     &out, &err),
               1);
  cr_assert(strstr(err, "runs on sm_90a only"), "%s", err);
  free(out), free(err);
}

Test(cli, show_prints_one_source) {
  char *out, *err;
  cr_assert_eq(fagen((const char *[]){"show", "fwd_d64_bq64_bk64_w4_s1_fp16_sm80", NULL}, NULL,
                     &out, &err),
               0);
  cr_assert(strncmp(out, "// Generated by fagen", 21) == 0);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"show", "fwd_d64", NULL}, NULL, &out, &err), 1);
  free(out), free(err);
}

Test(cli, compile_writes_cubins) {
  char *dir = fg_test_tmpdir(), *cache = fg_test_tmpdir();
  char env[1100];
  snprintf(env, sizeof env, "FAGEN_CACHE_DIR=%s", cache);
  char *out, *err;
  int rc = fagen((const char *[]){"compile", "-o", dir, "fwd_d32_bq64_bk32_w4_s1_fp16_sm90a", NULL},
                 (const char *[]){env, NULL}, &out, &err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert(strstr(out, "fwd_d32_bq64_bk32_w4_s1_fp16_sm90a"), "%s", out);
  cr_assert(strstr(out, "regs"), "%s", out);
  char path[1200];
  snprintf(path, sizeof path, "%s/fwd_d32_bq64_bk32_w4_s1_fp16_sm90a.cubin", dir);
  size_t size = 0;
  char *cubin = fg_test_read(path, &size);
  cr_assert(cubin && size > 1000 && memcmp(cubin, "\177ELF", 4) == 0, "not a CUBIN");
  free(cubin), free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"compile", "--bogus", NULL}, NULL, &out, &err), 2);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"compile", "-o", dir, "fwd_d32", NULL}, NULL, &out, &err), 1);
  free(out), free(err);
  fg_test_rmrf(dir), fg_test_rmrf(cache);
  free(dir), free(cache);
}

static int bench_runtime(const char *const *args, char **out, char **err) {
  return fg_test_run_prog(FAGEN_BENCH_RUNTIME, args, NULL, out, err);
}

/* Regressions: fagen-bench-runtime took '--reps abc' or '--reps 1000' as 7
 * and an unknown option as a variant name; an invalid variant (every compile
 * failing) printed an empty table and exited 0; and --reps above 33 wrote
 * past its 100 disk-hit times (3 per rep).  Its figures are issue 3's. */
Test(cli, bench_runtime_arguments, .timeout = 300) {
  char *out, *err;
  cr_assert_eq(bench_runtime((const char *[]){"--help", NULL}, &out, &err), 0);
  cr_assert(strstr(out, "--reps N") && strstr(out, "Exit status"), "%s", out);
  free(out), free(err);
  const char *bad[][3] = {{"--reps", NULL}, {"--reps", "abc", NULL}, {"--reps", "1000", NULL},
                          {"--reps", "0", NULL}, {"--bogus", NULL}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_eq(bench_runtime(bad[i], &out, &err), 2, "'%s %s'", bad[i][0], bad[i][1] ? bad[i][1] : "");
    cr_assert(strstr(err, "usage:"), "%s", err);
    cr_assert_eq(out[0], 0, "nothing measured: %s", out);
    free(out), free(err);
  }
  cr_assert_eq(bench_runtime((const char *[]){"fwd_d100_bq64_bk32_w4_s1_bf16_sm80", NULL}, &out, &err), 2);
  cr_assert(strstr(err, "head_dim=100 is not compiled"), "%s", err);
  free(out), free(err);
  /* 34 reps: 102 disk hits; without a GPU the rows are the cold compile and
     the disk hit. */
  const char *v = "fwd_d32_bq64_bk32_w4_s1_bf16_sm80";
  cr_assert_eq(bench_runtime((const char *[]){"--reps", "34", v, NULL}, &out, &err), 0, "%s", err);
  cr_assert(strstr(out, "| cold compile, NVRTC time |") && strstr(out, "| 34 |"), "%s", out);
  cr_assert(strstr(out, "disk-cache hit") && strstr(out, "| 102 |"), "%s", out);
  free(out), free(err);
}
