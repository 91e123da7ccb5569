/* What kernel.c and layer.c share (model/engines/kernel.py hashes it with them). */
#ifndef PLAYGROUND_KERNEL_H
#define PLAYGROUND_KERNEL_H
#include <immintrin.h>
#include <stdint.h>

/* y = x W^T + b for M rows of I inputs into O outputs, W packed by kernel.py (kernel.c). */
void linear_f32(const float* x, const float* P, const float* bias, float* y,
                int64_t M, int64_t I, int64_t O);

/* The sum of a register's 8 floats. */
static inline float hsum(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(lo), s = _mm_add_ps(lo, sh);
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehl_ps(sh, s)));
}
#endif
