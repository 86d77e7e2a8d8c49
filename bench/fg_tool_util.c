#define _POSIX_C_SOURCE 200809L
#include "fg_tool_util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fg_parse_int_list(const char *s, int *out, int cap) {
  int n = 0;
  while (*s && n < cap) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v <= 0 || (*end && *end != ',')) return -1;
    out[n++] = (int)v;
    s = *end == ',' ? end + 1 : end;
  }
  return n;
}

int fg_variant_name_cmp(const fagen_variant *a, const fagen_variant *b) {
  char x[FAGEN_VARIANT_NAME_MAX], y[FAGEN_VARIANT_NAME_MAX];
  fagen_variant_name(a, x, sizeof x);
  fagen_variant_name(b, y, sizeof y);
  return strcmp(x, y);
}

typedef struct compile_job {
  fagen_ctx *ctx;
  const fagen_variant *vs;
  size_t n, next, done;
  fg_compiled_fn *on_done;
  void *user;
  pthread_mutex_t mu;
} compile_job;

static void *compile_worker(void *arg) {
  compile_job *j = arg;
  for (;;) {
    pthread_mutex_lock(&j->mu);
    size_t i = j->next++;
    pthread_mutex_unlock(&j->mu);
    if (i >= j->n) return NULL;
    fagen_status st = fagen_compile(j->ctx, &j->vs[i], NULL);
    pthread_mutex_lock(&j->mu);
    size_t done = ++j->done;
    if (j->on_done) j->on_done(j->user, i, st, done);
    pthread_mutex_unlock(&j->mu);
  }
}

int fg_compile_all(fagen_ctx *ctx, const fagen_variant *vs, size_t n, int jobs,
                   fg_compiled_fn *on_done, void *user) {
  if (jobs <= 0) jobs = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (jobs < 1) jobs = 1;
  if (jobs > 64) jobs = 64;
  compile_job j = {ctx, vs, n, 0, 0, on_done, user, PTHREAD_MUTEX_INITIALIZER};
  pthread_t th[64];
  for (int t = 0; t < jobs; t++) pthread_create(&th[t], NULL, compile_worker, &j);
  for (int t = 0; t < jobs; t++) pthread_join(th[t], NULL);
  return jobs;
}
