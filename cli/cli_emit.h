/* cli_emit: `fagen --emit`, `fagen list`, `fagen show` and `fagen compile`. */
#ifndef CLI_EMIT_H
#define CLI_EMIT_H

int cli_emit(int argc, char **argv);
int cli_list(int argc, char **argv);
int cli_show(int argc, char **argv);
int cli_compile(int argc, char **argv);

#endif
