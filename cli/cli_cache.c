#include "cli_cache.h"

#include <fnmatch.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "fagen.h"

#define MAX_TARGETS 16

static int cache_info(fagen_ctx *ctx) {
  fagen_cache_status s;
  if (fagen_cache_info(ctx, &s) != FAGEN_OK) {
    cli_error("fagen", "%s", fagen_errmsg(ctx));
    return CLI_FAIL;
  }
  printf("folder:    %s\n", s.dir[0] ? s.dir : "(none: no HOME, XDG_CACHE_HOME or FAGEN_CACHE_DIR)");
  printf("state:     %s\n", !s.enabled ? "disabled (FAGEN_CACHE_DISABLE=1)" : "enabled");
  printf("kernels:   %zu files, %.1f MiB\n", s.files, (double)s.total_bytes / (1 << 20));
  printf("size cap:  %.1f MiB (FAGEN_CACHE_MAX_BYTES)\n", (double)s.max_bytes / (1 << 20));
  return CLI_OK;
}

static int cache_ls(fagen_ctx *ctx) {
  fagen_cache_entry *e = NULL;
  size_t n = 0;
  if (fagen_cache_list(ctx, &e, &n) != FAGEN_OK) {
    cli_error("fagen", "%s", fagen_errmsg(ctx));
    return CLI_FAIL;
  }
  time_t now = time(NULL);
  printf("%-48s %-7s %9s %5s %6s %9s %10s\n", "variant", "target", "bytes", "regs", "spill",
         "compile_s", "last_used");
  for (size_t i = 0; i < n; i++) {
    double age = (double)now - e[i].last_used;
    if (age < 0) age = 0; /* modification times are finer than time() */
    char when[32];
    if (age < 120)
      snprintf(when, sizeof when, "%.0fs ago", age);
    else if (age < 7200)
      snprintf(when, sizeof when, "%.0fm ago", age / 60);
    else
      snprintf(when, sizeof when, "%.0fh ago", age / 3600);
    if (e[i].valid)
      printf("%-48s %-7s %9lld %5d %6d %9.3f %10s\n", e[i].name, e[i].target, e[i].bytes,
             e[i].registers, e[i].spill_store_bytes, e[i].compile_seconds, when);
    else
      printf("%-48s %-7s %9lld %5s %6s %9s %10s  DAMAGED (%s; never loaded)\n", e[i].name, "?",
             e[i].bytes, "-", "-", "-", when, e[i].file);
  }
  if (n == 0) printf("(empty)\n");
  fagen_free(e);
  return CLI_OK;
}

static int cache_clear(fagen_ctx *ctx) {
  size_t removed = 0;
  if (fagen_cache_clear(ctx, &removed) != FAGEN_OK) {
    cli_error("fagen", "%s", fagen_errmsg(ctx));
    return CLI_FAIL;
  }
  printf("removed %zu kernel files\n", removed);
  return CLI_OK;
}

typedef struct warm_job {
  fagen_ctx *ctx;
  const fagen_variant *vs;
  size_t n;
  atomic_size_t next;
  atomic_size_t done;
  atomic_size_t hits;
  atomic_int failed;
  pthread_mutex_t print_mu;
  int tty;
  double t0;
} warm_job;

static void *warm_worker(void *arg) {
  warm_job *j = arg;
  for (;;) {
    size_t i = atomic_fetch_add(&j->next, 1);
    if (i >= j->n || atomic_load(&j->failed)) break;
    fagen_kernel_info info;
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&j->vs[i], name, sizeof name);
    fagen_status st = fagen_compile(j->ctx, &j->vs[i], &info);
    size_t done = atomic_fetch_add(&j->done, 1) + 1;
    pthread_mutex_lock(&j->print_mu);
    if (st != FAGEN_OK) {
      if (j->tty) fputc('\n', stderr);
      cli_error("fagen", "%s: %s", name, fagen_errmsg(j->ctx));
      const char *log = fagen_compile_log(j->ctx);
      if (st == FAGEN_E_COMPILE && log[0]) fprintf(stderr, "NVRTC log:\n%s\n", log);
      atomic_store(&j->failed, 1);
    } else {
      if (info.from_disk_cache) atomic_fetch_add(&j->hits, 1);
      double el = cli_now() - j->t0;
      double eta = el / (double)done * (double)(j->n - done);
      if (j->tty)
        fprintf(stderr, "\r[%3zu/%zu] %-48s %s  %4.0fs elapsed, ~%3.0fs left ", done, j->n, name,
                info.from_disk_cache ? "cached  " : "compiled", el, eta);
      else
        fprintf(stderr, "[%zu/%zu] %s %s (%d registers, %d bytes spilled)\n", done, j->n,
                info.from_disk_cache ? "cached" : "compiled", name, info.registers,
                info.spill_store_bytes);
    }
    pthread_mutex_unlock(&j->print_mu);
  }
  return NULL;
}

static int cache_warm(fagen_ctx *ctx, int argc, char **argv) {
  const char *arch = "sm_80,sm_90a", *only = NULL;
  long jobs = sysconf(_SC_NPROCESSORS_ONLN);
  char **names = calloc((size_t)argc + 1, sizeof *names);
  int n_names = 0;
  for (int i = 3; i < argc; i++) {
    const char *val;
    int r;
    if ((r = cli_opt_value("fagen", argc, argv, &i, "--arch", NULL, &val)) != 0) {
      if (r < 0) goto usage;
      arch = val;
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--only", NULL, &val)) != 0) {
      if (r < 0) goto usage;
      only = val;
    } else if ((r = cli_opt_value("fagen", argc, argv, &i, "--jobs", "-j", &val)) != 0) {
      if (r < 0) goto usage;
      char *end;
      jobs = strtol(val, &end, 10);
      if (*end || jobs < 1 || jobs > 256) {
        cli_error("fagen", "--jobs takes a number from 1 to 256");
        goto usage;
      }
    } else if (argv[i][0] == '-') {
      cli_error("fagen", "unknown option '%s' (see fagen --help)", argv[i]);
      goto usage;
    } else {
      names[n_names++] = argv[i];
    }
  }
  fagen_target targets[MAX_TARGETS];
  int nt = cli_parse_targets("fagen", arch, targets, MAX_TARGETS);
  if (nt < 0) goto usage;
  size_t count = 0;
  fagen_variant *vs;
  if (n_names) {
    vs = calloc((size_t)n_names, sizeof *vs);
    for (int i = 0; i < n_names; i++)
      if (fagen_variant_parse(names[i], &vs[i]) != FAGEN_OK) {
        cli_error("fagen", "%s", fagen_last_error());
        free(vs);
        free(names);
        return CLI_FAIL;
      }
    count = (size_t)n_names;
  } else {
    fagen_default_variants(targets, (size_t)nt, NULL, 0, &count);
    vs = calloc(count, sizeof *vs);
    fagen_default_variants(targets, (size_t)nt, vs, count, &count);
  }
  free(names);
  size_t kept = 0;
  for (size_t i = 0; i < count; i++) {
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(&vs[i], name, sizeof name);
    if (!only || fnmatch(only, name, 0) == 0) vs[kept++] = vs[i];
  }
  if (!kept) {
    cli_error("fagen", "no variant matches --only %s", only ? only : "");
    free(vs);
    return CLI_FAIL;
  }
  warm_job j;
  memset(&j, 0, sizeof j);
  j.ctx = ctx;
  j.vs = vs;
  j.n = kept;
  j.tty = cli_stderr_is_tty();
  j.t0 = cli_now();
  pthread_mutex_init(&j.print_mu, NULL);
  if ((size_t)jobs > kept) jobs = (long)kept;
  pthread_t th[256];
  for (long t = 0; t < jobs; t++) pthread_create(&th[t], NULL, warm_worker, &j);
  for (long t = 0; t < jobs; t++) pthread_join(th[t], NULL);
  if (j.tty) fputc('\n', stderr);
  int failed = atomic_load(&j.failed);
  size_t hits = atomic_load(&j.hits), done = atomic_load(&j.done);
  if (!failed)
    fprintf(stderr, "fagen: %zu kernels ready (%zu compiled, %zu from the cache) in %.1f s with %ld threads\n",
            done, done - hits, hits, cli_now() - j.t0, jobs);
  pthread_mutex_destroy(&j.print_mu);
  free(vs);
  return failed ? CLI_FAIL : CLI_OK;
usage:
  free(names);
  return CLI_USAGE;
}

int cli_cache(int argc, char **argv) {
  if (argc < 3) {
    cli_error("fagen", "usage: fagen cache ls|info|clear|warm [options]");
    return CLI_USAGE;
  }
  const char *sub = argv[2];
  int known = !strcmp(sub, "ls") || !strcmp(sub, "info") || !strcmp(sub, "clear") ||
              !strcmp(sub, "warm");
  if (!known) {
    cli_error("fagen", "unknown cache command '%s' (ls, info, clear, warm)", sub);
    return CLI_USAGE;
  }
  if (strcmp(sub, "warm") != 0 && argc > 3) {
    cli_error("fagen", "fagen cache %s takes no arguments", sub);
    return CLI_USAGE;
  }
  fagen_ctx *ctx;
  if (fagen_ctx_create(&ctx) != FAGEN_OK) {
    cli_error("fagen", "%s", fagen_last_error());
    return CLI_FAIL;
  }
  int rc;
  if (!strcmp(sub, "ls"))
    rc = cache_ls(ctx);
  else if (!strcmp(sub, "info"))
    rc = cache_info(ctx);
  else if (!strcmp(sub, "clear"))
    rc = cache_clear(ctx);
  else
    rc = cache_warm(ctx, argc, argv);
  fagen_ctx_destroy(ctx);
  return rc;
}
