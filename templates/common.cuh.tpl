{# Definitions every kernel shares.  Generated sources include no headers
   (NVRTC finds none), so element types are 16-bit integers and conversions
   are inline PTX. #}
typedef unsigned short fg_u16;
typedef unsigned int fg_u32;
typedef long long fg_i64;
typedef unsigned long long fg_u64;

#define FG_NEG_INF (__int_as_float(0xff800000))
#define FG_LN2 0.69314718055994530942f

{% if v.dtype == "bf16" then %}
// bfloat16: the upper half of an fp32.
__device__ __forceinline__ float fg_to_float(fg_u16 x) {
  return __uint_as_float(((fg_u32)x) << 16);
}
__device__ __forceinline__ fg_u16 fg_from_float(float f) {
  fg_u16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}
{% else %}
// IEEE half.
__device__ __forceinline__ float fg_to_float(fg_u16 x) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
  return f;
}
__device__ __forceinline__ fg_u16 fg_from_float(float f) {
  fg_u16 r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}
{% end %}

__device__ __forceinline__ fg_u32 fg_smem_addr(const void *p) {
  return (fg_u32)__cvta_generic_to_shared(p);
}

// Two floats -> one register of two 16-bit values, lo in the low half.
__device__ __forceinline__ fg_u32 fg_pack(float lo, float hi) {
  fg_u32 r;
  asm("cvt.rn.{{ v.dtype == "bf16" and "bf16" or "f16" }}x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ float fg_ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float fg_warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float fg_warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
