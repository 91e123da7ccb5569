/* kernel.c's linear layer on AVX-512 row tiles, for CPUs that have AVX-512F (chosen at run
 * time by kernel.c's linear(); the rest of the library stays AVX2, so one build runs anywhere).
 *
 * Why: over a checkpoint's codes (SmolLM2's), AVX2's tiles spend most of their instructions
 * turning 8 codes at a time into fp32, and have 16 registers: 3 rows a tile, or panels that
 * turn a chunk into fp32 in memory first. Here a register holds 16 weights and there are 32
 * registers: a tile is a block's 4 outputs times up to 4 rows, or 2 outputs times up to 8, so
 * a decode step of 8 streams turns each code into fp32 once, in a register, and meets all 8
 * rows with it. A whole SmolLM2 step (211 matrices of codes), 2 threads: 1.1-1.2x AVX2's tiles
 * at one row, 2x at 4, 1.4x at 8, 1.2-1.3x at 16-32 (bench/RESULTS.md, "Engine speed on CPU,
 * part 9"; `python bench/cpu_decode.py tiles`).
 *
 * A tile sums along the inputs in 16-wide registers, per group of 32 inputs: each output's 32
 * weights become two registers (inputs 0-15 and 16-31 of the group, in every format), each
 * met by every row's x straight from memory. Lane j of a sum adds inputs 32g + j, then
 * 32g + 16 + j, group after group, whatever the format: codes and fp32 give the same sums.
 */
#include <omp.h>
#include <string.h>

#include "kernel.h"

#define Z512 __attribute__((target("avx512f,avx2,fma,f16c"), always_inline)) static inline

/* A group's 4 steps d and (W_Q4) 4 minimums m as fp32, into sc[0..7], in one conversion. */
Z512 void scales8(const int fmt, const uint8_t* p, float* sc) {
    if (fmt == W_Q4) _mm256_storeu_ps(sc, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 64))));
    else if (fmt == W_Q8) _mm_storeu_ps(sc, _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)(p + 128))));
}

/* Two 8-float halves as one register. */
Z512 __m512 join(const float* a, const float* b) {
    __m512d lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(a)));
    return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(_mm256_loadu_ps(b)), 1));
}

/* Output k's 32 weights of the group at p (a group of codes; for fp32 the group's 4 stretches
 * of 8 inputs, kernel.c's layout), as two registers: inputs 0-15 and 16-31. */
Z512 void weights32(const int fmt, const uint8_t* p, const float* sc, int k, __m512* lo, __m512* hi) {
    if (fmt == W_F32) {
        const float* f = (const float*)p + 8 * k;
        *lo = join(f, f + 32);
        *hi = join(f + 64, f + 96);
    } else if (fmt == W_Q4) {
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(p + 16 * k)));
        __m512 d = _mm512_set1_ps(sc[k]), m = _mm512_set1_ps(sc[4 + k]);
        /* d q exact: one rounding, as the checkpoint's d q + m */
        *lo = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_and_si512(q, _mm512_set1_epi32(15))), m);
        *hi = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4)), m);
    } else {
        __m512 d = _mm512_set1_ps(sc[k]);
        const __m128i* q = (const __m128i*)(p + 32 * k);
        *lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))));
        *hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))));
    }
}

/* The sums of v[0..15]'s lanes as one register, lane i v[i]'s: a tree of shuffles and adds
 * (45 instructions; one register at a time took ~140, a sixth of an 8-row tile's work). */
Z512 __m512 sum16(const __m512 v[16]) {
    __m512 t[8], u[4];
    /* taken in the order that brings the last step's lanes out in v's order */
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        int p = 2 * i, q = 2 * i + 1;
        __m512 a = v[(p % 4) * 4 + p / 4], b = v[(q % 4) * 4 + q / 4];
        t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
        u[j] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * j], t[2 * j + 1], 0x88),
                             _mm512_shuffle_f32x4(t[2 * j], t[2 * j + 1], 0xDD));
    __m512 w0 = _mm512_add_ps(_mm512_unpacklo_ps(u[0], u[1]), _mm512_unpackhi_ps(u[0], u[1]));
    __m512 w1 = _mm512_add_ps(_mm512_unpacklo_ps(u[2], u[3]), _mm512_unpackhi_ps(u[2], u[3]));
    return _mm512_add_ps(_mm512_shuffle_ps(w0, w1, 0x44), _mm512_shuffle_ps(w0, w1, 0xEE));
}

/* Outputs k0 .. k0 + NO - 1 of block w times rows 0 .. R - 1 of x, into out[r * 4 + k] (NO,
 * R and fmt constants where called: every accumulator stays in a register). */
Z512 void tile(const int fmt, const int NO, const int R, const void* w, int k0, const float* x,
               int64_t I, float* out) {
    __m512 acc[4][8];
#pragma GCC unroll 4
    for (int k = 0; k < NO; k++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc[k][r] = _mm512_setzero_ps();
    const int64_t GB = fmt == W_F32 ? 4 * 32 * sizeof(float) : group_bytes(fmt);
    const uint8_t* p = w;
    for (int64_t g = 0; g < I / 32; g++, p += GB) {
        if (fmt != W_F32) fetch_ahead(p);
        __m512 lo[4], hi[4];
        float sc[8];
        scales8(fmt, p, sc);
#pragma GCC unroll 4
        for (int k = 0; k < NO; k++) weights32(fmt, p, sc, k0 + k, &lo[k], &hi[k]);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 xl = _mm512_loadu_ps(x + r * I + 32 * g), xh = _mm512_loadu_ps(x + r * I + 32 * g + 16);
#pragma GCC unroll 4
            for (int k = 0; k < NO; k++) {
                acc[k][r] = _mm512_fmadd_ps(lo[k], xl, acc[k][r]);
                acc[k][r] = _mm512_fmadd_ps(hi[k], xh, acc[k][r]);
            }
        }
    }
    __m512 v[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) v[i] = i < NO * R ? acc[i / R][i % R] : _mm512_setzero_ps();
    float s[16];
    _mm512_storeu_ps(s, sum16(v));
#pragma GCC unroll 4
    for (int k = 0; k < NO; k++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) out[r * 4 + k0 + k] = s[k * R + r];
}

/* A block's 4 outputs times R rows: all 4 up to 4 rows, else in two halves of 2 outputs (the
 * accumulators must fit the 32 registers beside the weights). */
Z512 void block(const int fmt, const int R, const void* w, const float* x, int64_t I, float* out) {
    if (R <= 4) tile(fmt, 4, R, w, 0, x, I, out);
    else {
        tile(fmt, 2, R, w, 0, x, I, out);
        tile(fmt, 2, R, w, 2, x, I, out);
    }
}

/* R = rows (1-8) as a constant for block(). */
Z512 void block_rows(const int fmt, int rows, const void* w, const float* x, int64_t I, float* out) {
    switch (rows) {
    case 1: block(fmt, 1, w, x, I, out); break;
    case 2: block(fmt, 2, w, x, I, out); break;
    case 3: block(fmt, 3, w, x, I, out); break;
    case 4: block(fmt, 4, w, x, I, out); break;
    case 5: block(fmt, 5, w, x, I, out); break;
    case 6: block(fmt, 6, w, x, I, out); break;
    case 7: block(fmt, 7, w, x, I, out); break;
    default: block(fmt, 8, w, x, I, out); break;
    }
}

/* Threads split the output blocks in chunks that fit L2; each block meets the rows 8 at a time. */
__attribute__((target("avx512f,avx2,fma,f16c"))) void linear512(
    const float* x, const weights_t* W, const float* bias, float* y, int64_t M, int64_t I, int64_t O) {
    int64_t blocks = (O + 3) / 4;
    int64_t per_chunk = L2_BYTES / (16 * I) > 0 ? L2_BYTES / (16 * I) : 1;
    int64_t chunks = (blocks + per_chunk - 1) / per_chunk;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t first = c * per_chunk, last = first + per_chunk < blocks ? first + per_chunk : blocks;
        for (int64_t m = 0; m < M; m += 8) {
            int rows = M - m < 8 ? (int)(M - m) : 8;
            for (int64_t blk = first; blk < last; blk++) {
                float out[32];
                const void* w = block_at(W, blk, I);
                if (W->format == W_Q4) block_rows(W_Q4, rows, w, x + m * I, I, out);
                else if (W->format == W_Q8) block_rows(W_Q8, rows, w, x + m * I, I, out);
                else block_rows(W_F32, rows, w, x + m * I, I, out);
                put(out, 4, 1, rows, O - 4 * blk < 4 ? O - 4 * blk : 4, y + m * O, O, 4 * blk, bias);
            }
        }
    }
}
