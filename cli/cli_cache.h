/* cli_cache: `fagen cache ls|info|clear|warm`. */
#ifndef CLI_CACHE_H
#define CLI_CACHE_H

int cli_cache(int argc, char **argv);

#endif
