/* cli_tune: `fagen tune show` — which table and entry a call would use. */
#ifndef CLI_TUNE_H
#define CLI_TUNE_H

int cli_tune(int argc, char **argv);

#endif
