// Causal grouped-query attention over packed sequences, one launch for the whole batch.
//
// The host (src/varlen/plan.rs) cuts every sequence's query rows into tasks of at most WARPS
// rows; block (task, head) runs one task for one query head, one warp per query row. Key/value
// tiles of KEYS rows are staged in shared memory as f32 and shared by the block's warps; each lane
// scores one key of the tile, and the softmax is the streaming (running maximum) form, so no
// score matrix is ever stored and the memory used is the same for 16 tokens or 32k.
//
// Key tiles always start at the sequence's first token, whatever rows the task holds: a row's
// result therefore depends only on its own sequence, never on its neighbours in the batch or on how
// the rows were grouped into tasks (the batch-invariance promise). src/varlen/model.rs runs the
// same loops on the CPU, lane by lane, and is what the test suite checks on machines without a GPU.
//
// Layouts (row-major, contiguous): q and out (q_rows, heads, d); k and v (tokens, kv_heads, d).
// A task is four u32: first query row, number of rows, first key, and the last key the first
// row may see (row r of the task sees keys first_key ..= last_key + r).

#include <cuda_bf16.h>
#include <math_constants.h>

#define WARPS 8
#define KEYS 32
#define MAX_D 128
#define PER_LANE (MAX_D / 32)

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// An odd stride puts lane j's key row in a bank of its own while all lanes walk the columns.
__device__ __forceinline__ int key_stride(int d) { return (d % 2 == 0) ? d + 1 : d; }

template <typename T>
__device__ void varlen_attention(const T* __restrict__ q, const T* __restrict__ k,
                                 const T* __restrict__ v, T* __restrict__ out,
                                 const unsigned* __restrict__ tasks, int heads, int kv_heads,
                                 int d, float scale_log2) {
  extern __shared__ float shared[];
  const int ks_stride = key_stride(d);
  float* qs = shared;                    // WARPS x d: this block's query rows, pre-scaled
  float* ks = qs + WARPS * d;            // KEYS x ks_stride
  float* vs = ks + KEYS * ks_stride;     // KEYS x d

  const unsigned* task = tasks + 4 * blockIdx.x;
  const int q_row = task[0], rows = task[1], first_key = task[2], last_key = task[3];
  const int head = blockIdx.y;
  const int kv_head = head / (heads / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool active = warp < rows;
  const int my_last = last_key + warp;  // the last key this warp's row may see

  // Scores are kept in log2 units (scale * log2 e folded into q), so exp2f does the softmax.
  for (int i = threadIdx.x; i < rows * d; i += blockDim.x) {
    const int r = i / d, c = i % d;
    qs[r * d + c] = to_f32(q[((size_t)(q_row + r) * heads + head) * d + c]) * scale_log2;
  }

  float running_max = -CUDART_INF_F, total = 0.f, acc[PER_LANE];
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) acc[i] = 0.f;

  const int key_end = last_key + rows;  // one past the last key any row of the task sees
  for (int tile = first_key; tile < key_end; tile += KEYS) {
    const int n = min(KEYS, key_end - tile);
    __syncthreads();  // every warp is done with the previous tile
    for (int i = threadIdx.x; i < n * d; i += blockDim.x) {
      const int j = i / d, c = i % d;
      const size_t at = ((size_t)(tile + j) * kv_heads + kv_head) * d + c;
      ks[j * ks_stride + c] = to_f32(k[at]);
      vs[j * d + c] = to_f32(v[at]);
    }
    __syncthreads();
    if (!active || tile > my_last) continue;  // warp-uniform: the whole tile is in this row's future

    const int key = tile + lane;
    float score = -CUDART_INF_F;
    if (lane < n && key <= my_last) {
      const float* qr = qs + warp * d;
      const float* kr = ks + lane * ks_stride;
      float dot = 0.f;
      for (int c = 0; c < d; ++c) dot = fmaf(qr[c], kr[c], dot);
      score = dot;
    }
    // The tile's first key is at most this row's last, so the maximum is finite.
    const float new_max = fmaxf(running_max, warp_max(score));
    const float p = (lane < n && key <= my_last) ? exp2f(score - new_max) : 0.f;
    const float rescale = exp2f(running_max - new_max);  // 0 on the first tile
    total = total * rescale + warp_sum(p);
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) acc[i] *= rescale;
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i) {
        const int c = lane + 32 * i;
        if (c < d) acc[i] = fmaf(pj, vs[j * d + c], acc[i]);
      }
    }
    running_max = new_max;
  }

  if (!active) return;
  const float inv = 1.f / total;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int c = lane + 32 * i;
    if (c < d) store(out + ((size_t)(q_row + warp) * heads + head) * d + c, acc[i] * inv);
  }
}

extern "C" __global__ void varlen_attention_f32(const float* q, const float* k, const float* v,
                                                float* out, const unsigned* tasks, int heads,
                                                int kv_heads, int d, float scale_log2) {
  varlen_attention<float>(q, k, v, out, tasks, heads, kv_heads, d, scale_log2);
}

extern "C" __global__ void varlen_attention_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                                 const __nv_bfloat16* v, __nv_bfloat16* out,
                                                 const unsigned* tasks, int heads, int kv_heads,
                                                 int d, float scale_log2) {
  varlen_attention<__nv_bfloat16>(q, k, v, out, tasks, heads, kv_heads, d, scale_log2);
}
