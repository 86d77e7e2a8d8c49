/* fg_lua: the one owner of a lua_State.  Renders a template into CUDA source
 * under a sandbox, the way the standalone `lua` interpreter embeds Lua: every
 * chunk runs under lua_pcall with a traceback handler, chunk names start with
 * '@' so errors read "templates/x.tpl:12: ...", text mode only (no bytecode).
 *
 * What a template sees: v (the variant's parameters), include(name), emit(s),
 * the pure parts of the standard library (string without dump, table, math,
 * utf8, assert, error, ipairs, pairs, select, tonumber, tostring, type,
 * rawequal, rawlen, setmetatable, getmetatable is absent), and nothing of io,
 * os, require, load, dofile, print or the debug library.  pairs() visits keys
 * in sorted order so that output never depends on hash order.  A template is
 * stopped after FG_TPL_MAX_INSTRUCTIONS instructions or FG_TPL_MAX_MEMORY bytes.
 *
 * The output carries `#line N "templates/x.tpl"` marks (or up to 8 blank
 * lines where that is shorter) so compiler messages point into templates. */
#ifndef FG_LUA_H
#define FG_LUA_H

#include <stddef.h>

#include "fg_base.h"

#define FG_TPL_MAX_INSTRUCTIONS 200000000LL
#define FG_TPL_MAX_MEMORY ((size_t)256 << 20)
#define FG_TPL_MAX_INCLUDE_DEPTH 16

/* Reads the text of the template called name (e.g. "common.cuh.tpl"). */
typedef fagen_status (*fg_tpl_loader)(void *user, const char *name, fg_buf *text, fg_err *err);

typedef enum fg_param_type { FG_PARAM_INT, FG_PARAM_STR, FG_PARAM_BOOL } fg_param_type;

typedef struct fg_tpl_param {
  const char *key;
  fg_param_type type;
  long long i; /* INT and BOOL */
  const char *s;
} fg_tpl_param;

/* Renders template `name` with params bound in the table v, appending to out.
 * Returns FAGEN_OK, FAGEN_E_TEMPLATE (message starts with the template's
 * file:line), the loader's status (e.g. FAGEN_E_IO) or FAGEN_E_NO_MEMORY. */
fagen_status fg_tpl_render(const char *name, const fg_tpl_param *params, size_t n_params,
                           fg_tpl_loader load, void *load_user, fg_buf *out, fg_err *err);

/* 1 if name is a plain template file name: [A-Za-z0-9_.-], no leading dot. */
int fg_tpl_name_ok(const char *name);

#endif
