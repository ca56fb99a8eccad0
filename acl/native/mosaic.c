/* Fused CPU kernels of the ACL kernel families (acl/kernels.py holds the formulas).
 *
 * One call per segment writes the kernels out[n][hw] (row-major, the layer's layout)
 * and, when J is not NULL, the closed-form Jacobian J[p][hw][n] = dW[k][i]/d akp[k][j].
 * acl_contract_* turns J and the upstream gradient gw[n][hw] into the AKP gradient
 * grad[n][p].
 *
 * Kernels are tiny (hw = 9 for 3x3) and many, so the loops run over kernels, not
 * samples: per-kernel values are computed once into arrays, then every sample is a
 * loop over all kernels that vectorizes (exp/cos/sin through glibc's libmvec, which
 * needs -ffast-math at compile time; the library is linked without it so that
 * loading it never changes the process's floating-point mode). Work is done
 * samples-major ([hw][n]) in scratch memory and transposed into `out` at the end.
 * Every function returns 0; -1 when scratch memory cannot be allocated; 1, writing
 * nothing, when an AKP is NaN or infinite: -ffast-math assumes finite values, so the
 * caller computes such a bank with the exact formulas instead.
 * Compiled for float (f32) and double (f64) from one body.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SCALE_MIN 1e-3
#define SCALE_MAX 1e4
#define TF_DELTA 1e-4
#define TWO_PI 6.283185307179586
#define INV_PI 0.3183098861837907

#define DEFINE_KERNELS(T, SUF, EXP, COS, SIN, FABS, BITS, EXPONENT)                          \
/* All m values finite, tested on the bits (fast-math may fold isfinite to true). */          \
static int finite_##SUF(const T *a, ptrdiff_t m) {                                            \
    for (ptrdiff_t i = 0; i < m; i++) {                                                       \
        BITS b;                                                                               \
        memcpy(&b, a + i, sizeof b);                                                          \
        if ((b & EXPONENT) == EXPONENT) return 0;                                             \
    }                                                                                         \
    return 1;                                                                                 \
}                                                                                             \
                                                                                              \
/* 1 / clamp(|v|, SCALE_MIN, SCALE_MAX), and d clamp / d v in *d. */                          \
static inline T inv_scale_##SUF(T v, T *d) {                                                  \
    T m = FABS(v);                                                                            \
    T e = m < (T)SCALE_MIN ? (T)SCALE_MIN : (m > (T)SCALE_MAX ? (T)SCALE_MAX : m);            \
    *d = (e == m) ? (T)((v > 0) - (v < 0)) : (T)0;                                            \
    return 1 / e;                                                                             \
}                                                                                             \
                                                                                              \
/* Rows of a samples-major [hw][n] array minus sum(row over samples) * centre. */            \
static void centre_##SUF(T *w, const T *centre, ptrdiff_t hw, ptrdiff_t n, T *sum) {         \
    for (ptrdiff_t k = 0; k < n; k++) sum[k] = 0;                                             \
    for (ptrdiff_t i = 0; i < hw; i++) {                                                      \
        const T *wi = w + i * n;                                                              \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) sum[k] += wi[k];                                    \
    }                                                                                         \
    for (ptrdiff_t i = 0; i < hw; i++) {                                                      \
        T *wi = w + i * n, ci = centre[i];                                                    \
        if (ci == 0) continue;                                                                \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) wi[k] -= sum[k] * ci;                               \
    }                                                                                         \
}                                                                                             \
                                                                                              \
static void transpose_##SUF(const T *w, ptrdiff_t hw, ptrdiff_t n, T *out) {                  \
    for (ptrdiff_t k = 0; k < n; k++)                                                         \
        for (ptrdiff_t i = 0; i < hw; i++) out[k * hw + i] = w[i * n + k];                    \
}                                                                                             \
                                                                                              \
int acl_gabor_##SUF(const T *a, ptrdiff_t n, const T *x, const T *y, const T *r2,             \
                    const T *inv_r2, const T *centre, ptrdiff_t hw, T *out, T *J) {           \
    if (!finite_##SUF(a, 4 * n)) return 1;                                                    \
    (void)inv_r2; (void)centre;                                                               \
    T *buf = malloc(sizeof(T) * (size_t)n * (size_t)(7 + hw));                                \
    if (!buf) return -1;                                                                      \
    T *c = buf, *s = c + n, *kk = s + n, *h = kk + n, *psi = h + n, *f0 = psi + n;            \
    T *f3 = f0 + n, *w = f3 + n;                                                              \
    for (ptrdiff_t k = 0; k < n; k++) {                                                       \
        const T *ak = a + 4 * k;                                                              \
        T dl, ds, il = inv_scale_##SUF(ak[0], &dl), is = inv_scale_##SUF(ak[3], &ds);         \
        c[k] = COS(ak[1]); s[k] = SIN(ak[1]); psi[k] = ak[2];                                 \
        kk[k] = (T)TWO_PI * il; h[k] = (T)-0.5 * is * is;                                     \
        f0[k] = kk[k] * il * dl; f3[k] = is * is * is * ds;                                   \
    }                                                                                         \
    for (ptrdiff_t i = 0; i < hw; i++) {                                                      \
        T xi = x[i], yi = y[i], ri = r2[i], *wi = w + i * n;                                  \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++)                                                     \
            wi[k] = EXP(h[k] * ri) * COS((xi * c[k] + yi * s[k]) * kk[k] + psi[k]);           \
        if (!J) continue;                                                                     \
        T *j0 = J + i * n, *j1 = j0 + hw * n, *j2 = j1 + hw * n, *j3 = j2 + hw * n;           \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) {                                                   \
            T xr = xi * c[k] + yi * s[k], yr = yi * c[k] - xi * s[k];                         \
            T es = EXP(h[k] * ri) * SIN(xr * kk[k] + psi[k]);                                 \
            j0[k] = es * xr * f0[k];                                                          \
            j1[k] = -es * yr * kk[k];                                                         \
            j2[k] = -es;                                                                      \
            j3[k] = wi[k] * ri * f3[k];                                                       \
        }                                                                                     \
    }                                                                                         \
    transpose_##SUF(w, hw, n, out);                                                           \
    free(buf);                                                                                \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
int acl_log_##SUF(const T *a, ptrdiff_t n, const T *x, const T *y, const T *r2,               \
                  const T *inv_r2, const T *centre, ptrdiff_t hw, T *out, T *J) {             \
    if (!finite_##SUF(a, 1 * n)) return 1;                                                    \
    (void)x; (void)y; (void)inv_r2; (void)centre;                                             \
    T *buf = malloc(sizeof(T) * (size_t)n * (size_t)(3 + hw));                                \
    if (!buf) return -1;                                                                      \
    T *inv2 = buf, *amp = inv2 + n, *f = amp + n, *w = f + n;                                 \
    for (ptrdiff_t k = 0; k < n; k++) {                                                       \
        T d, inv = inv_scale_##SUF(a[k], &d);                                                 \
        inv2[k] = inv * inv; amp[k] = -inv2[k] * inv2[k] * (T)INV_PI; f[k] = amp[k] * inv * d; \
    }                                                                                         \
    for (ptrdiff_t i = 0; i < hw; i++) {                                                      \
        T ri = r2[i], *wi = w + i * n, *ji = J ? J + i * n : NULL;                            \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) {                                                   \
            T qn = (T)-0.5 * ri * inv2[k];                                                    \
            wi[k] = (qn + 1) * amp[k] * EXP(qn);                                              \
        }                                                                                     \
        if (!ji) continue;                                                                    \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) {                                                   \
            T qn = (T)-0.5 * ri * inv2[k];                                                    \
            ji[k] = EXP(qn) * ((qn * -2 - 8) * qn - 4) * f[k];                                \
        }                                                                                     \
    }                                                                                         \
    transpose_##SUF(w, hw, n, out);                                                           \
    free(buf);                                                                                \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
int acl_lot_##SUF(const T *a, ptrdiff_t n, const T *x, const T *y, const T *r2,               \
                  const T *inv_r2, const T *centre, ptrdiff_t hw, T *out, T *J) {             \
    if (!finite_##SUF(a, 1 * n)) return 1;                                                    \
    (void)x; (void)y; (void)inv_r2;                                                           \
    T *buf = malloc(sizeof(T) * (size_t)n * (size_t)(3 + hw));                                \
    if (!buf) return -1;                                                                      \
    T *inv2 = buf, *f = inv2 + n, *sum = f + n, *w = sum + n;                                 \
    for (ptrdiff_t k = 0; k < n; k++) {                                                       \
        T d, inv = inv_scale_##SUF(a[k], &d);                                                 \
        inv2[k] = inv * inv; f[k] = 2 * inv2[k] * inv * d;                                    \
    }                                                                                         \
    for (ptrdiff_t i = 0; i < hw; i++) {                                                      \
        T ri = r2[i], *wi = w + i * n, *ji = J ? J + i * n : NULL;                            \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) wi[k] = EXP(-ri * inv2[k]);                         \
        if (!ji) continue;                                                                    \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) ji[k] = wi[k] * ri * f[k];                          \
    }                                                                                         \
    centre_##SUF(w, centre, hw, n, sum);                                                      \
    if (J) centre_##SUF(J, centre, hw, n, sum);                                               \
    transpose_##SUF(w, hw, n, out);                                                           \
    free(buf);                                                                                \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
int acl_tgd1st_##SUF(const T *a, ptrdiff_t n, const T *x, const T *y, const T *r2,            \
                     const T *inv_r2, const T *centre, ptrdiff_t hw, T *out, T *J) {          \
    if (!finite_##SUF(a, 3 * n)) return 1;                                                    \
    (void)r2; (void)inv_r2; (void)centre;                                                     \
    T *buf = malloc(sizeof(T) * (size_t)n * (size_t)(7 + hw));                                \
    if (!buf) return -1;                                                                      \
    T *c = buf, *s = c + n, *i1 = s + n, *i2 = i1 + n, *ft = i2 + n, *f1 = ft + n;            \
    T *f2 = f1 + n, *w = f2 + n;                                                              \
    for (ptrdiff_t k = 0; k < n; k++) {                                                       \
        const T *ak = a + 3 * k;                                                              \
        T d1, d2, v1 = inv_scale_##SUF(ak[1], &d1), v2 = inv_scale_##SUF(ak[2], &d2);         \
        c[k] = COS(ak[0]); s[k] = SIN(ak[0]); i1[k] = v1 * v1; i2[k] = v2 * v2;               \
        ft[k] = 2 * (i2[k] - i1[k]); f1[k] = 2 * i1[k] * v1 * d1; f2[k] = 2 * i2[k] * v2 * d2; \
    }                                                                                         \
    for (ptrdiff_t i = 0; i < hw; i++) {                                                      \
        T xi = x[i], yi = y[i], *wi = w + i * n;                                              \
        T *j0 = J ? J + i * n : NULL, *j1 = j0 ? j0 + hw * n : NULL, *j2 = j1 ? j1 + hw * n : NULL; \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) {                                                   \
            T xr = xi * c[k] + yi * s[k], yr = yi * c[k] - xi * s[k];                         \
            T sg = (T)(xr > (T)TF_DELTA) - (T)(xr < (T)-TF_DELTA);                            \
            wi[k] = EXP(-xr * xr * i1[k] - yr * yr * i2[k]) * sg;                             \
        }                                                                                     \
        if (!j0) continue;                                                                    \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) {                                                   \
            T xr = xi * c[k] + yi * s[k], yr = yi * c[k] - xi * s[k], wv = wi[k];             \
            j0[k] = wv * xr * yr * ft[k];                                                     \
            j1[k] = wv * xr * xr * f1[k];                                                     \
            j2[k] = wv * yr * yr * f2[k];                                                     \
        }                                                                                     \
    }                                                                                         \
    transpose_##SUF(w, hw, n, out);                                                           \
    free(buf);                                                                                \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
int acl_tgd2nd_##SUF(const T *a, ptrdiff_t n, const T *x, const T *y, const T *r2,            \
                     const T *inv_r2, const T *centre, ptrdiff_t hw, T *out, T *J) {          \
    if (!finite_##SUF(a, 2 * n)) return 1;                                                    \
    T *buf = malloc(sizeof(T) * (size_t)n * (size_t)(5 + hw));                                \
    if (!buf) return -1;                                                                      \
    T *c = buf, *s = c + n, *inv2 = s + n, *f = inv2 + n, *sum = f + n, *w = sum + n;         \
    for (ptrdiff_t k = 0; k < n; k++) {                                                       \
        const T *ak = a + 2 * k;                                                              \
        T d, inv = inv_scale_##SUF(ak[1], &d);                                                \
        c[k] = COS(ak[0]); s[k] = SIN(ak[0]); inv2[k] = inv * inv; f[k] = 2 * inv2[k] * inv * d; \
    }                                                                                         \
    for (ptrdiff_t i = 0; i < hw; i++) {                                                      \
        T xi = x[i], yi = y[i], ri = r2[i], ir = inv_r2[i], *wi = w + i * n;                  \
        T *j0 = J ? J + i * n : NULL, *j1 = j0 ? j0 + hw * n : NULL;                          \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++)                                                     \
            wi[k] = EXP(-ri * inv2[k]) * ir * FABS(xi * c[k] + yi * s[k]);                   \
        if (!j0) continue;                                                                    \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t k = 0; k < n; k++) {                                                   \
            T xr = xi * c[k] + yi * s[k], yr = yi * c[k] - xi * s[k];                         \
            j0[k] = EXP(-ri * inv2[k]) * ir * (T)((xr > 0) - (xr < 0)) * yr;                  \
            j1[k] = wi[k] * ri * f[k];                                                        \
        }                                                                                     \
    }                                                                                         \
    centre_##SUF(w, centre, hw, n, sum);                                                      \
    if (J) {                                                                                  \
        centre_##SUF(J, centre, hw, n, sum);                                                  \
        centre_##SUF(J + hw * n, centre, hw, n, sum);                                         \
    }                                                                                         \
    transpose_##SUF(w, hw, n, out);                                                           \
    free(buf);                                                                                \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
/* grad[k][j] = sum_i J[j][i][k] * gw[k][i]. */                                               \
int acl_contract_##SUF(const T *J, const T *gw, ptrdiff_t n, ptrdiff_t p, ptrdiff_t hw,       \
                       T *grad) {                                                             \
    T *buf = malloc(sizeof(T) * (size_t)n * (size_t)(hw + 1));                                \
    if (!buf) return -1;                                                                      \
    T *g = buf, *acc = g + hw * n;                                                            \
    transpose_##SUF(gw, n, hw, g); /* [n][hw] -> [hw][n] */                                   \
    for (ptrdiff_t j = 0; j < p; j++) {                                                       \
        for (ptrdiff_t k = 0; k < n; k++) acc[k] = 0;                                         \
        for (ptrdiff_t i = 0; i < hw; i++) {                                                  \
            const T *ji = J + (j * hw + i) * n, *gi = g + i * n;                              \
            _Pragma("omp simd")                                                               \
            for (ptrdiff_t k = 0; k < n; k++) acc[k] += ji[k] * gi[k];                        \
        }                                                                                     \
        for (ptrdiff_t k = 0; k < n; k++) grad[k * p + j] = acc[k];                           \
    }                                                                                         \
    free(buf);                                                                                \
    return 0;                                                                                 \
}

DEFINE_KERNELS(float, f32, expf, cosf, sinf, fabsf, uint32_t, UINT32_C(0x7f800000))
DEFINE_KERNELS(double, f64, exp, cos, sin, fabs, uint64_t, UINT64_C(0x7ff0000000000000))
