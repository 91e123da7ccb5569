/* A checkpoint's 4-bit and 8-bit codes found again in its fp32 weights (model/engines/codes.py),
 * written in kernel.h's layout of groups: only if every block of 32 inputs gives back its
 * weights to the bit.
 *
 * GGUF's Q4_1 sets a block's minimum m (fp16) as the q of its smallest weight, 0, and its step d
 * (fp16) so that the largest has q 15: d is (top - m) / 15 up to d's own rounding, that or an
 * fp16 neighbour. Q8_0 sets d = max |w| / 127, which 127 d gives back exactly. */
#include <math.h>
#include <string.h>

#include "kernel.h"

static inline uint16_t to_half(float v) { return _cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT); }
static inline float from_half(uint16_t h) { return _cvtsh_ss(h); }

/* One block's codes and scales from its 32 weights; 0 if they are not Q4_1 codes. */
static int q4_block(const float* w, uint8_t* codes, uint16_t* d_out, uint16_t* m_out) {
    float m = w[0], top = w[0];
    for (int i = 1; i < 32; i++) {
        m = w[i] < m ? w[i] : m;
        top = w[i] > top ? w[i] : top;
    }
    uint16_t mh = to_half(m);
    if (from_half(mh) != m) return 0;
    uint16_t guess = to_half((top - m) / 15.f);
    for (int step = 0; step < 3; step++) {
        uint16_t dh = (uint16_t)(guess + (step == 1) - (step == 2));
        float d = from_half(dh);
        if (!(d >= 0.f) || isinf(d) || (d == 0.f && top != m)) continue;
        uint8_t q[32];
        int ok = 1;
        for (int i = 0; i < 32 && ok; i++) {
            float f = d > 0.f ? nearbyintf((w[i] - m) / d) : 0.f;
            q[i] = (uint8_t)(f < 0.f ? 0.f : f > 15.f ? 15.f : f);
            ok = fmaf(d, (float)q[i], m) == w[i];
        }
        if (!ok) continue;
        for (int i = 0; i < 16; i++) codes[i] = (uint8_t)(q[i] | q[i + 16] << 4);
        *d_out = dh;
        *m_out = mh;
        return 1;
    }
    return 0;
}

static int q8_block(const float* w, uint8_t* codes, uint16_t* d_out) {
    float top = 0.f;
    for (int i = 0; i < 32; i++) top = fabsf(w[i]) > top ? fabsf(w[i]) : top;
    float d = top / 127.f;
    uint16_t dh = to_half(d);
    if (from_half(dh) != d) return 0;
    for (int i = 0; i < 32; i++) {
        float f = d > 0.f ? nearbyintf(w[i] / d) : 0.f;
        f = f < -127.f ? -127.f : f > 127.f ? 127.f : f;
        if (d * f != w[i]) return 0;
        codes[i] = (uint8_t)(int8_t)f;
    }
    *d_out = dh;
    return 1;
}

/* w [O, I] (I a multiple of 32) into out (ceil(O / 4) * I / 32 groups, zeroed by the caller:
 * rows past O stay 0); 1 if every block is codes of `format`, else 0 (out is then garbage). */
int64_t find_codes(const float* w, int64_t O, int64_t I, int64_t format, uint8_t* out) {
    int64_t G = I / 32, GB = group_bytes(format);
    int failed = 0;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < O; o++) {
        if (__atomic_load_n(&failed, __ATOMIC_RELAXED)) continue;
        for (int64_t g = 0; g < G; g++) {
            uint8_t* grp = out + ((o / 4) * G + g) * GB;
            int k = (int)(o % 4), ok;
            uint16_t d = 0, m = 0;
            if (format == W_Q4) {
                ok = q4_block(w + o * I + 32 * g, grp + 16 * k, &d, &m);
                memcpy(grp + 64 + 2 * k, &d, 2);
                memcpy(grp + 72 + 2 * k, &m, 2);
            } else {
                ok = q8_block(w + o * I + 32 * g, grp + 32 * k, &d);
                memcpy(grp + 128 + 2 * k, &d, 2);
            }
            if (!ok) {
                __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
                break;
            }
        }
    }
    return !failed;
}
