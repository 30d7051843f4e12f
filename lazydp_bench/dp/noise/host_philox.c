/* Host noise: w += std * z in one pass, z Philox-4x32-10 normals drawn in registers.
 *
 * The stream is the Triton fused kernel's (noise/triton_fused.py): key = the call's 64-bit
 * seed (k0 = low word, k1 = high word), counter = (group, launch chunk, 0, 0). A launch is
 * cut into programs of 4 * 1024 elements; program p's group g = p * 1024 + j (j < 1024)
 * gives the normals of elements p * 4096 + j + {0, 1024, 2048, 3072}. Box-Muller as there,
 * with the same mapping of words to normals: u = (c + 1/2) / 2**32 for the radius, the
 * angle (c + 1/2) / 2**32 of a turn reduced exactly on the bits. Here ln, sin and cos are
 * Cephes-style float32 polynomials instead of libdevice's log and the hardware's
 * sin/cos.approx, so the words are equal bit for bit and the normals equal up to float32
 * rounding of the transcendentals.
 *
 * Philox runs on AVX-512 or AVX2 vectors (intrinsics; plain C on other CPUs), Box-Muller as
 * plain loops with no calls in them, which gcc -O3 vectorizes (-fno-trapping-math lets it
 * turn the selects into blends). One core of an EPYC 9004 (Zen 4) made 2.57 G Philox words/s
 * and 1.7 G normals/s from words with AVX-512 (1.95 and 1.05 with AVX2). Every function is
 * thread-safe and keeps no state; the caller's threads split the programs.
 */
#include <stdint.h>
#include <string.h>

#define LANES 1024
#define PROGRAM (4 * LANES)

static inline float bits_to_float(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline uint32_t float_to_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* ln u for u = (c + 1/2) / 2**32 (the radius word of triton_fused._box_muller).
 *
 * One Cephes logf polynomial (relative error ~1e-7) in t = m - 1, m = u / 2**e in
 * [sqrt(1/2), sqrt(2)). Below u = 1/2, m and e come from the bits of u. Above, from
 * w = 1 - u = (~c + 1/2) / 2**32, exact to float32 rounding: t = -w (e = 0) for
 * u >= sqrt(1/2), else t = 1 - 2w (e = -1, exact): so ln u near 1 keeps its relative
 * precision (the Triton kernel's series in w serves the same end) and no branch on the
 * lane is needed. */
static inline float log_uniform(uint32_t c) {
    int upper = c >= 0x80000000u;
    /* ~c or c is below 2**31: the signed conversion (one instruction, AVX2 too) is exact */
    float v = (float)(int32_t)(upper ? ~c : c) * 2.3283064365386963e-10f + 1.1641532182693481e-10f;
    uint32_t b = float_to_bits(v);
    float e = (float)((int32_t)(b >> 23) - 126);
    float m = bits_to_float((b & 0x007FFFFFu) | 0x3F000000u); /* [0.5, 1) */
    int low = m < 0.70710678118654752f;
    float t_lower = low ? m + m - 1.0f : m - 1.0f;
    float e_lower = low ? e - 1.0f : e;
    int near_one = v <= 0.29289321881345248f; /* u >= sqrt(1/2) */
    float t = upper ? (near_one ? -v : 1.0f - 2.0f * v) : t_lower;
    e = upper ? (near_one ? 0.0f : -1.0f) : e_lower;
    float z = t * t;
    float y = 7.0376836292e-2f;
    y = y * t - 1.1514610310e-1f;
    y = y * t + 1.1676998740e-1f;
    y = y * t - 1.2420140846e-1f;
    y = y * t + 1.4249322787e-1f;
    y = y * t - 1.6668057665e-1f;
    y = y * t + 2.0000714765e-1f;
    y = y * t - 2.4999993993e-1f;
    y = y * t + 3.3333331174e-1f;
    y = y * t * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return t + y + 0.693359375f * e;
}

/* (r cos theta, r sin theta) from two words (triton_fused._box_muller): theta is the
 * angle (c2 + 1/2) / 2**32 of a turn starting at -pi/4, reduced exactly on the bits
 * (quadrant = the top 2 bits, phi in (-pi/4, pi/4) from the other 30, never 0), and
 * sin phi, cos phi are Cephes sinf/cosf's polynomials on that range (error ~1e-7). */
static inline void box_muller(uint32_t c1, uint32_t c2, float *zc, float *zs) {
    float r = __builtin_sqrtf(-2.0f * log_uniform(c1));
    uint32_t q = c2 >> 30;
    int32_t d = (int32_t)(c2 & 0x3FFFFFFFu) - 0x20000000;
    float phi = ((float)d + 0.5f) * 1.4629180792671596e-09f; /* (pi / 2) / 2**30 */
    float x2 = phi * phi;
    float sn = ((-1.9515295891e-4f * x2 + 8.3321608736e-3f) * x2 - 1.6666654611e-1f) * x2;
    sn = sn * phi + phi;
    float cs = ((2.443315711809948e-5f * x2 - 1.388731625493765e-3f) * x2 +
                4.166664568298827e-2f) * x2 * x2;
    cs = cs - 0.5f * x2 + 1.0f;
    int swap = (q & 1u) == 1u;
    float s0 = swap ? cs : sn;
    float c0 = swap ? sn : cs;
    float sin = q >= 2u ? -s0 : s0;
    float cos = ((q == 1u) | (q == 2u)) ? -c0 : c0;
    *zc = r * cos;
    *zs = r * sin;
}

/* Philox-4x32-10 of counter (group, chunk, 0, 0) under key (k0, k1), for the `count`
 * groups group0 .. group0 + count - 1 (count a multiple of 64): word i of group
 * group0 + j goes to out[i * count + j].
 * With AVX-512 or AVX2 the 32 x 32 -> 64 bit products are two vpmuludq (even and odd
 * lanes) and blends, four vectors in flight to hide their latency; gcc's own
 * vectorization of the scalar loop used 64-bit vpmullq (2.1x slower on an EPYC 9004). */
#if defined(__AVX512F__) && !defined(PHILOX_SCALAR) /* PHILOX_SCALAR: the tests' reference */
#include <immintrin.h>
typedef __m512i vec;
#define WIDTH 16
#define SET1(x) _mm512_set1_epi32((int)(x))
#define XOR3(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0x96)
#define STORE(p, v) _mm512_storeu_si512((void *)(p), v)
#define IOTA _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define ADD(a, b) _mm512_add_epi32(a, b)
static inline vec mulhilo(vec x, vec m, vec *lo) {
    vec even = _mm512_mul_epu32(x, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
    *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    return _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}
#elif defined(__AVX2__) && !defined(PHILOX_SCALAR)
#include <immintrin.h>
typedef __m256i vec;
#define WIDTH 8
#define SET1(x) _mm256_set1_epi32((int)(x))
#define XOR3(a, b, c) _mm256_xor_si256(_mm256_xor_si256(a, b), c)
#define STORE(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#define IOTA _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define ADD(a, b) _mm256_add_epi32(a, b)
static inline vec mulhilo(vec x, vec m, vec *lo) {
    vec even = _mm256_mul_epu32(x, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    return _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}
#endif

#define KEY_A 0x9E3779B9u
#define KEY_B 0xBB67AE85u
#define ROUND_A 0xD2511F53u
#define ROUND_B 0xCD9E8D57u

#ifdef WIDTH
#define INFLIGHT 4
static void philox_lanes(uint32_t k0, uint32_t k1, uint32_t group0, uint32_t chunk,
                        int count, uint32_t *restrict out) {
    vec A = SET1(ROUND_A), B = SET1(ROUND_B), iota = IOTA;
    for (int j = 0; j < count; j += INFLIGHT * WIDTH) {
        vec c0[INFLIGHT], c1[INFLIGHT], c2[INFLIGHT], c3[INFLIGHT];
        for (int u = 0; u < INFLIGHT; ++u) {
            c0[u] = ADD(SET1(group0 + (uint32_t)(j + u * WIDTH)), iota);
            c1[u] = SET1(chunk);
            c2[u] = SET1(0);
            c3[u] = SET1(0);
        }
        for (uint32_t round = 0; round < 10; ++round) {
            vec ka = SET1(k0 + round * KEY_A), kb = SET1(k1 + round * KEY_B);
            for (int u = 0; u < INFLIGHT; ++u) {
                vec lb, la;
                vec hb = mulhilo(c2[u], B, &lb), ha = mulhilo(c0[u], A, &la);
                c0[u] = XOR3(hb, c1[u], ka);
                c2[u] = XOR3(ha, c3[u], kb);
                c1[u] = lb;
                c3[u] = la;
            }
        }
        for (int u = 0; u < INFLIGHT; ++u) {
            int o = j + u * WIDTH;
            STORE(out + o, c0[u]);
            STORE(out + count + o, c1[u]);
            STORE(out + 2 * count + o, c2[u]);
            STORE(out + 3 * count + o, c3[u]);
        }
    }
}
#else
static void philox_lanes(uint32_t k0, uint32_t k1, uint32_t group0, uint32_t chunk,
                        int count, uint32_t *restrict out) {
    for (int j = 0; j < count; ++j) {
        uint32_t c0 = group0 + (uint32_t)j, c1 = chunk, c2 = 0, c3 = 0, a = k0, b = k1;
        for (int round = 0; round < 10; ++round) {
            uint64_t pb = (uint64_t)ROUND_B * c2;
            uint64_t pa = (uint64_t)ROUND_A * c0;
            uint32_t n0 = (uint32_t)(pb >> 32) ^ c1 ^ a;
            uint32_t n2 = (uint32_t)(pa >> 32) ^ c3 ^ b;
            c1 = (uint32_t)pb;
            c3 = (uint32_t)pa;
            c0 = n0;
            c2 = n2;
            a += KEY_A;
            b += KEY_B;
        }
        out[j] = c0;
        out[count + j] = c1;
        out[2 * count + j] = c2;
        out[3 * count + j] = c3;
    }
}
#endif

/* The normals of groups group0 .. group0 + SUB - 1: z[i * SUB + j] is the normal that
 * group group0 + j gives to element i * LANES + j of its program. SUB lanes at a time keep
 * the words and the normals (2 x 16 SUB bytes) in L1 beside the target's lines. */
#ifndef SUB
#define SUB 128
#endif
_Static_assert(SUB % 64 == 0 && LANES % SUB == 0, "SUB: a multiple of 64 that divides 1024");
static void normals_lanes(uint32_t k0, uint32_t k1, uint32_t group0, uint32_t chunk,
                          float *restrict z) {
    uint32_t words[4 * SUB];
    philox_lanes(k0, k1, group0, chunk, SUB, words);
    for (int j = 0; j < SUB; ++j) {
        box_muller(words[j], words[SUB + j], &z[j], &z[SUB + j]);
        box_muller(words[2 * SUB + j], words[3 * SUB + j], &z[2 * SUB + j], &z[3 * SUB + j]);
    }
}

/* Lanes per Philox vector: 16 (AVX-512), 8 (AVX2) or 1 (scalar), for the record. */
int philox_simd_width(void) {
#ifdef WIDTH
    return WIDTH;
#else
    return 1;
#endif
}

/* Lanes drawn at a time (the block size the diagnostics compare). */
int philox_sub_lanes(void) { return SUB; }

/* The raw words of groups group0 .. group0 + count - 1 (4 per group, in word order): the
 * tests compare them with a pure-Python Philox. */
void philox_words(uint64_t key, uint32_t chunk, uint32_t group0, int64_t count,
                  uint32_t *out) {
    uint32_t buf[4 * SUB];
    for (int64_t g = 0; g < count; g += SUB) {
        philox_lanes((uint32_t)key, (uint32_t)(key >> 32), group0 + (uint32_t)g, chunk, SUB,
                     buf);
        int64_t n = count - g < SUB ? count - g : SUB;
        for (int64_t j = 0; j < n; ++j)
            for (int i = 0; i < 4; ++i) out[4 * (g + j) + i] = buf[i * SUB + j];
    }
}

#define DEFINE_ADD(NAME, T)                                                                  \
    /* w[e] += std_e * z[0 .. len) for e in [start, start + len) (a run of one program's   \
     * elements); std_e = std_rows[e / cols] when std_rows is not NULL, else s. */          \
    static inline void NAME##_run(T *restrict w, int64_t start, int64_t len,               \
                                  const float *restrict z, int64_t cols,                   \
                                  const T *std_rows, T s) {                                \
        if (std_rows == NULL) {                                                              \
            for (int64_t k = 0; k < len; ++k) w[start + k] += s * (T)z[k];                   \
            return;                                                                          \
        }                                                                                    \
        for (int64_t e = start; e < start + len;) {                                          \
            int64_t row = e / cols, end = (row + 1) * cols;                                  \
            end = end < start + len ? end : start + len;                                     \
            T sr = std_rows[row];                                                            \
            for (int64_t k = e; k < end; ++k) w[k] += sr * (T)z[k - start];                  \
            e = end;                                                                         \
        }                                                                                    \
    }                                                                                        \
    /* w[e] += std_e * z_e for the elements of programs [p_lo, p_hi) of one launch of n    \
     * elements (counter word 1 = chunk); rows of std_rows counted from w. */               \
    void NAME(T *w, int64_t n, int64_t cols, const T *std_rows, double std, uint64_t key,   \
              uint32_t chunk, int64_t p_lo, int64_t p_hi) {                                 \
        float z[4 * SUB];                                                                    \
        uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);                             \
        for (int64_t p = p_lo; p < p_hi; ++p) {                                              \
            for (int j0 = 0; j0 < LANES; j0 += SUB) {                                        \
                normals_lanes(k0, k1, (uint32_t)(p * LANES + j0), chunk, z);                 \
                for (int i = 0; i < 4; ++i) {                                                \
                    int64_t start = p * PROGRAM + i * LANES + j0;                            \
                    int64_t len = n - start < SUB ? n - start : SUB;                         \
                    if (len > 0)                                                             \
                        NAME##_run(w, start, len, z + i * SUB, cols, std_rows, (T)std);     \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }

DEFINE_ADD(philox_add_f32, float)
DEFINE_ADD(philox_add_f64, double)

/* philox_add_f32 over all of a block of n elements, `repeats` times (key r on pass r):
 * the generator and an in-cache add with no DRAM traffic, in one library call, so a
 * thread pool timing it (`HostPhiloxEngine.draw_only`) waits on no interpreter lock
 * between passes. */
void philox_spin_f32(float *w, int64_t n, double std, int64_t repeats) {
    int64_t programs = (n + PROGRAM - 1) / PROGRAM;
    for (int64_t r = 0; r < repeats; ++r)
        philox_add_f32(w, n, n, NULL, std, (uint64_t)r, 0, 0, programs);
}
