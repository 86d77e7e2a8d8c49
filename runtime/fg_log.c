#include "fg_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fg_log_init(fg_log *log) {
  log->fn = NULL;
  log->user = NULL;
  log->max = FAGEN_LOG_WARN;
  const char *e = getenv("FAGEN_LOG");
  if (e && strcmp(e, "info") == 0) log->max = FAGEN_LOG_INFO;
  if (e && strcmp(e, "debug") == 0) log->max = FAGEN_LOG_DEBUG;
}

void fg_logf(const fg_log *log, fagen_log_level level, const char *fmt, ...) {
  if (!log || level > log->max) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (log->fn) {
    log->fn(log->user, level, msg);
    return;
  }
  static const char *const names[] = {"", "warning", "info", "debug"};
  fprintf(stderr, "fagen %s: %s\n", names[level], msg);
}
