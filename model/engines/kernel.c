/* The CPU linear layer for a few rows: y = x W^T + b in fp32 with AVX2 + FMA, on torch's own
 * OpenMP team (libgomp is loaded once, by torch; this library links the same soname).
 *
 * Why: a decode step multiplies 1-8 rows by every weight, so it is bound by reading the
 * weights. At one row oneDNN's inner product read them at 12-22 GB/s here, this at 20-28 of the
 * ~30 the machine streams (bench/RESULTS.md, "Engine speed on CPU, part 5").
 *
 * Layout (packed by model/engines/kernel.py): the output rows in blocks of 4, and within a block,
 * for every 8 inputs, the 4 rows' 8 weights side by side, so a block is read as one stream:
 *   P[((blk * I/8) + j) * 32 + k * 8 + l] = W[4 blk + k][8 j + l]   (rows past O are zero)
 * A tile is 4 output rows times 1-3 input rows, summed along the inputs in 8-wide registers.
 * Threads split the output blocks in chunks that fit L2 beside a chunk of x, so a prefill of
 * hundreds of rows reads each weight chunk from memory once. I must be a multiple of 8.
 */
#include "kernel.h"

#define L2_BYTES (96 * 1024) /* what one chunk of weights, and one of x, may take */

#define FMA4(acc, xv)                                        \
    acc##0 = _mm256_fmadd_ps(w0, xv, acc##0);                \
    acc##1 = _mm256_fmadd_ps(w1, xv, acc##1);                \
    acc##2 = _mm256_fmadd_ps(w2, xv, acc##2);                \
    acc##3 = _mm256_fmadd_ps(w3, xv, acc##3)

/* 4 output rows x `rows` (1-3) input rows; out[r * 4 + k] */
static inline void tile(const float* p, const float* x, int64_t I, int rows, int64_t J, float* out) {
    const float *xa = x, *xb = x + (rows > 1 ? I : 0), *xc = x + (rows > 2 ? 2 * I : 0);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    for (int64_t j = 0; j < J; j++, p += 32) {
        __m256 w0 = _mm256_loadu_ps(p), w1 = _mm256_loadu_ps(p + 8);
        __m256 w2 = _mm256_loadu_ps(p + 16), w3 = _mm256_loadu_ps(p + 24);
        __m256 va = _mm256_loadu_ps(xa + 8 * j);
        FMA4(a, va);
        if (rows > 1) { __m256 vb = _mm256_loadu_ps(xb + 8 * j); FMA4(b, vb); }
        if (rows > 2) { __m256 vc = _mm256_loadu_ps(xc + 8 * j); FMA4(c, vc); }
    }
    out[0] = hsum(a0); out[1] = hsum(a1); out[2] = hsum(a2); out[3] = hsum(a3);
    out[4] = hsum(b0); out[5] = hsum(b1); out[6] = hsum(b2); out[7] = hsum(b3);
    out[8] = hsum(c0); out[9] = hsum(c1); out[10] = hsum(c2); out[11] = hsum(c3);
}

void linear_f32(const float* x, const float* P, const float* bias, float* y,
                int64_t M, int64_t I, int64_t O) {
    int64_t blocks = (O + 3) / 4, J = I / 8;
    int64_t per_chunk = L2_BYTES / (16 * I) > 0 ? L2_BYTES / (16 * I) : 1;
    int64_t x_rows = L2_BYTES / (4 * I);
    x_rows = x_rows < 3 ? 3 : x_rows - x_rows % 3;
    int64_t chunks = (blocks + per_chunk - 1) / per_chunk;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t first = c * per_chunk, last = first + per_chunk < blocks ? first + per_chunk : blocks;
        for (int64_t m0 = 0; m0 < M; m0 += x_rows) {
            int64_t m1 = m0 + x_rows < M ? m0 + x_rows : M;
            for (int64_t blk = first; blk < last; blk++) {
                int64_t o0 = 4 * blk, n = O - o0 < 4 ? O - o0 : 4;
                for (int64_t m = m0; m < m1; m += 3) {
                    int rows = m1 - m < 3 ? (int)(m1 - m) : 3;
                    float out[12];
                    tile(P + blk * J * 32, x + m * I, I, rows, J, out);
                    for (int r = 0; r < rows; r++)
                        for (int64_t k = 0; k < n; k++)
                            y[(m + r) * O + o0 + k] = out[r * 4 + k] + (bias ? bias[o0 + k] : 0.f);
                }
            }
        }
    }
}
