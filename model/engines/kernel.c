/* The CPU linear layer: y = x W^T + b in fp32 with AVX2 + FMA, on torch's own OpenMP team
 * (libgomp is loaded once, by torch; this library links the same soname). On a CPU with
 * AVX-512F, linear() hands codes (and fp32 steps of a few rows) to kernel512.c's tiles.
 *
 * Why: a decode step multiplies 1-8 rows by every weight, so it is bound by reading the
 * weights. At one row oneDNN's inner product read them at 12-22 GB/s here, this at 20-28 of the
 * ~30 the machine streams (bench/RESULTS.md, "Engine speed on CPU, part 5"). A prompt or a fill's
 * scoring multiplies tens to hundreds of rows, which is bound by the FMA units instead: there
 * the panels below run at up to ~175 of the two cores' ~190 GFLOPS (part 7).
 *
 * Layout (packed by model/engines/kernel.py): the output rows in blocks of 4, and within a block,
 * for every 8 inputs, the 4 rows' 8 weights side by side, so a block is read as one stream:
 *   P[((blk * I/8) + j) * 32 + k * 8 + l] = W[4 blk + k][8 j + l]   (rows past O are zero)
 * I must be a multiple of 8. Threads split the output blocks in chunks that fit L2.
 *
 * Rows path (1-6 rows, and 9-15): a tile is 4 output rows times 1-3 input rows, summed along
 * the inputs in 8-wide registers: 12 FMAs per 11 loads, plus 12 horizontal sums per tile.
 *
 * Panel path (7-8 rows, and 16 on): x is first copied transposed into panels (x^T: each
 * input's rows side by side), and each weight is broadcast once against whole registers of
 * rows, with no horizontal sums. A wide panel is 24 rows (3 registers) times one block's 4
 * outputs: 12 FMAs per 7 loads. A narrow one, for a decode step of 7-8 rows, is 8 rows times 3
 * blocks read side by side: 12 FMAs per 13 loads, but the loads of weights are as many as the
 * rows path's and x stays in a register. Measured side by side (part 7): 1.2-1.4x the rows path
 * at 8 rows and at 16-300 rows; at 9-15 rows and below 7 the rows path is as fast or faster.
 *
 * Codes (W_Q4, W_Q8; kernel.h): the row tiles turn each register of codes into its fp32
 * weights as they read it; the panels turn a chunk into fp32 first, into a buffer of the
 * thread's that stays in L2 while every panel of the pass reads it. Either way the sums are
 * the fp32 weights' own, added in the same order. SmolLM2 at one row: 2.1x the fp32 layers, at
 * 8 rows 1.3x, at 160 level (bench/RESULTS.md, part 8).
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"

#define FMA4(acc, xv)                                        \
    acc##0 = _mm256_fmadd_ps(w0, xv, acc##0);                \
    acc##1 = _mm256_fmadd_ps(w1, xv, acc##1);                \
    acc##2 = _mm256_fmadd_ps(w2, xv, acc##2);                \
    acc##3 = _mm256_fmadd_ps(w3, xv, acc##3)

static inline __m256 half_at(const uint8_t* at) {
    uint16_t h;
    memcpy(&h, at, sizeof h);
    return _mm256_set1_ps(_cvtsh_ss(h));
}

/* A group's steps d[k] and minimums m[k] (zero for W_Q8), broadcast. */
static inline __attribute__((always_inline)) void scales(const int fmt, const uint8_t* g,
                                                         __m256 d[4], __m256 m[4]) {
    const uint8_t* at = g + (fmt == W_Q4 ? 64 : 128);
    for (int k = 0; k < 4; k++) {
        d[k] = half_at(at + 2 * k);
        m[k] = fmt == W_Q4 ? half_at(at + 8 + 2 * k) : _mm256_setzero_ps();
    }
}

/* Row k's weights 8s .. 8s + 7 of a group, as fp32. */
static inline __attribute__((always_inline)) __m256 weights8(const int fmt, const uint8_t* g,
                                                             int k, int s, __m256 d, __m256 m) {
    if (fmt == W_Q4) {
        __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(g + 16 * k + 8 * (s & 1))));
        q = s & 2 ? _mm256_srli_epi32(q, 4) : _mm256_and_si256(q, _mm256_set1_epi32(15));
        return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q), m); /* d q exact: one rounding, as d q + m */
    }
    __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(g + 32 * k + 8 * s)));
    return _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
}

/* `blocks` blocks of codes at p as fp32, in the fp32 layout at dst (the panels' weights). */
static inline __attribute__((always_inline)) void unpack(
    const int fmt, const uint8_t* p, int64_t blocks, int64_t I, float* dst) {
    int64_t GB = group_bytes(fmt);
    for (int64_t b = 0; b < blocks * (I / 32); b++, p += GB) {
        fetch_ahead(p);
        __m256 d[4], m[4];
        scales(fmt, p, d, m);
        for (int s = 0; s < 4; s++)
            for (int k = 0; k < 4; k++)
                _mm256_storeu_ps(dst + (4 * b + s) * 32 + 8 * k, weights8(fmt, p, k, s, d[k], m[k]));
    }
}

/* 4 output rows x `rows` (1-3) input rows from block w (format fmt, a constant where called);
 * out[r * 4 + k]. Each sum adds its products input by input, in every format. */
static inline __attribute__((always_inline)) void tile(const int fmt, const void* w, const float* x,
                                                       int64_t I, int rows, float* out) {
    const float *xa = x, *xb = x + (rows > 1 ? I : 0), *xc = x + (rows > 2 ? 2 * I : 0);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
#define STEP(j)                                                                          \
    {                                                                                    \
        __m256 va = _mm256_loadu_ps(xa + 8 * (j));                                       \
        FMA4(a, va);                                                                     \
        if (rows > 1) { __m256 vb = _mm256_loadu_ps(xb + 8 * (j)); FMA4(b, vb); }        \
        if (rows > 2) { __m256 vc = _mm256_loadu_ps(xc + 8 * (j)); FMA4(c, vc); }        \
    }
    if (fmt == W_F32) {
        const float* p = w;
        for (int64_t j = 0; j < I / 8; j++, p += 32) {
            fetch_ahead(p);
            __m256 w0 = _mm256_loadu_ps(p), w1 = _mm256_loadu_ps(p + 8);
            __m256 w2 = _mm256_loadu_ps(p + 16), w3 = _mm256_loadu_ps(p + 24);
            STEP(j)
        }
    } else {
        const uint8_t* p = w;
        for (int64_t g = 0; g < I / 32; g++, p += group_bytes(fmt)) {
            fetch_ahead(p);
            __m256 d[4], m[4];
            scales(fmt, p, d, m);
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) {
                __m256 w0 = weights8(fmt, p, 0, s, d[0], m[0]);
                __m256 w1 = weights8(fmt, p, 1, s, d[1], m[1]);
                __m256 w2 = weights8(fmt, p, 2, s, d[2], m[2]);
                __m256 w3 = weights8(fmt, p, 3, s, d[3], m[3]);
                STEP(4 * g + s)
            }
        }
    }
#undef STEP
    out[0] = hsum(a0); out[1] = hsum(a1); out[2] = hsum(a2); out[3] = hsum(a3);
    out[4] = hsum(b0); out[5] = hsum(b1); out[6] = hsum(b2); out[7] = hsum(b3);
    out[8] = hsum(c0); out[9] = hsum(c1); out[10] = hsum(c2); out[11] = hsum(c3);
}

static void rows_path(const float* x, const weights_t* W, const float* bias, float* y,
                      int64_t M, int64_t I, int64_t O) {
    int64_t blocks = (O + 3) / 4;
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
                    const void* w = block_at(W, blk, I);
                    if (W->format == W_Q4) tile(W_Q4, w, x + m * I, I, rows, out);
                    else if (W->format == W_Q8) tile(W_Q8, w, x + m * I, I, rows, out);
                    else tile(W_F32, w, x + m * I, I, rows, out);
                    put(out, 4, 1, rows, n, y + m * O, O, o0, bias);
                }
            }
        }
    }
}

#define PANEL 24 /* rows per wide panel: 3 registers x a block's 4 outputs, 12 accumulators */
#define WIDE_MIN 16 /* from here wide panels are faster (1.2x at 16 rows, 1.3x at 24+) */
#define NARROW_MIN 7 /* from here to 8 rows, one narrow panel of 8 rows x 3 blocks */
#define PASS_BYTES (512 * 1024) /* the packed rows of one pass, kept in L2 across the weights */

/* One block (4 outputs) times V registers (8V rows) of a wide panel; V is a constant where
 * called, so the compiler keeps every accumulator in a register. */
static inline __attribute__((always_inline)) void wide_tile(
    const int V, const float* p, const float* xp, int64_t J, float* y, int64_t O, int64_t o0,
    int rows, const float* bias) {
    const __m256 z = _mm256_setzero_ps();
    __m256 a0 = z, a1 = z, a2 = z, b0 = z, b1 = z, b2 = z, c0 = z, c1 = z, c2 = z;
    __m256 d0 = z, d1 = z, d2 = z;
    for (int64_t j = 0; j < J; j++, p += 32, xp += 8 * PANEL) {
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            const float* xl = xp + l * PANEL;
            __m256 x0 = _mm256_loadu_ps(xl);
            __m256 x1 = V > 1 ? _mm256_loadu_ps(xl + 8) : z;
            __m256 x2 = V > 2 ? _mm256_loadu_ps(xl + 16) : z;
#define OUTPUT(acc, k)                                                     \
            {                                                              \
                __m256 w = _mm256_broadcast_ss(p + 8 * (k) + l);           \
                acc##0 = _mm256_fmadd_ps(w, x0, acc##0);                   \
                if (V > 1) acc##1 = _mm256_fmadd_ps(w, x1, acc##1);        \
                if (V > 2) acc##2 = _mm256_fmadd_ps(w, x2, acc##2);        \
            }
            OUTPUT(a, 0) OUTPUT(b, 1) OUTPUT(c, 2) OUTPUT(d, 3)
#undef OUTPUT
        }
    }
    float t[4][PANEL];
    __m256 acc[4][3] = {{a0, a1, a2}, {b0, b1, b2}, {c0, c1, c2}, {d0, d1, d2}};
    for (int k = 0; k < 4; k++)
        for (int v = 0; v < V; v++) _mm256_storeu_ps(t[k] + 8 * v, acc[k][v]);
    put(t[0], 1, PANEL, rows, O - o0 < 4 ? O - o0 : 4, y, O, o0, bias);
}

/* NB blocks (4NB outputs, NB a constant where called) times one narrow panel of 8 rows: each
 * x register meets 4NB broadcast weights, from NB blocks read side by side. */
static inline __attribute__((always_inline)) void narrow_tile(
    const int NB, const float* p, int64_t J, const float* xp, float* y, int64_t O, int64_t o0,
    int rows, const float* bias) {
    const __m256 z = _mm256_setzero_ps();
    __m256 a[3][4] = {{z, z, z, z}, {z, z, z, z}, {z, z, z, z}};
    const float *p0 = p, *p1 = p + J * 32, *p2 = p + 2 * J * 32;
    for (int64_t j = 0; j < J; j++, p0 += 32, p1 += 32, p2 += 32, xp += 64) {
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            __m256 xv = _mm256_loadu_ps(xp + 8 * l);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                a[0][k] = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + 8 * k + l), xv, a[0][k]);
                if (NB > 1)
                    a[1][k] = _mm256_fmadd_ps(_mm256_broadcast_ss(p1 + 8 * k + l), xv, a[1][k]);
                if (NB > 2)
                    a[2][k] = _mm256_fmadd_ps(_mm256_broadcast_ss(p2 + 8 * k + l), xv, a[2][k]);
            }
        }
    }
    float t[12][8];
    for (int b = 0; b < NB; b++)
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(t[4 * b + k], a[b][k]);
    put(t[0], 1, 8, rows, O - o0 < 4 * NB ? O - o0 : 4 * NB, y, O, o0, bias);
}

/* Rows m..m+7 of x (those below `end`; zeros past it) into a panel's 8 columns at dst, whose
 * input i is at dst[i * width]: 8x8 blocks transposed in registers. */
static void pack8(const float* x, int64_t m, int64_t end, int64_t I, float* dst, int width) {
    const __m256 z = _mm256_setzero_ps();
    for (int64_t i = 0; i < I; i += 8) {
        __m256 r[8];
        for (int k = 0; k < 8; k++) r[k] = m + k < end ? _mm256_loadu_ps(x + (m + k) * I + i) : z;
        __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float* d = dst + i * width;
        _mm256_storeu_ps(d + 0 * width, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(d + 1 * width, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(d + 2 * width, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(d + 3 * width, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(d + 4 * width, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(d + 5 * width, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(d + 6 * width, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(d + 7 * width, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
}

/* Output blocks per chunk for the panels: as many chunks per thread as the threads can get
 * evenly, each fitting L2 and a whole number of tiles (`step` blocks). */
static int64_t panel_chunk(int64_t blocks, int64_t I, int64_t step, int64_t threads) {
    int64_t per_chunk = L2_BYTES / (16 * I) > step ? L2_BYTES / (16 * I) : step;
    int64_t chunks = (blocks + per_chunk - 1) / per_chunk;
    chunks = (chunks + threads - 1) / threads * threads;
    per_chunk = (blocks + chunks - 1) / chunks;
    return (per_chunk + step - 1) / step * step;
}

/* x copied transposed into panels of `width` rows (8 or PANEL), pass by pass; threads split
 * the output blocks in chunks that fit L2, and run every panel of a pass over their chunks.
 * Codes are first turned into fp32 a chunk at a time, into the thread's part of wbuf
 * (per_chunk blocks each), read by every panel of the pass. */
static void panel_path(const float* x, const weights_t* W, const float* bias, float* y,
                       int64_t M, int64_t I, int64_t O, float* xp, int64_t pass, int width,
                       int64_t per_chunk, float* wbuf) {
    int64_t blocks = (O + 3) / 4, J = I / 8;
    int64_t step = width == PANEL ? 1 : 3; /* blocks per tile */
    int64_t chunks = (blocks + per_chunk - 1) / per_chunk;
#pragma omp parallel
    {
        float* mine = wbuf ? wbuf + omp_get_thread_num() * per_chunk * 4 * I : NULL;
        for (int64_t m0 = 0; m0 < M; m0 += pass) {
            int64_t rows_in = M - m0 < pass ? M - m0 : pass;
            int64_t panels = (rows_in + width - 1) / width, eights = width / 8;
#pragma omp for schedule(static) /* 8 rows at a time; a wide panel is 3 of them side by side */
            for (int64_t g = 0; g < panels * eights; g++) {
                float* dst = xp + g / eights * width * I + g % eights * 8;
                pack8(x, m0 + 8 * g, m0 + rows_in, I, dst, width);
            } /* the implied barrier: every panel is packed before any is read */
#pragma omp for schedule(static)
            for (int64_t c = 0; c < chunks; c++) {
                int64_t first = c * per_chunk;
                int64_t last = first + per_chunk < blocks ? first + per_chunk : blocks;
                const void* at = block_at(W, first, I);
                if (mine && W->format == W_Q4) unpack(W_Q4, at, last - first, I, mine);
                else if (mine) unpack(W_Q8, at, last - first, I, mine);
                const float* P = mine ? mine : at;
                for (int64_t pn = 0; pn < panels; pn++) {
                    int64_t left = rows_in - pn * width;
                    int rows = left < width ? (int)left : width;
                    const float* xq = xp + pn * width * I;
                    float* yq = y + (m0 + pn * width) * O;
                    for (int64_t blk = first; blk < last; blk += step) {
                        const float* pb = P + (blk - first) * J * 32;
                        int64_t nb = last - blk;
                        if (width == 8) {
                            if (nb >= 3) narrow_tile(3, pb, J, xq, yq, O, 4 * blk, rows, bias);
                            else if (nb == 2) narrow_tile(2, pb, J, xq, yq, O, 4 * blk, rows, bias);
                            else narrow_tile(1, pb, J, xq, yq, O, 4 * blk, rows, bias);
                        } else if (rows > 16) wide_tile(3, pb, xq, J, yq, O, 4 * blk, rows, bias);
                        else if (rows > 8) wide_tile(2, pb, xq, J, yq, O, 4 * blk, rows, bias);
                        else wide_tile(1, pb, xq, J, yq, O, 4 * blk, rows, bias);
                    }
                }
            } /* and here: the next pass packs over this one's panels */
        }
    }
}

/* Which tiles run (kernel.py's AVX2, AVX512, AVX512_ALL): AVX-512's where the CPU has it, for
 * codes at any number of rows and fp32 up to F32_ROWS512 rows (from 8 rows AVX2's panels, which
 * read each fp32 weight once per 8 or 24 rows with no conversion, are faster); AVX512_ALL puts
 * fp32 there too, to compare the formats on one path. */
#define F32_ROWS512 4
/* W_BF16X codes in bf16 arithmetic up to this many rows: there they skip most of the fp32 tiles'
 * conversions (SmolLM2's step: 1.18-1.29x at 1 row, 1.07-1.15x at 2); from 3 rows the fp32
 * tiles, which turn each code once for all the rows, are as fast (1.00-1.04x at 3, bench/
 * RESULTS.md, "Engine speed on CPU, part 11"), and exact. */
#define BF16X_ROWS 2
static int64_t isa = -1;

int64_t kernel_isa(int64_t want) {
    int64_t has = __builtin_cpu_supports("avx512f") != 0;
    if (want >= 0) isa = has ? want : 0;
    else if (isa < 0) isa = has;
    return isa;
}

void linear(const float* x, const weights_t* W, const float* bias, float* y,
            int64_t M, int64_t I, int64_t O) {
    /* bf16 arithmetic (only packed where kernel_bf16()): codes only up to BF16X_ROWS rows */
    if (W->format == W_BF16 || (W->format & W_BF16X && M <= BF16X_ROWS)) {
        linear512(x, W, bias, y, M, I, O);
        return;
    }
    weights_t exact = {W->data, W_STORED(W->format)};
    W = &exact;
    int64_t mode = isa < 0 ? kernel_isa(-1) : isa;
    if (mode && I % 32 == 0 && (W->format != W_F32 || M <= F32_ROWS512 || mode == 2)) {
        linear512(x, W, bias, y, M, I, O);
        return;
    }
    if (M >= WIDE_MIN || (M >= NARROW_MIN && M <= 8)) {
        int width = M >= WIDE_MIN ? PANEL : 8;
        int64_t pass = PASS_BYTES / (4 * I) / width * width;
        int64_t all = (M + width - 1) / width * width;
        pass = pass < width ? width : pass > all ? all : pass;
        int64_t threads = omp_get_max_threads(), blocks = (O + 3) / 4;
        int64_t per_chunk = panel_chunk(blocks, I, width == PANEL ? 1 : 3, threads);
        int64_t unpacked = W->format == W_F32 ? 0 : threads * per_chunk * 4 * I;
        float* xp = malloc((size_t)(pass * I + unpacked) * sizeof(float));
        if (xp) {
            panel_path(x, W, bias, y, M, I, O, xp, pass, width, per_chunk,
                       unpacked ? xp + pass * I : NULL);
            free(xp);
            return;
        }
    }
    rows_path(x, W, bias, y, M, I, O);
}
