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
#include <stdlib.h>
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

/* A tile's accumulators acc[k][r] (NO outputs times R rows) set to zero. */
Z512 void zeros(const int NO, const int R, __m512 acc[4][8]) {
#pragma GCC unroll 4
    for (int k = 0; k < NO; k++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc[k][r] = _mm512_setzero_ps();
}

/* A tile's accumulators acc[k][r] (NO outputs times R rows) summed, into out[r * 4 + k0 + k]. */
Z512 void sums_out(const int NO, const int R, __m512 acc[4][8], int k0, float* out) {
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

/* Outputs k0 .. k0 + NO - 1 of block w times rows 0 .. R - 1 of x, into out[r * 4 + k] (NO,
 * R and fmt constants where called: every accumulator stays in a register). */
Z512 void tile(const int fmt, const int NO, const int R, const void* w, int k0, const float* x,
               int64_t I, float* out) {
    __m512 acc[4][8];
    zeros(NO, R, acc);
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
    sums_out(NO, R, acc, k0, out);
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

/* `rows` (1-8) as the constant R of CALL(R), so that a tile's accumulators stay in registers. */
#define ROWS_AS_CONSTANT(rows, CALL)                                                            \
    switch (rows) {                                                                             \
    case 1: CALL(1); break;                                                                     \
    case 2: CALL(2); break;                                                                     \
    case 3: CALL(3); break;                                                                     \
    case 4: CALL(4); break;                                                                     \
    case 5: CALL(5); break;                                                                     \
    case 6: CALL(6); break;                                                                     \
    case 7: CALL(7); break;                                                                     \
    default: CALL(8); break;                                                                    \
    }

Z512 void block_rows(const int fmt, int rows, const void* w, const float* x, int64_t I, float* out) {
#define BLOCK(R) block(fmt, R, w, x, I, out)
    ROWS_AS_CONSTANT(rows, BLOCK)
#undef BLOCK
}

/* bf16 arithmetic (DTYPE=bfloat16 on a CPU with AVX512-BF16): x rounded to bf16 once per call,
 * its products with the weights summed in fp32 by `vdpbf16ps`, 32 a register (16 for fp32's
 * FMA). Over W_BF16 weights every register of weights is read as it is stored; over W_Q4 codes
 * (W_Q4 | W_BF16X) each nibble q becomes the bf16 number 128 + q by one bitwise OR (its bits are
 * 0x4300 + q: bf16 has 8 significant bits, so 128-255 are its integers), so a group's 128
 * weights take 8 integer instructions and 4 conversions of scales where the fp32 tiles take 34,
 * and sum_i x_i (d q_i + m) = d sum_i x_i (128 + q_i) + (m - 128 d) sum_i x_i, with the sum of
 * the group's rounded x computed once per row. W_Q8 (SmolLM2's output layer) stays on the exact
 * fp32 tiles: its 8-bit codes have no such one-instruction conversion. */
/* It needs a compiler that knows AVX512-BF16 (GCC 11, clang 12 on); with an older one it is left
 * out and kernel_bf16() says 0, so the rest of the library still builds and runs. */
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11)
#define HAVE_BF16 1
#else
#define HAVE_BF16 0
#endif
#if HAVE_BF16
#define ZBF __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c"), always_inline)) static inline
#define BF16_MAGIC 0x4300 /* bf16 bits of 128: 128 + q's bits are 0x4300 + q for q < 128 */

/* The sums of each 8-lane half of v, in lanes 0 and 8. */
ZBF __m512 halves8(__m512 v) {
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
    return _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
}

/* Outputs 0-3 of a block of W_Q4 codes times R rows of bf16 x (xb) with the sums of each
 * group's x in s: out[r * 4 + k]. A register holds two outputs' 32 codes (16 bytes each,
 * side by side in a group): lanes 0-7 sum output 2p's products, lanes 8-15 output 2p + 1's. */
ZBF void tile_q4bf(const int R, const uint8_t* p, const uint16_t* xb, const float* s, int64_t I,
                   float* out) {
    __m512 acc[2][8];
    __m256 acc_m[8]; /* lanes 4-7: each output's sum over groups of (m - 128 d) times x's sum */
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        acc[0][r] = acc[1][r] = _mm512_setzero_ps();
        acc_m[r] = _mm256_setzero_ps();
    }
    const __m512i nib = _mm512_set1_epi16(15), magic = _mm512_set1_epi16(BF16_MAGIC);
    /* lanes of the group's scales (d0-d3, m0-m3) that each pair's d takes */
    const __m512i at_d[2] = {_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                             _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2)};
    const __m256 c128 = _mm256_set1_ps(128.f);
    const int64_t G = I / 32;
    for (int64_t g = 0; g < G; g++, p += Q4_GROUP) {
        fetch_ahead(p);
        __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 64))); /* d0-3, m0-3 */
        __m256 mp = _mm256_fnmadd_ps(c128, _mm256_permute2f128_ps(sc, sc, 0x00), sc); /* 4-7: m - 128 d */
        __m512bh lo[2], hi[2];
        __m512 d[2];
#pragma GCC unroll 2
        for (int q = 0; q < 2; q++) {
            /* bytes of outputs 2q and 2q + 1: byte i holds input i (low 4 bits) and i + 16 */
            __m512i z = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(p + 32 * q)));
            lo[q] = (__m512bh)_mm512_ternarylogic_epi32(z, nib, magic, 0xEA); /* (z & 15) | magic */
            hi[q] = (__m512bh)_mm512_or_si512(_mm512_srli_epi16(z, 4), magic);
            d[q] = _mm512_permutexvar_ps(at_d[q], _mm512_castps256_ps512(sc));
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const uint16_t* xr = xb + r * I + 32 * g;
            __m512bh xl = (__m512bh)_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)xr));
            __m512bh xh = (__m512bh)_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(xr + 16)));
            acc_m[r] = _mm256_fmadd_ps(mp, _mm256_set1_ps(s[r * G + g]), acc_m[r]);
#pragma GCC unroll 2
            for (int q = 0; q < 2; q++) {
                __m512 t = _mm512_dpbf16_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), lo[q], xl), hi[q], xh);
                acc[q][r] = _mm512_fmadd_ps(t, d[q], acc[q][r]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        float m[8];
        _mm256_storeu_ps(m, acc_m[r]);
#pragma GCC unroll 2
        for (int q = 0; q < 2; q++) {
            float h[16];
            _mm512_storeu_ps(h, halves8(acc[q][r]));
            out[r * 4 + 2 * q] = h[0] + m[4 + 2 * q];
            out[r * 4 + 2 * q + 1] = h[8] + m[5 + 2 * q];
        }
    }
}

/* Outputs k0 .. k0 + NO - 1 of a block of W_BF16 weights times R rows of bf16 x: out[r * 4 + k]. */
ZBF void tile_bf16(const int NO, const int R, const uint16_t* w, int k0, const uint16_t* xb,
                   int64_t I, float* out) {
    __m512 acc[4][8];
    zeros(NO, R, acc);
    for (int64_t g = 0; g < I / 32; g++, w += 128) {
        fetch_ahead(w);
        fetch_ahead(w + 64);
        __m512bh wk[4];
#pragma GCC unroll 4
        for (int k = 0; k < NO; k++) wk[k] = (__m512bh)_mm512_loadu_si512(w + 32 * (k0 + k));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512bh xr = (__m512bh)_mm512_loadu_si512(xb + r * I + 32 * g);
#pragma GCC unroll 4
            for (int k = 0; k < NO; k++) acc[k][r] = _mm512_dpbf16_ps(acc[k][r], wk[k], xr);
        }
    }
    sums_out(NO, R, acc, k0, out);
}

/* A block times R rows (1-8), R a constant for the tiles. */
ZBF void block_bf(const int fmt, const int R, const void* w, const uint16_t* xb, const float* s,
                  int64_t I, float* out) {
    if (fmt == W_Q4) tile_q4bf(R, w, xb, s, I, out);
    else if (R <= 4) tile_bf16(4, R, w, 0, xb, I, out);
    else {
        tile_bf16(2, R, w, 0, xb, I, out);
        tile_bf16(2, R, w, 2, xb, I, out);
    }
}

ZBF void block_rows_bf(const int fmt, int rows, const void* w, const uint16_t* xb, const float* s,
                       int64_t I, float* out) {
#define BLOCK_BF(R) block_bf(fmt, R, w, xb, s, I, out)
    ROWS_AS_CONSTANT(rows, BLOCK_BF)
#undef BLOCK_BF
}

/* x's M rows rounded to bf16 (nearest even) into xb, and each group of 32's sum of the rounded
 * values into s (tile_q4bf's minimums multiply it). */
/* Not inlined: linear512 itself runs on CPUs without AVX512-BF16, so it must not hold these. */
#define ZBF_CALL __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c"), noinline)) static

ZBF_CALL void round_rows(const float* x, int64_t M, int64_t I, uint16_t* xb, float* s) {
    const __m512i ones = _mm512_set1_epi16(0x3F80); /* bf16 1.0 */
    for (int64_t i = 0; i < M * I / 32; i++) {
        __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 32 * i + 16), _mm512_loadu_ps(x + 32 * i));
        _mm512_storeu_si512(xb + 32 * i, (__m512i)b);
        s[i] = _mm512_reduce_add_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), b, (__m512bh)ones));
    }
}

#endif /* HAVE_BF16 */

/* Blocks first .. last - 1 times the M rows, 8 at a time: CALL computes block w (4 outputs)
 * times rows m .. m + rows - 1 into out[r * 4 + k], then the sums go to y with the bias. */
#define EACH_BLOCK(CALL)                                                                        \
    for (int64_t m = 0; m < M; m += 8) {                                                        \
        int rows = M - m < 8 ? (int)(M - m) : 8;                                                \
        for (int64_t blk = first; blk < last; blk++) {                                          \
            float out[32];                                                                      \
            const void* w = block_at(W, blk, I);                                                \
            CALL;                                                                               \
            put(out, 4, 1, rows, O - 4 * blk < 4 ? O - 4 * blk : 4, y + m * O, O, 4 * blk, bias); \
        }                                                                                       \
    }

#if HAVE_BF16
/* A chunk of blocks in bf16 arithmetic, over x rounded by round_rows into xb and s. */
ZBF_CALL void chunk_bf(const weights_t* W, int64_t first, int64_t last, const uint16_t* xb,
                       const float* s, const float* bias, float* y, int64_t M, int64_t I, int64_t O) {
    if (W_STORED(W->format) == W_Q4)
        EACH_BLOCK(block_rows_bf(W_Q4, rows, w, xb + m * I, s + m * (I / 32), I, out))
    else
        EACH_BLOCK(block_rows_bf(W_BF16, rows, w, xb + m * I, s + m * (I / 32), I, out))
}

#endif /* HAVE_BF16 */

#define XB_STACK 8192 /* x's bf16 copy on the stack up to this many values (a decode step's) */

/* linear512 over x's bf16 copy (xb, s: from round_rows, for the bf16 formats; else unused). */
__attribute__((target("avx512f,avx2,fma,f16c"))) static void linear512_over(
    const float* x, const weights_t* W, const float* bias, float* y, int64_t M, int64_t I,
    int64_t O, uint16_t* xb, float* s) {
    const int fmt = W_STORED(W->format);
    int bf = W->format != fmt || fmt == W_BF16;
    if (bf) {
#if HAVE_BF16
        round_rows(x, M, I, xb, s);
#endif
    }
    int64_t blocks = (O + 3) / 4;
    int64_t per_chunk = L2_BYTES / (16 * I) > 0 ? L2_BYTES / (16 * I) : 1;
    int64_t chunks = (blocks + per_chunk - 1) / per_chunk;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t first = c * per_chunk, last = first + per_chunk < blocks ? first + per_chunk : blocks;
        if (bf) {
#if HAVE_BF16
            chunk_bf(W, first, last, xb, s, bias, y, M, I, O);
#endif
        } else if (fmt == W_Q4) EACH_BLOCK(block_rows(W_Q4, rows, w, x + m * I, I, out))
        else if (fmt == W_Q8) EACH_BLOCK(block_rows(W_Q8, rows, w, x + m * I, I, out))
        else EACH_BLOCK(block_rows(W_F32, rows, w, x + m * I, I, out))
    }
}

/* Threads split the output blocks in chunks that fit L2; each block meets the rows 8 at a time.
 * bf16 arithmetic (W_BF16, W_Q4 | W_BF16X: kernel.c's linear sends them here) first rounds x,
 * into the stack for a decode step's few rows, else into the heap. */
__attribute__((target("avx512f,avx2,fma,f16c"))) void linear512(
    const float* x, const weights_t* W, const float* bias, float* y, int64_t M, int64_t I, int64_t O) {
    if (W_STORED(W->format) == W->format && W->format != W_BF16) {
        linear512_over(x, W, bias, y, M, I, O, NULL, NULL);
    } else if (M * I <= XB_STACK) {
        uint16_t xb[XB_STACK];
        float s[XB_STACK / 32];
        linear512_over(x, W, bias, y, M, I, O, xb, s);
    } else {
        uint16_t* xb = malloc((size_t)(M * I) * sizeof(uint16_t));
        float* s = malloc((size_t)(M * I / 32) * sizeof(float));
        int64_t piece = XB_STACK / I; /* rows a stack copy holds */
        if (xb && s) linear512_over(x, W, bias, y, M, I, O, xb, s);
        else if (piece > 0) /* no memory for x's copy: the rows in pieces the stack holds */
            for (int64_t m = 0; m < M; m += piece)
                linear512(x + m * I, W, bias, y + m * O, M - m < piece ? M - m : piece, I, O);
        else if (W->format != W_BF16) { /* codes: the exact fp32 tiles need no copy */
            weights_t exact = {W->data, W_STORED(W->format)};
            linear512_over(x, &exact, bias, y, M, I, O, NULL, NULL);
        } else
            abort(); /* out of memory with bf16 weights wider than the stack copy: the worker
                      * dies and restarts (model/engines/worker.py), rather than answer zeros */
        free(xb);
        free(s);
    }
}

int64_t kernel_bf16(void) {
#if HAVE_BF16
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}
