/* Uses an installed libfagen: names and generates one variant. */
#include <fagen.h>
#include <stdio.h>

int main(void) {
  fagen_variant v;
  if (fagen_variant_parse("fwd_d64_bq128_bk128_w4_s1_bf16_sm80", &v) != FAGEN_OK) return 1;
  char *src;
  size_t len;
  if (fagen_variant_source(&v, &src, &len) != FAGEN_OK) {
    fprintf(stderr, "%s\n", fagen_last_error());
    return 1;
  }
  printf("fagen %s generated %zu bytes\n", fagen_version(), len);
  fagen_free(src);
  return 0;
}
