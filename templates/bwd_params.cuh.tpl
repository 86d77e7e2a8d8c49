{# The backward kernels' parameter block, from gen/fg_kernel_abi.h (see
   fwd_params.cuh.tpl). #}
{{ v.abi_bwd_struct }}
static_assert(sizeof(fg_bwd_params) == {{ v.abi_bwd_size }}, "fg_bwd_params size differs from the host's");
