/* A Llama decoder layer for a few rows (a decode step) in fp32, beside kernel.c's linear.
 *
 * Why: at one row, kernel.c reads a step's weights in ~20 ms, but the step took ~36: the rest
 * was about 35 small torch ops per layer (norms, rotary, the paged cache's copies, SDPA, adds),
 * each a few microseconds of dispatch for a few hundred flops. Here a layer is one call
 * (layer_paged: continuous batching's paged cache) or two on generate()'s caches: layer_in,
 * then layer_dense (causal attention and the rest) or layer_out around torch's attention.
 * model/engines/fused.py calls them.
 *
 * Same arithmetic as transformers' LlamaDecoderLayer, in the same order up to the order of
 * additions inside a sum:
 *   h = rmsnorm(x) * w1;  q, k, v = h Wq, h Wk, h Wv (+ bias);  rotary on q, k
 *   a = softmax(q k^T * scale, causal) v            (grouped-query: nh / nkv heads per kv head)
 *   x2 = x + a Wo (+ bias);  y = x2 + Wd(silu(rmsnorm(x2) * w2 Wg) * (rmsnorm(x2) * w2 Wu))
 * Head size a multiple of 8, every linear's input too (kernel.c's layout).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"

/* A layer's weights (the projections packed as kernel.c reads them) and sizes; built once per
 * layer. */
typedef struct {
    const float *norm1, *norm2, *bq, *bk, *bv, *bo;
    weights_t wq, wk, wv, wo, wg, wu, wd;
    float eps, scale;
    int64_t hidden, heads, kv_heads, head_dim, inter;
} layer_t;

/* e^x for 8 floats (Cephes' expf: a degree-5 polynomial on x - n ln 2, scaled by 2^n), within
 * 2 ulp of expf; one scalar expf per value made SiLU a millisecond per layer at 8 rows. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                               _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* g = silu(g) * u = g / (1 + e^-g) * u, n a multiple of 8 */
static void silu_mul(float* g, const float* u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 d = _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, v)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(v, d), _mm256_loadu_ps(u + i)));
    }
}

/* y = w * (x / sqrt(mean(x^2) + eps)), row by row; H a multiple of 8 */
static void rmsnorm(const float* x, const float* w, float eps, int64_t T, int64_t H, float* y) {
    for (int64_t t = 0; t < T; t++) {
        const float* xr = x + t * H;
        float* yr = y + t * H;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t i = 0; i < H; i += 8) {
            __m256 v = _mm256_loadu_ps(xr + i);
            acc = _mm256_fmadd_ps(v, v, acc);
        }
        __m256 r = _mm256_set1_ps(1.f / sqrtf(hsum(acc) / (float)H + eps));
        for (int64_t i = 0; i < H; i += 8)
            _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_loadu_ps(w + i),
                                                   _mm256_mul_ps(_mm256_loadu_ps(xr + i), r)));
    }
}

/* q * cos + rotate_half(q) * sin, per head; cos/sin are [T, D] (two equal halves). */
static void rotary(float* q, int64_t T, int64_t heads, int64_t D, const float* cos, const float* sin) {
    int64_t half = D / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *c = cos + t * D, *s = sin + t * D;
        for (int64_t h = 0; h < heads; h++) {
            float* v = q + (t * heads + h) * D;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}

static inline float dot(const float* a, const float* b, int64_t D) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < D; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    return hsum(acc);
}

/* The largest of n floats (-inf for none). */
static inline float row_max(const float* v, int64_t n) {
    __m256 big = _mm256_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) big = _mm256_max_ps(big, _mm256_loadu_ps(v + j));
    float lanes[8], top = -INFINITY;
    _mm256_storeu_ps(lanes, big);
    for (int l = 0; l < 8; l++) top = lanes[l] > top ? lanes[l] : top;
    for (; j < n; j++) top = v[j] > top ? v[j] : top;
    return top;
}

/* sum_j e^(v[j] - top), top finite; with e, each term is written there too (e may be v). */
static inline float sum_exp(const float* v, float* e, int64_t n, float top) {
    __m256 acc = _mm256_setzero_ps(), m = _mm256_set1_ps(top);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 x = exp8(_mm256_sub_ps(_mm256_loadu_ps(v + j), m));
        if (e) _mm256_storeu_ps(e + j, x);
        acc = _mm256_add_ps(acc, x);
    }
    float sum = hsum(acc);
    for (; j < n; j++) {
        float x = expf(v[j] - top);
        if (e) e[j] = x;
        sum += x;
    }
    return sum;
}

/* h, then q, k, v (rotated) of T rows; scratch h: T * hidden. */
void layer_in(const layer_t* L, const float* x, int64_t T, const float* cos, const float* sin,
              float* h, float* q, float* k, float* v) {
    int64_t H = L->hidden, D = L->head_dim;
    rmsnorm(x, L->norm1, L->eps, T, H, h);
    linear(h, &L->wq, L->bq, q, T, H, L->heads * D);
    linear(h, &L->wk, L->bk, k, T, H, L->kv_heads * D);
    linear(h, &L->wv, L->bv, v, T, H, L->kv_heads * D);
    rotary(q, T, L->heads, D, cos, sin);
    rotary(k, T, L->kv_heads, D, cos, sin);
}

/* y = the layer's output from its input x and attention a [T, heads * D];
 * scratch: T * (hidden + 2 * inter). */
void layer_out(const layer_t* L, const float* x, const float* a, int64_t T, float* y, float* scratch) {
    int64_t H = L->hidden, F = L->inter, n = T * H;
    float *o = scratch, *g = o + n, *u = g + T * F;
    linear(a, &L->wo, L->bo, o, T, L->heads * L->head_dim, H);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] + o[i];
    rmsnorm(y, L->norm2, L->eps, T, H, o);
    linear(o, &L->wg, NULL, g, T, H, F);
    linear(o, &L->wu, NULL, u, T, H, F);
    silu_mul(g, u, T * F);
    linear(g, &L->wd, NULL, o, T, F, H);
    for (int64_t i = 0; i < n; i++) y[i] += o[i];
}

#define KEY(j) ((idx ? idx[j] : (j)) * stride)
#define HEADS 3 /* query heads of one key/value head handled together (GQA groups of 3 here) */

/* Up to HEADS query heads (q: head after head) over the same n keys: key j at kb + KEY(j), value
 * at vb + KEY(j), with KEY(j) = idx[j] * stride, or j * stride without an index. Softmax in fp32
 * with the maximum subtracted, as SDPA computes it. p: scratch of HEADS * n floats. Scores take
 * 4 keys at a time and the values 4 independent accumulators per head, so neither waits on one
 * chain of dependent FMAs: one key at a time was ~25 ns per key and head. */
static void attend(const float* q, int64_t g, const float* kb, const float* vb,
                   const int64_t* idx, int64_t stride, int64_t n, int64_t D, float scale,
                   float* o, float* p) {
    for (int64_t h = 0; h < g; h++) {
        const float* qv = q + h * D;
        float* ph = p + h * n;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const float *k0 = kb + KEY(j), *k1 = kb + KEY(j + 1), *k2 = kb + KEY(j + 2),
                        *k3 = kb + KEY(j + 3);
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t d = 0; d < D; d += 8) {
                __m256 x = _mm256_loadu_ps(qv + d);
                a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + d), a0);
                a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k1 + d), a1);
                a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k2 + d), a2);
                a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k3 + d), a3);
            }
            ph[j] = hsum(a0) * scale;
            ph[j + 1] = hsum(a1) * scale;
            ph[j + 2] = hsum(a2) * scale;
            ph[j + 3] = hsum(a3) * scale;
        }
        for (; j < n; j++) ph[j] = dot(qv, kb + KEY(j), D) * scale;
        float sum = sum_exp(ph, ph, n, row_max(ph, n));
        for (j = 0; j < n; j++) ph[j] /= sum;
    }
    /* o[h] = sum_j p[h][j] v_j, 32 values of D at a time: HEADS x 4 accumulators */
    for (int64_t d0 = 0; d0 < D; d0 += 32) {
        int64_t w = D - d0 < 32 ? (D - d0) / 8 : 4;
        __m256 acc[HEADS][4];
        for (int64_t h = 0; h < HEADS; h++)
            for (int c = 0; c < 4; c++) acc[h][c] = _mm256_setzero_ps();
        if (g == HEADS && w == 4) { /* constant bounds: the 12 sums stay in registers */
            for (int64_t j = 0; j < n; j++) {
                const float* vj = vb + KEY(j) + d0;
                __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
                __m256 v2 = _mm256_loadu_ps(vj + 16), v3 = _mm256_loadu_ps(vj + 24);
                for (int h = 0; h < HEADS; h++) {
                    __m256 ph = _mm256_set1_ps(p[h * n + j]);
                    acc[h][0] = _mm256_fmadd_ps(ph, v0, acc[h][0]);
                    acc[h][1] = _mm256_fmadd_ps(ph, v1, acc[h][1]);
                    acc[h][2] = _mm256_fmadd_ps(ph, v2, acc[h][2]);
                    acc[h][3] = _mm256_fmadd_ps(ph, v3, acc[h][3]);
                }
            }
        } else for (int64_t j = 0; j < n; j++) {
            const float* vj = vb + KEY(j) + d0;
            for (int c = 0; c < w; c++) {
                __m256 v = _mm256_loadu_ps(vj + 8 * c);
                for (int64_t h = 0; h < g; h++)
                    acc[h][c] = _mm256_fmadd_ps(_mm256_set1_ps(p[h * n + j]), v, acc[h][c]);
            }
        }
        for (int64_t h = 0; h < g; h++)
            for (int c = 0; c < w; c++) _mm256_storeu_ps(o + h * D + d0 + 8 * c, acc[h][c]);
    }
}

/* The heads of one key/value head, HEADS at a time, with p on the stack or the heap. */
static void attend_heads(const float* q, int64_t group, const float* kb, const float* vb,
                         const int64_t* idx, int64_t stride, int64_t n, int64_t D, float scale,
                         float* o) {
    float stack[HEADS * 1024], *p = n <= 1024 ? stack : malloc(HEADS * n * sizeof(float));
    for (int64_t h = 0; h < group; h += HEADS) {
        int64_t g = group - h < HEADS ? group - h : HEADS;
        attend(q + h * D, g, kb, vb, idx, stride, n, D, scale, o + h * D, p);
    }
    if (p != stack) free(p);
}

/* Attention over continuous batching's paged cache (transformers 5.24's index path): this
 * step's k/v rows go to the cache rows `write_index`, then sequence s's queries (rows cu_q[s]
 * to cu_q[s+1]) read its keys at read_index[cu_k[s] .. cu_k[s+1]], the last of them its own
 * tokens: query i of s sees its first nk - nq + i + 1 keys (the causal mask transformers
 * builds). No read index (every sequence a whole prompt): the keys are the rows just written. */
static void paged_attention(const layer_t* L, const float* q, const float* k, const float* v,
                            float* kc, float* vc, const int64_t* write_index, int64_t T,
                            const int64_t* read_index, int64_t n_read, const int32_t* cu_q,
                            const int32_t* cu_k, int64_t S, float* out) {
    int64_t nh = L->heads, D = L->head_dim, row = L->kv_heads * D, group = nh / L->kv_heads;
    for (int64_t t = 0; t < T; t++) {
        memcpy(kc + write_index[t] * row, k + t * row, row * sizeof(float));
        memcpy(vc + write_index[t] * row, v + t * row, row * sizeof(float));
    }
    const int64_t* rd = n_read ? read_index : write_index;
    const int32_t* ck = n_read ? cu_k : cu_q;
    int64_t nkv = L->kv_heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t item = 0; item < T * nkv; item++) {
        int64_t t = item / nkv, g = item % nkv, s = 0, h = g * group;
        while (s + 1 < S && cu_q[s + 1] <= t) s++;
        int64_t nq = cu_q[s + 1] - cu_q[s], nk = ck[s + 1] - ck[s];
        attend_heads(q + (t * nh + h) * D, group, kc + g * D, vc + g * D, rd + ck[s], row,
                     nk - nq + (t - cu_q[s]) + 1, D, L->scale, out + (t * nh + h) * D);
    }
}

/* layer_dense's attention alone, into a [B * T, heads * D] (the prompt path's: fused.py). */
void attention_dense(const layer_t* L, const float* q, const float* k, const float* v,
                     int64_t kb, int64_t kh, int64_t vb, int64_t vh, int64_t n, int64_t B,
                     int64_t T, const int64_t* start, float* a) {
    int64_t nh = L->heads, D = L->head_dim, group = nh / L->kv_heads;
    int64_t nkv = L->kv_heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t item = 0; item < B * T * nkv; item++) {
        int64_t b = item / (T * nkv), t = item / nkv % T, g = item % nkv;
        int64_t at = ((b * T + t) * nh + g * group) * D, s = start ? start[b] : 0;
        attend_heads(q + at, group, k + b * kb + g * kh + s * D, v + b * vb + g * vh + s * D,
                     NULL, D, n - T + t + 1 - s, D, L->scale, a + at);
    }
}

/* The prompt path's small ops (fused.py, FusedForward._prompt: a prompt's rows on oneDNN's
 * bf16 copies, whose products fused.py computes between these; transformers' layer took ~35
 * torch ops a layer for them). Rows split across the threads.
 *   prompt_norm: h = rmsnorm(x) * norm1
 *   prompt_rotary: rotary on q [T, heads, D] and k [T, kv_heads, D], in place
 *   prompt_mid: x2 = x + o; h = rmsnorm(x2) * norm2
 *   prompt_silu: g = silu(g) * u over T rows of inter */
void prompt_norm(const layer_t* L, const float* x, int64_t T, float* h) {
    int64_t H = L->hidden;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) rmsnorm(x + t * H, L->norm1, L->eps, 1, H, h + t * H);
}

void prompt_rotary(const layer_t* L, float* q, float* k, int64_t T, const float* cos,
                   const float* sin) {
    int64_t D = L->head_dim;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        rotary(q + t * L->heads * D, 1, L->heads, D, cos + t * D, sin + t * D);
        rotary(k + t * L->kv_heads * D, 1, L->kv_heads, D, cos + t * D, sin + t * D);
    }
}

void prompt_mid(const layer_t* L, const float* x, const float* o, int64_t T, float* x2, float* h) {
    int64_t H = L->hidden;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < H; i++) x2[t * H + i] = x[t * H + i] + o[t * H + i];
        rmsnorm(x2 + t * H, L->norm2, L->eps, 1, H, h + t * H);
    }
}

void prompt_silu(const layer_t* L, float* g, const float* u, int64_t T) {
    int64_t F = L->inter;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) silu_mul(g + t * F, u + t * F, F);
}

/* generate()'s cache, causal (no mask, or a causal one; fused.py checks): q [B, T, heads,
 * D] attends k, v [B, kv_heads, n, D] (batch and head strides given, positions contiguous);
 * query t sees keys start[b] .. n - T + t (start NULL: from 0; a left-padded row's first real
 * key otherwise). Then the layer's output, as layer_out. */
void layer_dense(const layer_t* L, const float* x, const float* q, const float* k,
                 const float* v, int64_t kb, int64_t kh, int64_t vb, int64_t vh, int64_t n,
                 int64_t B, int64_t T, const int64_t* start, float* y, float* scratch) {
    float* a = scratch;
    attention_dense(L, q, k, v, kb, kh, vb, vh, n, B, T, start, a);
    layer_out(L, x, a, B * T, y, a + B * T * L->heads * L->head_dim);
}

/* The whole layer on the paged cache: x [T, hidden] -> y; scratch: T * (2 * hidden +
 * 2 * heads * D + 2 * kv_heads * D + 2 * inter) floats. */
void layer_paged(const layer_t* L, const float* x, float* y, int64_t T, const float* cos,
                 const float* sin, float* kc, float* vc, const int64_t* write_index,
                 const int64_t* read_index, int64_t n_read, const int32_t* cu_q,
                 const int32_t* cu_k, int64_t S, float* scratch) {
    int64_t A = L->heads * L->head_dim, KV = L->kv_heads * L->head_dim;
    float *h = scratch, *q = h + T * L->hidden, *k = q + T * A, *v = k + T * KV, *a = v + T * KV;
    layer_in(L, x, T, cos, sin, h, q, k, v);
    paged_attention(L, q, k, v, kc, vc, write_index, T, read_index, n_read, cu_q, cu_k, S, a);
    layer_out(L, x, a, T, y, a + T * A);
}

/* out[r] = log(sum_j e^x[r][j]) for `rows` rows of n floats, side by side: the normalizer of
 * a fill's log-probabilities. torch's logsumexp took ~10 ms for a fill's ~100 x 49,152 logits
 * (several passes, with temporaries); this reads each row twice, in L2. */
void logsumexp_rows(const float* x, int64_t rows, int64_t n, float* out) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float* v = x + r * n;
        float top = row_max(v, n);
        /* all -inf: -inf; an inf: inf (as torch) */
        out[r] = isfinite(top) ? top + logf(sum_exp(v, NULL, n, top)) : top;
    }
}
