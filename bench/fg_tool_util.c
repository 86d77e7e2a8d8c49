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

struct fg_compile_queue {
  fagen_ctx *ctx;
  const fagen_variant *vs;
  size_t n, next, done;
  unsigned char *finished; /* per variant */
  fg_compiled_fn *on_done;
  void *user;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t th[64];
  int jobs;
};

static void *compile_worker(void *arg) {
  fg_compile_queue *q = arg;
  for (;;) {
    pthread_mutex_lock(&q->mu);
    size_t i = q->next++;
    pthread_mutex_unlock(&q->mu);
    if (i >= q->n) return NULL;
    fagen_status st = fagen_compile(q->ctx, &q->vs[i], NULL);
    pthread_mutex_lock(&q->mu);
    size_t done = ++q->done;
    q->finished[i] = 1;
    if (q->on_done) q->on_done(q->user, i, st, done);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
  }
}

fg_compile_queue *fg_compile_start(fagen_ctx *ctx, const fagen_variant *vs, size_t n, int jobs,
                                   fg_compiled_fn *on_done, void *user) {
  if (jobs <= 0) jobs = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (jobs < 1) jobs = 1;
  if (jobs > 64) jobs = 64;
  fg_compile_queue *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  q->finished = calloc(n ? n : 1, 1);
  if (!q->finished) {
    free(q);
    return NULL;
  }
  q->ctx = ctx;
  q->vs = vs;
  q->n = n;
  q->on_done = on_done;
  q->user = user;
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  for (int t = 0; t < jobs; t++)
    if (pthread_create(&q->th[q->jobs], NULL, compile_worker, q) == 0) q->jobs++;
  if (q->jobs == 0) {
    fg_compile_finish(q, 1);
    return NULL;
  }
  return q;
}

void fg_compile_wait(fg_compile_queue *q, size_t i) {
  pthread_mutex_lock(&q->mu);
  while (i < q->n && !q->finished[i]) pthread_cond_wait(&q->cv, &q->mu);
  pthread_mutex_unlock(&q->mu);
}

size_t fg_compile_done(fg_compile_queue *q) {
  pthread_mutex_lock(&q->mu);
  size_t d = q->done;
  pthread_mutex_unlock(&q->mu);
  return d;
}

int fg_compile_finish(fg_compile_queue *q, int cancel) {
  if (cancel) {
    pthread_mutex_lock(&q->mu);
    q->next = q->n;
    pthread_mutex_unlock(&q->mu);
  }
  for (int t = 0; t < q->jobs; t++) pthread_join(q->th[t], NULL);
  const int jobs = q->jobs;
  pthread_cond_destroy(&q->cv);
  pthread_mutex_destroy(&q->mu);
  free(q->finished);
  free(q);
  return jobs;
}

int fg_compile_all(fagen_ctx *ctx, const fagen_variant *vs, size_t n, int jobs,
                   fg_compiled_fn *on_done, void *user) {
  fg_compile_queue *q = fg_compile_start(ctx, vs, n, jobs, on_done, user);
  if (q) return fg_compile_finish(q, 0);
  /* No thread: compile here. */
  for (size_t i = 0; i < n; i++) {
    fagen_status st = fagen_compile(ctx, &vs[i], NULL);
    if (on_done) on_done(user, i, st, i + 1);
  }
  return 1;
}
