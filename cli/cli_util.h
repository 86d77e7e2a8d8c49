/* cli_util: helpers shared by the fagen command-line tools. */
#ifndef CLI_UTIL_H
#define CLI_UTIL_H

#include <stddef.h>

#include "fagen.h"

/* Exit codes of every fagen tool. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Prints "PROG: error: ..." to stderr. */
void cli_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Matches "--name" or "--name=value" at argv[*i]; for the first form takes the
 * value from the next argument.  Returns 1 and sets *value on a match, 0 if
 * argv[*i] is another option, -1 if the value is missing (message printed). */
int cli_opt_value(const char *prog, int argc, char **argv, int *i, const char *name,
                  const char *short_name, const char **value);

/* Parses "sm_80,sm_90a" into targets (at most cap).  Returns the count, or -1
 * after printing an error. */
int cli_parse_targets(const char *prog, const char *list, fagen_target *targets, int cap);

/* mkdir -p.  Returns 0, or -1 with errno set. */
int cli_mkdirs(const char *path);

/* Writes data to dir/name through a temporary file in dir, fsync and rename,
 * so that readers never see a partial file.  Returns 0, or -1 after writing
 * the reason to err. */
int cli_write_atomic(const char *dir, const char *name, const void *data, size_t len,
                     char *err, size_t errsize);

/* 1 if stderr is a terminal (progress lines are drawn only there). */
int cli_stderr_is_tty(void);

/* Monotonic seconds. */
double cli_now(void);

#endif
