#include "fg_lua.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_tpl.h"

#define FG_MAX_FILES 64
#define FG_HOOK_STEP 10000

typedef struct fg_render {
  fg_buf *out;
  fg_tpl_loader load;
  void *load_user;
  const char *main_name;
  const fg_tpl_param *params;
  size_t n_params;
  char *files[FG_MAX_FILES]; /* display names, "templates/x.tpl" */
  int nfiles;
  /* #line bookkeeping: which template line the next output line comes from
     if nothing intervenes; cur_file -1 forces a mark. */
  int cur_file;
  long expect_line;
  int at_bol;
  int depth;
  size_t mem_used;
  int mem_hit;
  long long hooks;
  fagen_status load_status; /* set when a loader failure caused the error */
  int env_ref;
} fg_render;

int fg_tpl_name_ok(const char *name) {
  if (!name || !*name || name[0] == '.' || strlen(name) > 128) return 0;
  for (const char *p = name; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '_' || *p == '.' || *p == '-'))
      return 0;
  return 1;
}

static fg_render *fg_render_of(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  return ud;
}

/* Allocator with a ceiling: a runaway template fails instead of eating the
 * host's memory. */
static void *fg_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  fg_render *r = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    r->mem_used -= old;
    return NULL;
  }
  if (nsize > old && r->mem_used + (nsize - old) > FG_TPL_MAX_MEMORY) {
    r->mem_hit = 1;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  r->mem_used = r->mem_used - old + nsize;
  return p;
}

static void fg_lua_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  fg_render *r = fg_render_of(L);
  if (++r->hooks > FG_TPL_MAX_INSTRUCTIONS / FG_HOOK_STEP)
    luaL_error(L, "template exceeded its budget of %d million Lua instructions (endless loop?)",
               (int)(FG_TPL_MAX_INSTRUCTIONS / 1000000));
}

/* Brings the output's line mapping in step with (file, line) at the start of
 * an output line. */
static void fg_sync_line(fg_render *r, int file, long line) {
  if (r->cur_file == file && r->expect_line == line) return;
  if (r->cur_file == file && line > r->expect_line && line - r->expect_line <= 8) {
    for (long i = r->expect_line; i < line; i++) fg_buf_putc(r->out, '\n');
  } else {
    fg_buf_printf(r->out, "#line %ld \"%s\"\n", line, r->files[file]);
  }
  r->cur_file = file;
  r->expect_line = line;
}

static void fg_emit_mapped(fg_render *r, int file, long line, const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (r->at_bol) fg_sync_line(r, file, line);
    const char *nl = memchr(s + i, '\n', n - i);
    size_t end = nl ? (size_t)(nl - s) + 1 : n;
    fg_buf_append(r->out, s + i, end - i);
    r->cur_file = file;
    if (nl) {
      line++;
      r->at_bol = 1;
    } else {
      r->at_bol = 0;
    }
    r->expect_line = line;
    i = end;
  }
}

/* Text produced by code (emit, or an expression whose value has newlines):
 * the line mapping is unknown afterwards. */
static void fg_emit_unmapped(fg_render *r, const char *s, size_t n) {
  if (!n) return;
  fg_buf_append(r->out, s, n);
  if (memchr(s, '\n', n)) r->cur_file = -1;
  r->at_bol = s[n - 1] == '\n';
}

static int fg_check_file_id(lua_State *L, fg_render *r, int arg) {
  lua_Integer id = luaL_checkinteger(L, arg);
  if (id < 0 || id >= r->nfiles) luaL_error(L, "internal: bad template file id");
  return (int)id;
}

/* _T(file, line, text): literal template text. */
static int fg_l_text(lua_State *L) {
  fg_render *r = fg_render_of(L);
  int file = fg_check_file_id(L, r, 1);
  long line = (long)luaL_checkinteger(L, 2);
  size_t n;
  const char *s = luaL_checklstring(L, 3, &n);
  fg_emit_mapped(r, file, line, s, n);
  return 0;
}

/* Converts the value at idx to its source text; raises on values that have no
 * sensible spelling in CUDA (nil, tables, non-finite numbers). */
static const char *fg_value_text(lua_State *L, int idx, size_t *n, char *tmp, size_t tmpsize) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: return lua_tolstring(L, idx, n);
    case LUA_TBOOLEAN:
      *n = lua_toboolean(L, idx) ? 4 : 5;
      return lua_toboolean(L, idx) ? "true" : "false";
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        *n = (size_t)snprintf(tmp, tmpsize, "%lld", (long long)lua_tointeger(L, idx));
      } else {
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) luaL_error(L, "expression value %f is not finite", d);
        int k = snprintf(tmp, tmpsize, "%.17g", d);
        if (!strpbrk(tmp, ".eE")) k = snprintf(tmp, tmpsize, "%.17g.0", d);
        *n = (size_t)k;
      }
      return tmp;
    case LUA_TNIL: luaL_error(L, "expression value is nil (undefined name?)"); break;
    default: luaL_error(L, "cannot insert a %s value into the source", luaL_typename(L, idx));
  }
  return NULL;
}

/* _E(file, line, value): the value of an expression tag. */
static int fg_l_expr(lua_State *L) {
  fg_render *r = fg_render_of(L);
  int file = fg_check_file_id(L, r, 1);
  long line = (long)luaL_checkinteger(L, 2);
  if (lua_gettop(L) < 3) lua_pushnil(L);
  char tmp[64];
  size_t n = 0;
  const char *s = fg_value_text(L, 3, &n, tmp, sizeof tmp);
  if (!n) return 0;
  if (memchr(s, '\n', n)) {
    if (r->at_bol) fg_sync_line(r, file, line);
    fg_emit_unmapped(r, s, n);
  } else {
    fg_emit_mapped(r, file, line, s, n);
  }
  return 0;
}

/* emit(value, ...): output from code. */
static int fg_l_emit(lua_State *L) {
  fg_render *r = fg_render_of(L);
  int top = lua_gettop(L);
  for (int i = 1; i <= top; i++) {
    char tmp[64];
    size_t n = 0;
    const char *s = fg_value_text(L, i, &n, tmp, sizeof tmp);
    fg_emit_unmapped(r, s, n);
  }
  return 0;
}

static int fg_file_id(fg_render *r, const char *display) {
  for (int i = 0; i < r->nfiles; i++)
    if (strcmp(r->files[i], display) == 0) return i;
  if (r->nfiles == FG_MAX_FILES) return -1;
  r->files[r->nfiles] = fg_strdup(display);
  if (!r->files[r->nfiles]) return -1;
  return r->nfiles++;
}

/* Loads, translates and runs one template in the sandbox.  Raises a Lua error
 * on failure (C buffers are released first: lua_error does not return). */
static void fg_run_template(lua_State *L, fg_render *r, const char *name) {
  char msg[1024];
  char display[160];
  if (!fg_tpl_name_ok(name))
    luaL_error(L, "'%s' is not a template name (letters, digits, '_', '.', '-')", name);
  if (r->depth >= FG_TPL_MAX_INCLUDE_DEPTH)
    luaL_error(L, "includes nested deeper than %d (include cycle?)", FG_TPL_MAX_INCLUDE_DEPTH);
  snprintf(display, sizeof display, "templates/%s", name);
  int id = fg_file_id(r, display);
  if (id < 0) luaL_error(L, "too many template files (limit %d)", FG_MAX_FILES);

  fg_buf text, lua;
  fg_buf_init(&text);
  fg_buf_init(&lua);
  fg_err err;
  fagen_status st = r->load(r->load_user, name, &text, &err);
  if (st == FAGEN_OK)
    st = fg_tpl_translate(display, text.data ? text.data : "", text.len, id, &lua, &err);
  fg_buf_free(&text);
  if (st != FAGEN_OK) {
    fg_buf_free(&lua);
    if (st != FAGEN_E_TEMPLATE) r->load_status = st;
    fg_strlcpy(msg, err.msg, sizeof msg);
    if (r->depth == 0) { /* no template position to add */
      lua_pushstring(L, msg);
      lua_error(L);
    }
    luaL_error(L, "%s", msg);
  }
  char chunkname[170];
  snprintf(chunkname, sizeof chunkname, "@%s", display);
  int lst = luaL_loadbufferx(L, lua.data ? lua.data : "", lua.len, chunkname, "t");
  fg_buf_free(&lua);
  if (lst != LUA_OK) lua_error(L); /* syntax error: "templates/x.tpl:N: ..." on the stack */
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
  lua_setupvalue(L, -2, 1); /* the chunk's _ENV is the sandbox */
  r->depth++;
  lua_call(L, 0, 0);
  r->depth--;
}

static int fg_l_include(lua_State *L) {
  fg_render *r = fg_render_of(L);
  const char *name = luaL_checkstring(L, 1);
  fg_run_template(L, r, name);
  return 0;
}

/* pairs() in sorted key order: output must not depend on Lua's seeded string
 * hashing. */
static const char fg_sorted_pairs_lua[] =
    "local sort, type, next, error = table.sort, type, next, error\n"
    "local function less(a, b)\n"
    "  local ta, tb = type(a), type(b)\n"
    "  if ta ~= tb then return ta < tb end\n"
    "  if ta == 'number' or ta == 'string' then return a < b end\n"
    "  error('pairs: keys of type ' .. ta .. ' have no deterministic order', 3)\n"
    "end\n"
    "return function(t)\n"
    "  local keys = {}\n"
    "  for k in next, t do keys[#keys + 1] = k end\n"
    "  sort(keys, less)\n"
    "  local i = 0\n"
    "  return function()\n"
    "    i = i + 1\n"
    "    local k = keys[i]\n"
    "    if k ~= nil then return k, t[k] end\n"
    "  end\n"
    "end\n";

/* Copies the fields of the table at the top of the stack into a new table. */
static void fg_copy_table_top(lua_State *L) {
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_settable(L, -4);
  }
  lua_remove(L, -2);
}

static int fg_l_main(lua_State *L) {
  fg_render *r = lua_touserdata(L, 1);
  luaL_requiref(L, "_G", luaopen_base, 1);
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
  luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
  lua_settop(L, 1);
  /* string.dump is the way to bytecode: gone for everyone, including the
     string metatable that every string value reaches. */
  lua_getglobal(L, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  lua_pop(L, 1);

  lua_newtable(L); /* the sandbox environment */
  static const char *const base_names[] = {"assert",   "error",  "ipairs",   "select",
                                           "tonumber", "tostring", "type",   "rawequal",
                                           "rawlen",   "setmetatable"};
  for (size_t i = 0; i < FG_ARRAY_LEN(base_names); i++) {
    lua_getglobal(L, base_names[i]);
    lua_setfield(L, -2, base_names[i]);
  }
  static const char *const libs[] = {"string", "table", "math", "utf8"};
  for (size_t i = 0; i < FG_ARRAY_LEN(libs); i++) {
    lua_getglobal(L, libs[i]);
    fg_copy_table_top(L);
    lua_setfield(L, -2, libs[i]);
  }
  if (luaL_loadbufferx(L, fg_sorted_pairs_lua, sizeof fg_sorted_pairs_lua - 1,
                       "=fagen-sorted-pairs", "t") != LUA_OK)
    lua_error(L);
  lua_call(L, 0, 1);
  lua_setfield(L, -2, "pairs");
  lua_pushcfunction(L, fg_l_text);
  lua_setfield(L, -2, "_T");
  lua_pushcfunction(L, fg_l_expr);
  lua_setfield(L, -2, "_E");
  lua_pushcfunction(L, fg_l_emit);
  lua_setfield(L, -2, "emit");
  lua_pushcfunction(L, fg_l_include);
  lua_setfield(L, -2, "include");
  lua_newtable(L);
  for (size_t i = 0; i < r->n_params; i++) {
    const fg_tpl_param *p = &r->params[i];
    switch (p->type) {
      case FG_PARAM_INT: lua_pushinteger(L, (lua_Integer)p->i); break;
      case FG_PARAM_BOOL: lua_pushboolean(L, p->i != 0); break;
      case FG_PARAM_STR: lua_pushstring(L, p->s ? p->s : ""); break;
    }
    lua_setfield(L, -2, p->key);
  }
  lua_setfield(L, -2, "v");
  r->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  fg_run_template(L, r, r->main_name);
  return 0;
}

/* Message handler: message plus the template frames of the traceback. */
static int fg_l_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Keeps the first line and the traceback lines that point into templates. */
static void fg_format_error(const char *raw, char *out, size_t size) {
  fg_buf b;
  fg_buf_init(&b);
  const char *nl = strchr(raw, '\n');
  const char *tb = strstr(raw, "\nstack traceback:");
  size_t first = tb ? (size_t)(tb - raw) : strlen(raw);
  (void)nl;
  fg_buf_append(&b, raw, first);
  int frames = 0;
  if (tb) {
    const char *p = tb + 1;
    while ((p = strchr(p, '\n')) != NULL) {
      p++;
      const char *e = strchr(p, '\n');
      size_t len = e ? (size_t)(e - p) : strlen(p);
      if (len > 10 && p[0] == '\t' && strncmp(p + 1, "templates/", 10) == 0) {
        fg_buf_puts(&b, frames++ ? "\n    " : "\n  in ");
        fg_buf_append(&b, p + 1, len - 1);
      }
    }
  }
  fg_strlcpy(out, b.data ? b.data : raw, size);
  fg_buf_free(&b);
}

fagen_status fg_tpl_render(const char *name, const fg_tpl_param *params, size_t n_params,
                           fg_tpl_loader load, void *load_user, fg_buf *out, fg_err *err) {
  fg_render r;
  memset(&r, 0, sizeof r);
  r.out = out;
  r.load = load;
  r.load_user = load_user;
  r.main_name = name;
  r.params = params;
  r.n_params = n_params;
  r.cur_file = -1;
  r.at_bol = 1;
  r.env_ref = LUA_NOREF;

  lua_State *L = lua_newstate(fg_lua_alloc, &r);
  if (!L) return fg_fail(err, FAGEN_E_NO_MEMORY, "cannot create a Lua state");
  lua_sethook(L, fg_lua_hook, LUA_MASKCOUNT, FG_HOOK_STEP);
  lua_pushcfunction(L, fg_l_traceback);
  lua_pushcfunction(L, fg_l_main);
  lua_pushlightuserdata(L, &r);
  int rc = lua_pcall(L, 1, 0, 1);
  fagen_status st = FAGEN_OK;
  if (rc != LUA_OK) {
    char raw[2048];
    const char *m = lua_tostring(L, -1);
    fg_strlcpy(raw, m ? m : "(no message)", sizeof raw);
    if (rc == LUA_ERRMEM) {
      if (r.mem_hit)
        st = fg_fail(err, FAGEN_E_TEMPLATE,
                     "templates/%s: template used more than %zu MiB of memory", name,
                     FG_TPL_MAX_MEMORY >> 20);
      else
        st = fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory rendering templates/%s", name);
    } else {
      char msg[2048];
      fg_format_error(raw, msg, sizeof msg);
      st = fg_fail(err, r.load_status ? r.load_status : FAGEN_E_TEMPLATE, "%s", msg);
    }
  } else if (out->oom) {
    st = fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory rendering templates/%s", name);
  }
  lua_close(L);
  for (int i = 0; i < r.nfiles; i++) free(r.files[i]);
  return st;
}
