/* The on-disk kernel cache: root resolution, the file format and its checks,
 * damaged files, unusable folders, concurrent processes, eviction. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fagen.h"
#include "fg_cache.h"
#include "fg_ctx.h"
#include "fg_jit.h"
#include "fg_sha256.h"
#include "fg_test.h"

static char *dir;

static void setup(void) {
  dir = fg_test_tmpdir();
  setenv("FAGEN_CACHE_DIR", dir, 1);
  unsetenv("FAGEN_CACHE_DISABLE");
  unsetenv("FAGEN_CACHE_MAX_BYTES");
}

static void teardown(void) {
  fg_test_rmrf(dir);
  free(dir);
}

/* Counts log lines that contain a word. */
typedef struct log_count {
  int compiled, hits, damaged, warnings, evicted;
} log_count;

static void count_log(void *user, fagen_log_level level, const char *msg) {
  log_count *c = user;
  if (strncmp(msg, "compiled ", 9) == 0) c->compiled++; /* not "keeping compiled kernels" */
  if (strncmp(msg, "cache hit", 9) == 0) c->hits++;
  if (strstr(msg, "damaged")) c->damaged++;
  if (strstr(msg, "evicted")) c->evicted++;
  if (level == FAGEN_LOG_WARN) c->warnings++;
}

static fagen_ctx *ctx_counting(log_count *c) {
  memset(c, 0, sizeof *c);
  fagen_ctx *ctx;
  cr_assert_eq(fagen_ctx_create(&ctx), FAGEN_OK);
  fagen_set_log_callback(ctx, count_log, c, FAGEN_LOG_DEBUG);
  return ctx;
}

static fagen_variant variant(const char *name) {
  fagen_variant v;
  cr_assert_eq(fagen_variant_parse(name, &v), FAGEN_OK);
  return v;
}

static const char *V1 = "fwd_d64_bq64_bk64_w4_s1_bf16_sm80";

/* The single .fgk file of the cache folder. */
static void kernel_file(char *path, size_t size) {
  char kdir[1200];
  snprintf(kdir, sizeof kdir, "%s/kernels", dir);
  cr_assert_eq(fg_test_count_files(kdir, ".fgk"), 1);
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "ls %s/*.fgk", kdir);
  FILE *p = popen(cmd, "r");
  cr_assert(fgets(path, (int)size, p));
  pclose(p);
  path[strcspn(path, "\n")] = '\0';
}

Test(cache, root_resolution) {
  fg_log log;
  fg_log_init(&log);
  fg_cache c;
  setenv("FAGEN_CACHE_DIR", "/tmp/explicit", 1);
  setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  setenv("HOME", "/tmp/home", 1);
  fg_cache_init(&c, &log);
  cr_assert_str_eq(c.dir, "/tmp/explicit/kernels");
  fg_cache_destroy(&c);
  unsetenv("FAGEN_CACHE_DIR");
  fg_cache_init(&c, &log);
  cr_assert_str_eq(c.dir, "/tmp/xdg/fagen/kernels");
  fg_cache_destroy(&c);
  setenv("XDG_CACHE_HOME", "relative/xdg", 1); /* only absolute values count */
  fg_cache_init(&c, &log);
  cr_assert_str_eq(c.dir, "/tmp/home/.cache/fagen/kernels");
  fg_cache_destroy(&c);
  setenv("FAGEN_CACHE_MAX_BYTES", "64M", 1);
  setenv("FAGEN_CACHE_DISABLE", "1", 1);
  fg_cache_init(&c, &log);
  cr_assert_eq(c.max_bytes, 64ull << 20);
  cr_assert(c.disabled);
  cr_assert_not(fg_cache_usable(&c));
  fg_cache_destroy(&c);
}

static fg_cache_blob sample_blob(void) {
  fg_cache_blob b;
  memset(&b, 0, sizeof b);
  strcpy(b.meta.name, "fwd_d64_bq64_bk64_w4_s1_bf16_sm80");
  strcpy(b.meta.target, "sm_80");
  strcpy(b.meta.nvrtc_version, "13.0");
  b.meta.registers = 64;
  b.meta.spill_stores = 4;
  b.meta.threads = 128;
  b.meta.dynamic_smem = 41472;
  b.meta.compile_seconds = 0.25;
  static unsigned char cubin[300] = "\177ELF";
  for (int i = 4; i < 300; i++) cubin[i] = (unsigned char)(i * 7);
  b.cubin = cubin;
  b.cubin_size = sizeof cubin;
  b.log = "ptxas info: Used 64 registers";
  return b;
}

Test(cache, format_round_trip) {
  unsigned char key[32];
  fg_sha256_buf("key", 3, key);
  fg_cache_blob b = sample_blob(), back;
  fg_buf f;
  fg_buf_init(&f);
  cr_assert(fg_cache_encode(key, &b, &f));
  char why[128];
  cr_assert(fg_cache_decode((unsigned char *)f.data, f.len, key, &back, why, sizeof why), "%s", why);
  cr_assert_str_eq(back.meta.name, b.meta.name);
  cr_assert_str_eq(back.meta.nvrtc_version, "13.0");
  cr_assert_eq(back.meta.registers, 64);
  cr_assert_eq(back.meta.spill_stores, 4);
  cr_assert_eq(back.meta.dynamic_smem, 41472);
  cr_assert_float_eq(back.meta.compile_seconds, 0.25, 1e-12);
  cr_assert_eq(back.cubin_size, b.cubin_size);
  cr_assert_eq(memcmp(back.cubin, b.cubin, b.cubin_size), 0);
  cr_assert_str_eq(back.log, b.log);
  fg_cache_blob_free(&back);
  fg_buf_free(&f);
}

Test(cache, every_damage_is_detected) {
  unsigned char key[32], other[32];
  fg_sha256_buf("key", 3, key);
  fg_sha256_buf("other", 5, other);
  fg_cache_blob b = sample_blob(), back;
  fg_buf f;
  fg_buf_init(&f);
  fg_cache_encode(key, &b, &f);
  unsigned char *data = (unsigned char *)f.data;
  char why[128];
  cr_assert_not(fg_cache_decode(data, 0, key, &back, why, sizeof why));
  cr_assert_str_eq(why, "empty file");
  for (size_t n = 1; n < f.len; n += 7)
    cr_assert_not(fg_cache_decode(data, n, key, &back, why, sizeof why), "truncated to %zu", n);
  cr_assert_not(fg_cache_decode(data, f.len, other, &back, why, sizeof why));
  cr_assert_str_eq(why, "key mismatch");
  /* Flip each bit of a sample of bytes, header and payload alike. */
  for (size_t i = 0; i < f.len; i += 3)
    for (int bit = 0; bit < 8; bit += 3) {
      data[i] ^= (unsigned char)(1 << bit);
      int ok = fg_cache_decode(data, f.len, key, &back, why, sizeof why);
      data[i] ^= (unsigned char)(1 << bit);
      if (i >= 88 && i < 128) { /* reserved header bytes carry no meaning */
        if (ok) fg_cache_blob_free(&back);
        continue;
      }
      cr_assert_not(ok, "a flipped bit %d of byte %zu went unnoticed", bit, i);
    }
  fg_buf_free(&f);
}

/* Damage the cached file of V1 with `damage`, then check that a new process
 * state recompiles (never loads it) and leaves a good file behind. */
static void damaged_file_is_replaced(void (*damage)(const char *path)) {
  log_count c;
  fagen_ctx *ctx = ctx_counting(&c);
  fagen_variant v = variant(V1);
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(c.compiled, 1);
  fagen_ctx_destroy(ctx);
  char path[1400];
  kernel_file(path, sizeof path);
  size_t good_size;
  char *good = fg_test_read(path, &good_size);
  fg_cache_blob good_blob, now_blob;
  char why[128];
  cr_assert(fg_cache_decode((unsigned char *)good, good_size, NULL, &good_blob, why, sizeof why));
  damage(path);

  ctx = ctx_counting(&c);
  fagen_kernel_info info;
  cr_assert_eq(fagen_compile(ctx, &v, &info), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(info.from_disk_cache, 0, "a damaged file was loaded");
  cr_assert_eq(c.compiled, 1, "it must be recompiled");
  cr_assert_geq(c.damaged, 1, "the damage must be reported");
  /* Replaced by a good file with the same CUBIN (the stored ptxas log may
     differ: it reports its own compile time). */
  size_t size;
  char *now = fg_test_read(path, &size);
  cr_assert(fg_cache_decode((unsigned char *)now, size, NULL, &now_blob, why, sizeof why),
            "the damaged file was not replaced: %s", why);
  cr_assert_eq(now_blob.cubin_size, good_blob.cubin_size);
  cr_assert_eq(memcmp(now_blob.cubin, good_blob.cubin, good_blob.cubin_size), 0);
  fg_cache_blob_free(&now_blob);
  fg_cache_blob_free(&good_blob);
  free(now);
  /* And now it is a good hit again. */
  cr_assert_eq(fagen_compile(ctx, &v, &info), FAGEN_OK);
  cr_assert_eq(info.from_disk_cache, 1);
  fagen_ctx_destroy(ctx);
  free(good);
}

static void truncate_half(const char *path) {
  size_t n;
  char *d = fg_test_read(path, &n);
  fg_test_write(path, d, n / 2);
  free(d);
}
static void zero_length(const char *path) { fg_test_write(path, "", 0); }
static void flip_a_bit(const char *path) {
  size_t n;
  char *d = fg_test_read(path, &n);
  d[n - 100] ^= 0x10; /* inside the CUBIN */
  fg_test_write(path, d, n);
  free(d);
}

Test(cache, truncated_file_is_replaced, .init = setup, .fini = teardown) {
  damaged_file_is_replaced(truncate_half);
}
Test(cache, zero_length_file_is_replaced, .init = setup, .fini = teardown) {
  damaged_file_is_replaced(zero_length);
}
Test(cache, bit_flipped_file_is_replaced, .init = setup, .fini = teardown) {
  damaged_file_is_replaced(flip_a_bit);
}

Test(cache, second_context_hits_the_disk, .init = setup, .fini = teardown) {
  log_count c;
  fagen_ctx *ctx = ctx_counting(&c);
  fagen_variant v = variant(V1);
  fagen_kernel_info a, b;
  cr_assert_eq(fagen_compile(ctx, &v, &a), FAGEN_OK);
  fagen_ctx_destroy(ctx);
  ctx = ctx_counting(&c);
  cr_assert_eq(fagen_compile(ctx, &v, &b), FAGEN_OK);
  cr_assert_eq(c.compiled, 0);
  cr_assert_eq(c.hits, 1);
  cr_assert(b.from_disk_cache);
  cr_assert_eq(a.registers, b.registers);
  cr_assert_eq(a.cubin_bytes, b.cubin_bytes);
  char kdir[1200];
  snprintf(kdir, sizeof kdir, "%s/kernels", dir);
  cr_assert_eq(fg_test_count_files(kdir, ".lock"), 0, "lock files left behind");
  cr_assert_eq(fg_test_count_files(kdir, ".tmp"), 0, "temporary files left behind");
  fagen_ctx_destroy(ctx);
}

/* A folder that cannot be created (its parent is a regular file, which stops
 * root too) degrades to memory only, with exactly one warning. */
Test(cache, unusable_folder_degrades_to_memory, .init = setup, .fini = teardown) {
  char file[1200], sub[1300];
  snprintf(file, sizeof file, "%s/plainfile", dir);
  fg_test_write(file, "x", 1);
  snprintf(sub, sizeof sub, "%s/cache", file);
  setenv("FAGEN_CACHE_DIR", sub, 1);
  log_count c;
  fagen_ctx *ctx = ctx_counting(&c);
  fagen_variant v1 = variant(V1), v2 = variant("fwd_d32_bq64_bk64_w4_s1_fp16_sm80");
  cr_assert_eq(fagen_compile(ctx, &v1, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(fagen_compile(ctx, &v2, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(fagen_compile(ctx, &v1, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(c.warnings, 1, "%d warnings", c.warnings);
  cr_assert_eq(c.compiled, 2, "the second request for v1 must come from memory");
  fagen_cache_status s;
  cr_assert_eq(fagen_cache_info(ctx, &s), FAGEN_E_IO); /* the folder cannot even be listed */
  fagen_ctx_destroy(ctx);
}

/* A full disk: writes beyond a few bytes fail (RLIMIT_FSIZE, SIGXFSZ ignored). */
Test(cache, full_disk_degrades_to_memory, .init = setup, .fini = teardown) {
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit rl = {4096, 4096};
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
  log_count c;
  fagen_ctx *ctx = ctx_counting(&c);
  fagen_variant v = variant(V1);
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_OK, "%s", fagen_errmsg(ctx));
  cr_assert_eq(c.warnings, 1);
  cr_assert_eq(c.compiled, 1);
  char kdir[1200];
  snprintf(kdir, sizeof kdir, "%s/kernels", dir);
  cr_assert_eq(fg_test_count_files(kdir, ".fgk"), 0, "a partial file was left");
  cr_assert_eq(fg_test_count_files(kdir, ".tmp"), 0, "a temporary file was left");
  fagen_ctx_destroy(ctx);
}

Test(cache, disabled_cache_writes_nothing, .init = setup, .fini = teardown) {
  setenv("FAGEN_CACHE_DISABLE", "1", 1);
  log_count c;
  fagen_ctx *ctx = ctx_counting(&c);
  fagen_variant v = variant(V1);
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_OK);
  cr_assert_eq(fagen_compile(ctx, &v, NULL), FAGEN_OK);
  cr_assert_eq(c.compiled, 1);
  cr_assert_eq(c.warnings, 0, "disabling is not a failure");
  cr_assert_eq(fg_test_count_files(dir, NULL), 0);
  fagen_ctx_destroy(ctx);
}

/* Eight processes ask for the same uncached variant at once: exactly one
 * compiles, all get the same bytes, nothing temporary is left. */
Test(cache, eight_processes_compile_once, .init = setup, .fini = teardown, .timeout = 300) {
  enum { N = 8 };
  int go[2], res[2];
  cr_assert_eq(pipe(go), 0);
  cr_assert_eq(pipe(res), 0);
  pid_t pids[N];
  for (int i = 0; i < N; i++) {
    pids[i] = fork();
    if (pids[i] == 0) {
      close(go[1]);
      char b;
      if (read(go[0], &b, 1) < 0) _exit(3); /* wait for the start (EOF) */
      log_count c;
      memset(&c, 0, sizeof c);
      fagen_ctx *ctx;
      if (fagen_ctx_create(&ctx) != FAGEN_OK) _exit(4);
      fagen_set_log_callback(ctx, count_log, &c, FAGEN_LOG_DEBUG);
      fagen_variant v;
      fagen_variant_parse(V1, &v);
      fg_cache_blob blob;
      fg_err err;
      if (fg_jit_cubin(ctx, &v, &blob, NULL, &err) != FAGEN_OK) _exit(5);
      unsigned char d[32];
      fg_sha256_buf(blob.cubin, blob.cubin_size, d);
      char line[80];
      fg_hex(d, 32, line);
      line[64] = ' ';
      line[65] = (char)('0' + c.compiled);
      line[66] = '\n';
      if (write(res[1], line, 67) != 67) _exit(6);
      fg_cache_blob_free(&blob);
      fagen_ctx_destroy(ctx);
      _exit(0);
    }
  }
  close(go[0]);
  close(res[1]);
  close(go[1]); /* start them all */
  char all[N * 67 + 1];
  size_t got = 0;
  ssize_t r;
  while (got < sizeof all - 1 && (r = read(res[0], all + got, sizeof all - 1 - got)) > 0)
    got += (size_t)r;
  all[got] = '\0';
  for (int i = 0; i < N; i++) {
    int st;
    waitpid(pids[i], &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed (%d)", i, WEXITSTATUS(st));
  }
  cr_assert_eq(got, (size_t)N * 67, "%s", all);
  int compiles = 0;
  for (int i = 0; i < N; i++) {
    cr_assert_eq(memcmp(all + i * 67, all, 64), 0, "process %d got other bytes", i);
    compiles += all[i * 67 + 65] - '0';
  }
  cr_assert_eq(compiles, 1, "%d NVRTC compiles instead of 1:\n%s", compiles, all);
  char kdir[1200];
  snprintf(kdir, sizeof kdir, "%s/kernels", dir);
  cr_assert_eq(fg_test_count_files(kdir, NULL), 1, "only the kernel file may remain");
}

Test(cache, least_recently_used_files_are_evicted, .init = setup, .fini = teardown) {
  log_count c;
  fagen_ctx *ctx = ctx_counting(&c);
  fagen_variant a = variant("fwd_d32_bq64_bk64_w4_s1_fp16_sm80");
  fagen_variant b = variant("fwd_d32_bq64_bk64_w4_s1_bf16_sm80");
  fagen_variant d = variant("fwd_d32_bq64_bk64_w4_s1_causal_fp16_sm80");
  fagen_kernel_info info;
  cr_assert_eq(fagen_compile(ctx, &a, &info), FAGEN_OK);
  fagen_ctx_destroy(ctx);
  /* A cap of two and a half files: the third store must evict one. */
  char cap[32];
  snprintf(cap, sizeof cap, "%zu", info.cubin_bytes * 5 / 2 + 2000);
  setenv("FAGEN_CACHE_MAX_BYTES", cap, 1);
  ctx = ctx_counting(&c);
  cr_assert_eq(fagen_compile(ctx, &b, NULL), FAGEN_OK);
  sleep(1); /* modification times have second resolution on some file systems */
  cr_assert_eq(fagen_compile(ctx, &a, &info), FAGEN_OK); /* a hit refreshes a: b is now oldest */
  cr_assert(info.from_disk_cache);
  sleep(1);
  cr_assert_eq(fagen_compile(ctx, &d, NULL), FAGEN_OK);
  cr_assert_eq(c.evicted, 1);
  fagen_ctx_destroy(ctx);
  ctx = ctx_counting(&c);
  cr_assert_eq(fagen_compile(ctx, &a, &info), FAGEN_OK);
  cr_assert(info.from_disk_cache, "the recently used file was evicted");
  cr_assert_eq(fagen_compile(ctx, &b, &info), FAGEN_OK);
  cr_assert_not(info.from_disk_cache, "the least recently used file was kept");
  fagen_ctx_destroy(ctx);
}

static int fagen(const char *const *args, char **out, char **err) {
  return fg_test_run_prog(FAGEN_CLI, args, NULL, out, err);
}

Test(cache, cli_ls_info_clear_warm, .init = setup, .fini = teardown, .timeout = 300) {
  char *out, *err;
  cr_assert_eq(fagen((const char *[]){"cache", "warm", "-j", "2", "--only", "fwd_d32_*", "--arch",
                                      "sm_80", NULL},
                     &out, &err),
               0, "%s", err);
  cr_assert(strstr(err, "4 kernels ready (4 compiled, 0 from the cache)"), "%s", err);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"cache", "warm", "--only", "fwd_d32_*", "--arch", "sm_80", NULL},
                     &out, &err),
               0);
  cr_assert(strstr(err, "(0 compiled, 4 from the cache)"), "%s", err);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"cache", "ls", NULL}, &out, &err), 0);
  cr_assert(strstr(out, "fwd_d32_") && strstr(out, "_causal_bf16_sm80 "), "%s", out);
  cr_assert_null(strstr(out, "-0s"), "%s", out);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"cache", "info", NULL}, &out, &err), 0);
  cr_assert(strstr(out, "4 files"), "%s", out);
  cr_assert(strstr(out, dir), "%s", out);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"cache", "clear", NULL}, &out, &err), 0);
  cr_assert_str_eq(out, "removed 4 kernel files\n");
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"cache", "warm", "--jobs", "0", NULL}, &out, &err), 2);
  free(out), free(err);
  cr_assert_eq(fagen((const char *[]){"cache", "ls", "extra", NULL}, &out, &err), 2);
  free(out), free(err);
}

Test(cache, cli_warm_prints_the_nvrtc_log_of_a_failed_compile, .init = setup, .fini = teardown) {
  char *tdir = fg_test_tmpdir();
  const char *bad = "__device__ int x = missing_symbol_xyz;\n";
  char path[1200];
  snprintf(path, sizeof path, "%s/fwd_sm80.cu.tpl", tdir);
  fg_test_write(path, bad, strlen(bad));
  setenv("FAGEN_TEMPLATE_DIR", tdir, 1);
  char *out, *err;
  cr_assert_eq(fagen((const char *[]){"cache", "warm", "fwd_d32_bq64_bk64_w4_s1_fp16_sm80", NULL},
                     &out, &err),
               1);
  cr_assert(strstr(err, "NVRTC log:"), "%s", err);
  cr_assert(strstr(err, "missing_symbol_xyz"), "%s", err);
  free(out), free(err);
  fg_test_rmrf(tdir);
  free(tdir);
}
