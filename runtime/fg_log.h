/* fg_log: where log lines go — a caller's callback, else stderr filtered by
 * FAGEN_LOG (warnings always). */
#ifndef FG_LOG_H
#define FG_LOG_H

#include "fagen.h"
#include "fg_base.h"

typedef struct fg_log {
  fagen_log_fn fn; /* NULL: stderr */
  void *user;
  fagen_log_level max;
} fg_log;

/* Default routing: stderr, level from FAGEN_LOG ("info", "debug"; else warnings). */
void fg_log_init(fg_log *log);
void fg_logf(const fg_log *log, fagen_log_level level, const char *fmt, ...) FG_PRINTF(3, 4);

#endif
