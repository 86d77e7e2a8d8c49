/* The template engine: tag syntax, line marks, sandbox, limits, and errors
 * that name the template's file and line. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "fg_lua.h"
#include "fg_tpl.h"

/* An in-memory set of templates: {name, text, name, text, ..., NULL}. */
static fagen_status mem_loader(void *user, const char *name, fg_buf *text, fg_err *err) {
  const char *const *files = user;
  for (size_t i = 0; files[i]; i += 2)
    if (strcmp(files[i], name) == 0) {
      fg_buf_puts(text, files[i + 1]);
      return FAGEN_OK;
    }
  return fg_fail(err, FAGEN_E_TEMPLATE, "no template named '%s'", name);
}

static fagen_status render(const char *const *files, fg_buf *out, fg_err *err) {
  const fg_tpl_param params[] = {{"head_dim", FG_PARAM_INT, 128, NULL},
                                 {"causal", FG_PARAM_BOOL, 1, NULL},
                                 {"dtype", FG_PARAM_STR, 0, "bf16"}};
  fg_buf_init(out);
  return fg_tpl_render(files[0], params, 3, mem_loader, (void *)files, out, err);
}

/* Renders and returns the output without its #line marks. */
static char *render_plain(const char *text) {
  const char *files[] = {"t.tpl", text, NULL};
  fg_buf out;
  fg_err err;
  fagen_status st = render(files, &out, &err);
  cr_assert_eq(st, FAGEN_OK, "%s", err.msg);
  fg_buf plain;
  fg_buf_init(&plain);
  const char *p = out.data ? out.data : "";
  while (*p) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
    if (strncmp(p, "#line ", 6) != 0) fg_buf_append(&plain, p, len);
    p += len;
  }
  fg_buf_free(&out);
  return fg_buf_take(&plain);
}

Test(template, expressions_and_code) {
  char *s = render_plain("D={{ v.head_dim }} {% if v.causal then %}causal{% end %} {{ v.dtype }}\n");
  cr_assert_str_eq(s, "D=128 causal bf16\n");
  free(s);
}

Test(template, inline_ptx_braces_are_text) {
  char *s = render_plain("asm(\"mma {%0, %1}, {%2}, {{%3}};\" :: \"r\"(x)); {#pragma once\n{{ 1 }}\n");
  cr_assert_str_eq(s, "asm(\"mma {%0, %1}, {%2}, {{%3}};\" :: \"r\"(x)); {#pragma once\n1\n");
  free(s);
}

Test(template, standalone_block_tags_leave_no_text) {
  /* The tag lines vanish; a gap of one line is padded with a blank line, a
     jump back (the loop) gets a #line mark. */
  const char *files[] = {"t.tpl", "a\n{% for i = 1, 3 do %}\nx{{ i }}\n{% end %}\nb\n", NULL};
  fg_buf out;
  fg_err err;
  cr_assert_eq(render(files, &out, &err), FAGEN_OK, "%s", err.msg);
  cr_assert_str_eq(out.data,
                   "#line 1 \"templates/t.tpl\"\na\n\nx1\n#line 3 \"templates/t.tpl\"\nx2\n"
                   "#line 3 \"templates/t.tpl\"\nx3\n\nb\n");
  fg_buf_free(&out);
  char *s;
  s = render_plain("  {# a comment #}\nkeep\n");
  cr_assert_str_eq(s, "keep\n");
  free(s);
}

Test(template, values_are_spelled_for_cuda) {
  char *s = render_plain("{{ 3 }} {{ 0.5 }} {{ 2.0 }} {{ 1e20 }} {{ true }} {{ 7 // 2 }}\n");
  cr_assert_str_eq(s, "3 0.5 2.0 1e+20 true 3\n");
  free(s);
}

Test(template, emit_and_include) {
  const char *files[] = {"main.tpl", "top\n{% include('part.tpl') %}\n{% emit('x', 1, '\\n') %}\nend\n",
                         "part.tpl", "part {{ v.head_dim }}\n", NULL};
  fg_buf out;
  fg_err err;
  cr_assert_eq(render(files, &out, &err), FAGEN_OK, "%s", err.msg);
  cr_assert(strstr(out.data, "top\n"));
  cr_assert(strstr(out.data, "#line 1 \"templates/part.tpl\"\npart 128\n"), "%s", out.data);
  cr_assert(strstr(out.data, "x1\n"));
  cr_assert(strstr(out.data, "end\n"));
  fg_buf_free(&out);
}

Test(template, line_marks_point_back_into_the_template) {
  /* Twelve lines of code push the text far from its output line: a #line
     mark must say where it came from; a one-line gap is padded instead. */
  const char *files[] = {"m.tpl",
                         "first\n{%\n\n\n\n\n\n\n\n\n\n\n%}\nthirteenth\n{% local x = 1 %}\nfifteenth\n",
                         NULL};
  fg_buf out;
  fg_err err;
  cr_assert_eq(render(files, &out, &err), FAGEN_OK, "%s", err.msg);
  cr_assert_str_eq(out.data,
                   "#line 1 \"templates/m.tpl\"\nfirst\n#line 14 \"templates/m.tpl\"\n"
                   "thirteenth\n\nfifteenth\n");
  fg_buf_free(&out);
}

Test(template, output_is_deterministic_even_with_pairs) {
  const char *text =
      "{% local t = {zeta = 1, alpha = 2, mid = 3, [5] = 'five', [1] = 'one'} %}\n"
      "{% for k, x in pairs(t) do %}{{ k }}={{ x }};{% end %}\n";
  char *s = render_plain(text);
  cr_assert_str_eq(s, "1=one;5=five;alpha=2;mid=3;zeta=1;\n");
  for (int i = 0; i < 5; i++) {
    char *again = render_plain(text);
    cr_assert_str_eq(again, s);
    free(again);
  }
  free(s);
}

/* Errors: status, and the message starts with the template's file:line. */
static void expect_error(const char *text, const char *where, const char *what) {
  const char *files[] = {"bad.tpl", text, "inc.tpl", "ok\n{{ nope.field }}\n", NULL};
  fg_buf out;
  fg_err err;
  fagen_status st = render(files, &out, &err);
  fg_buf_free(&out);
  cr_assert_eq(st, FAGEN_E_TEMPLATE, "status %d for %s", st, where);
  cr_assert(strstr(err.msg, where) == err.msg || strstr(err.msg, where),
            "message '%s' does not name '%s'", err.msg, where);
  cr_assert(strstr(err.msg, what), "message '%s' does not say '%s'", err.msg, what);
}

Test(template, syntax_error_names_file_and_line) {
  expect_error("line one\nline two\n{% if then %}\n", "templates/bad.tpl:3:", "unexpected symbol");
}

Test(template, runtime_error_names_file_and_line) {
  expect_error("a\nb\nc\n{{ v.missing.field }}\n", "templates/bad.tpl:4:", "attempt to index");
  expect_error("{% error('head_dim must be even') %}\n", "templates/bad.tpl:1:",
               "head_dim must be even");
}

Test(template, nil_expression_is_an_error) {
  expect_error("x\n{{ undefined_name }}\n", "templates/bad.tpl:2:", "nil");
}

Test(template, unterminated_tag) {
  expect_error("ok\n\n{% if x then \n", "templates/bad.tpl:3:", "unterminated");
  expect_error("{{ 1 + 2 ", "templates/bad.tpl:1:", "unterminated");
}

Test(template, error_inside_an_include_names_the_included_file) {
  expect_error("start\n{% include('inc.tpl') %}\n", "templates/inc.tpl:2:", "attempt to index");
  expect_error("{% include('absent.tpl') %}\n", "templates/bad.tpl:1:", "absent.tpl");
  expect_error("{% include('../etc/passwd') %}\n", "templates/bad.tpl:1:", "not a template name");
}

Test(template, include_cycle_is_stopped) {
  const char *files[] = {"a.tpl", "{% include('a.tpl') %}", NULL};
  fg_buf out;
  fg_err err;
  cr_assert_eq(render(files, &out, &err), FAGEN_E_TEMPLATE);
  cr_assert(strstr(err.msg, "deeper than"), "%s", err.msg);
  fg_buf_free(&out);
}

Test(template, sandbox_has_no_io_os_require_load) {
  const char *names[] = {"io", "os", "require", "load", "loadstring", "dofile", "loadfile",
                         "print", "debug", "package", "collectgarbage", "_G", "getmetatable"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char text[128];
    snprintf(text, sizeof text, "{{ %s == nil }}", names[i]);
    char *s = render_plain(text);
    cr_assert_str_eq(s, "true", "%s is reachable from a template", names[i]);
    free(s);
  }
  char *s = render_plain("{{ string.dump == nil }} {{ ('x').dump == nil }}");
  cr_assert_str_eq(s, "true true");
  free(s);
}

Test(template, endless_loop_is_stopped) {
  expect_error("x\n{% while true do end %}\n", "templates/bad.tpl:2:", "instructions");
}

Test(template, memory_hog_is_stopped) {
  expect_error("{% local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(1000) .. i end %}", "bad.tpl",
               "memory");
}

Test(template, comment_in_code_tag_does_not_swallow_text) {
  char *s = render_plain("{% local x = 2 -- a note %}value {{ x }}\n");
  cr_assert_str_eq(s, "value 2\n");
  free(s);
}

Test(template, translation_keeps_line_parity) {
  const char *text = "a\n{% local x = 1 %}\nb {{ x }}\n{#\n comment\n#}\nc\n";
  fg_buf lua;
  fg_buf_init(&lua);
  fg_err err;
  cr_assert_eq(fg_tpl_translate("templates/t.tpl", text, strlen(text), 0, &lua, &err), FAGEN_OK);
  int tpl_lines = 0, lua_lines = 0;
  for (const char *p = text; *p; p++) tpl_lines += *p == '\n';
  for (const char *p = lua.data; *p; p++) lua_lines += *p == '\n';
  cr_assert_eq(lua_lines, tpl_lines, "Lua chunk has %d lines, template %d:\n%s", lua_lines,
               tpl_lines, lua.data);
  fg_buf_free(&lua);
}
