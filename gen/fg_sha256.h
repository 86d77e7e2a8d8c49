/* fg_sha256: SHA-256 (FIPS 180-4), for the template-set hash and cache keys. */
#ifndef FG_SHA256_H
#define FG_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct fg_sha256 {
  uint32_t h[8];
  uint64_t bytes;
  unsigned char block[64];
  size_t fill;
} fg_sha256;

void fg_sha256_init(fg_sha256 *s);
void fg_sha256_update(fg_sha256 *s, const void *data, size_t n);
void fg_sha256_final(fg_sha256 *s, unsigned char out[32]);
/* Convenience: digest of one buffer. */
void fg_sha256_buf(const void *data, size_t n, unsigned char out[32]);
/* Lowercase hex of n bytes into out[2n+1]. */
void fg_hex(const unsigned char *bytes, size_t n, char *out);

#endif
