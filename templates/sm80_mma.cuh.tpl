{# Tensor-core and async-copy building blocks for sm_80 and newer, in inline
   PTX (no headers).  Fragment layouts are those of the PTX ISA for
   mma.m16n8k16 with 16-bit inputs:
     A (16x16): 4 regs; a thread (group g = lane/4, t = lane%4) holds rows
                g and g+8, columns 2t,2t+1 and 2t+8,2t+9
     B (16x8):  2 regs; k = 2t,2t+1 and 2t+8,2t+9, n = g
     C (16x8):  4 floats; rows g, g+8, columns 2t, 2t+1 #}
{% local ty = v.dtype == "bf16" and "bf16" or "f16" %}

// Four 8x8 matrices of 16-bit elements; lane i gives the address of row i%8 of matrix i/8.
__device__ __forceinline__ void fg_ldsm_x4(fg_u32 addr, fg_u32 &r0, fg_u32 &r1, fg_u32 &r2, fg_u32 &r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

__device__ __forceinline__ void fg_ldsm_x4_trans(fg_u32 addr, fg_u32 &r0, fg_u32 &r1, fg_u32 &r2, fg_u32 &r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

// d += a * b with fp32 accumulation.
__device__ __forceinline__ void fg_mma(float (&d)[4], const fg_u32 (&a)[4], fg_u32 b0, fg_u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.{{ ty }}.{{ ty }}.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16-byte global -> shared copy; src_bytes 0 fills the destination with zeros.
__device__ __forceinline__ void fg_cp_async16(fg_u32 dst, const void *src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :: "r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void fg_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int N>
__device__ __forceinline__ void fg_cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }
