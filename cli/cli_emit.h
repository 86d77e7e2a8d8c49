/* cli_emit: `fagen --emit`, `fagen list` and `fagen show`. */
#ifndef CLI_EMIT_H
#define CLI_EMIT_H

int cli_emit(int argc, char **argv);
int cli_list(int argc, char **argv);
int cli_show(int argc, char **argv);

#endif
