/* table[rows[i]] += alpha * values[i] for i in [lo, hi): the host table update of a
 * hybrid step (see host_rows.py for why it is not torch's index_add_).
 *
 * Rows are unique within a call's range (coalesced updates), so calls on disjoint
 * ranges of one update may run in parallel. `alpha == 1` adds the values unscaled (as
 * index_add_ does); otherwise each element is one fused multiply-add, rounded once, as
 * torch's CPU kernel computes it (its vectorised fmadd; the tests check bitwise equality).
 * Returns -1, or the first position whose row is out of range (nothing at or after it
 * is written). The next rows are prefetched: rows of a large table are far apart, and
 * a row of 128 floats is 8 cache lines.
 */
#include <math.h>
#include <stdint.h>

#define PREFETCH_AHEAD 4

#define ROWS_ADD(NAME, T, FMA)                                                              \
    int64_t NAME(T *restrict table, int64_t dim, int64_t nrows,                        \
                 const int64_t *restrict rows, const T *restrict values, int64_t lo,   \
                 int64_t hi, double alpha_d) {                                         \
        const T alpha = (T)alpha_d;                                                    \
        for (int64_t i = lo; i < hi; i++) {                                            \
            if (rows[i] < 0 || rows[i] >= nrows) return i;                             \
            if (i + PREFETCH_AHEAD < hi && rows[i + PREFETCH_AHEAD] >= 0 &&              \
                rows[i + PREFETCH_AHEAD] < nrows) {                                    \
                const char *next = (const char *)(table + rows[i + PREFETCH_AHEAD] * dim); \
                for (int64_t b = 0; b < dim * (int64_t)sizeof(T); b += 64)              \
                    __builtin_prefetch(next + b, 1, 0);                                \
            }                                                                          \
            T *restrict dst = table + rows[i] * dim;                                   \
            const T *restrict src = values + i * dim;                                  \
            if (alpha_d == 1.0) {                                                      \
                for (int64_t j = 0; j < dim; j++) dst[j] += src[j];                    \
            } else {                                                                   \
                for (int64_t j = 0; j < dim; j++) dst[j] = FMA(alpha, src[j], dst[j]);   \
            }                                                                          \
        }                                                                              \
        return -1;                                                                     \
    }

ROWS_ADD(rows_add_f32, float, fmaf)
ROWS_ADD(rows_add_f64, double, fma)
