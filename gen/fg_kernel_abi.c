#include "fg_kernel_abi.h"

void fg_abi_fwd_struct(fg_buf *out) {
  fg_buf_puts(out, "struct fg_fwd_params {\n");
#define FG_ABI_CUDA_FIELD_(ctype, cudatype, name) fg_buf_printf(out, "  %s %s;\n", cudatype, #name);
  FG_FWD_PARAMS_FIELDS(FG_ABI_CUDA_FIELD_)
#undef FG_ABI_CUDA_FIELD_
  fg_buf_puts(out, "};");
}

void fg_abi_bwd_struct(fg_buf *out) {
  fg_buf_puts(out, "struct fg_bwd_params {\n");
#define FG_ABI_CUDA_FIELD_(ctype, cudatype, name) fg_buf_printf(out, "  %s %s;\n", cudatype, #name);
  FG_BWD_PARAMS_FIELDS(FG_ABI_CUDA_FIELD_)
#undef FG_ABI_CUDA_FIELD_
  fg_buf_puts(out, "};");
}

#define FG_ABI_COPY_(ctype, cudatype, name) p->name = f->name;
void fg_abi_fwd_set_features(fg_fwd_params *p, const fg_feat_params *f) {
  FG_FEAT_PARAMS_FIELDS(FG_ABI_COPY_)
}

void fg_abi_bwd_set_features(fg_bwd_params *p, const fg_feat_params *f) {
  FG_FEAT_PARAMS_FIELDS(FG_ABI_COPY_)
}
#undef FG_ABI_COPY_
