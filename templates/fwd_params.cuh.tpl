{# The forward kernels' parameter block.  Its fields come from
   gen/fg_kernel_abi.h, the list the host side is built from, so the two
   layouts are one; the size check guards against a different ABI. #}
{{ v.abi_fwd_struct }}
static_assert(sizeof(fg_fwd_params) == {{ v.abi_fwd_size }}, "fg_fwd_params size differs from the host's");
