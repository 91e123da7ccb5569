/* What kernel.c and layer.c share (model/engines/kernel.py hashes it with them). */
#ifndef PLAYGROUND_KERNEL_H
#define PLAYGROUND_KERNEL_H
#include <immintrin.h>
#include <stdint.h>

/* How a packed weight holds its values (kernel.c's layouts): fp32, or the checkpoint's own
 * 4-bit or 8-bit codes (model/engines/codes.py), turned back into the same fp32 values; or
 * bf16 (W_BF16, kernel512.c's layout), multiplied with x rounded to bf16 on AVX512-BF16.
 * W_BF16X on W_Q4: the same codes, multiplied with x rounded to bf16 (DTYPE=bfloat16). */
enum { W_F32 = 0, W_Q4 = 1, W_Q8 = 2, W_BF16 = 3, W_BF16X = 8 };
#define W_STORED(format) ((format) & 7) /* the layout, without W_BF16X */
typedef struct {
    const void* data;
    int64_t format;
} weights_t;

/* The checkpoint's codes (W_Q4, W_Q8; found by codes.c): per block of 4 output rows and 32
 * inputs, a group of the 4 rows' codes and then their fp16 scales.
 *   W_Q4: 16 bytes a row (byte i: input i in its low 4 bits, input i + 16 in its high 4), then
 *         4 steps d and 4 minimums m: w = d q + m.                          80 bytes a group
 *   W_Q8: 32 signed bytes a row, then 4 steps d: w = d q.                   136 bytes a group
 * d q is exact in fp32 (an fp16 d has 11 significant bits, q at most 8), so each w is the
 * checkpoint's fp32 weight to the bit, and kernel.c adds the products in the order it adds fp32
 * weights: the same results, reading 0.63 or 1.06 bytes a weight instead of 4. */
#define Q4_GROUP 80
#define Q8_GROUP 136
/* W_BF16: per block of 4 output rows and 32 inputs, each row's 32 bf16 weights in input order:
 *   P[((blk * I/32 + g) * 4 + k) * 32 + l] = bf16(W[4 blk + k][32 g + l])    256 bytes a group */
#define BF16_GROUP 256
static inline int64_t group_bytes(int64_t format) {
    return W_STORED(format) == W_Q4 ? Q4_GROUP : W_STORED(format) == W_Q8 ? Q8_GROUP : BF16_GROUP;
}

#define L2_BYTES (96 * 1024) /* what one chunk of weights, and one of x, may take */
#define PREFETCH 2048 /* bytes ahead of a tile's codes: a stream of small matrices, each a few
                       * chunks a thread, is too short for the hardware to see it coming */

/* Asks for the two cache lines PREFETCH bytes past p: called once per group of codes (80 or 136
 * bytes) or 8 fp32 inputs of a block (128), so every line of the stream is asked for in time. */
static inline void fetch_ahead(const void* p) {
    _mm_prefetch((const char*)p + PREFETCH, _MM_HINT_T0);
    _mm_prefetch((const char*)p + PREFETCH + 64, _MM_HINT_T0);
}

/* y = x W^T + b for M rows of I inputs into O outputs, W packed by kernel.py (kernel.c). */
void linear(const float* x, const weights_t* W, const float* bias, float* y,
            int64_t M, int64_t I, int64_t O);

/* The same on AVX-512 row tiles, for I a multiple of 32 (kernel512.c); the only path of the
 * bf16 arithmetic formats (W_BF16, W_BF16X), which it takes only where kernel_bf16(). */
void linear512(const float* x, const weights_t* W, const float* bias, float* y,
               int64_t M, int64_t I, int64_t O);

/* Whether the CPU has what W_BF16 and W_BF16X need: AVX512-BF16 and AVX512-BW (kernel512.c). */
int64_t kernel_bf16(void);

/* A packed weight's block `blk` (4 output rows of I inputs). */
static inline const void* block_at(const weights_t* W, int64_t blk, int64_t I) {
    if (W_STORED(W->format) == W_F32) return (const float*)W->data + blk * 4 * I;
    return (const uint8_t*)W->data + blk * (I / 32) * group_bytes(W->format);
}

/* A tile's sums into y, plus the bias: y[r][o0 + k] = t[r * rs + k * ks] + bias[o0 + k] for
 * `rows` rows and n outputs (the row tiles keep a row's outputs together, the panels an
 * output's rows). */
static inline void put(const float* t, int64_t rs, int64_t ks, int rows, int64_t n, float* y,
                       int64_t O, int64_t o0, const float* bias) {
    for (int r = 0; r < rows; r++)
        for (int64_t k = 0; k < n; k++)
            y[r * O + o0 + k] = t[r * rs + k * ks] + (bias ? bias[o0 + k] : 0.f);
}

/* The sum of a register's 8 floats. */
static inline float hsum(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(lo), s = _mm_add_ps(lo, sh);
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehl_ps(sh, s)));
}
#endif
