/* bench_cpu: the machine's own fp32 limit, so that every model figure of `make bench`
 * is a fraction of what this core can do rather than of what the BLAS happens to reach.
 *
 * fma_peak_gflops_1t: one thread running 16 independent chains of _mm512_fmadd_ps (16
 * lanes, 2 flops per lane: 512 flops per round; 16 chains cover the FMA latency of
 * every current core), thread CPU time, best of 7 runs of ~0.15 s. Without AVX-512,
 * 12 chains of _mm256_fmadd_ps (fma_isa=avx2): AVX2 has 16 ymm registers, and 16
 * accumulators plus the two operands spilled three chains to the stack, whose
 * store-to-load round trip capped the loop at ~0.58 of the peak (Zen 3: 57.5 against
 * 98-100 GFLOP/s with 8-14 chains; 12 still cover 2 pipes x 5 cycles of latency).
 * Without AVX2, SSE multiply + add (fma_isa=sse). fma_chains gives the count used.
 * fma_peak_gflops_2t: two threads at once, the sum of their rates (each on its own
 * thread CPU time, so time the machine gives to other jobs does not count). Also the CPU
 * (cpuid family/model, instruction-set level) and the BLAS core this process runs
 * after wisp's start-up decision (nn/blas.h), with its sgemm at 2048^3 on one thread
 * as a fraction of the FMA peak. Prints key=value lines. Usage: bench_cpu */
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "base/util.h"
#include "nn/blas.h"

#define S_CHAINS      16
#define S_CHAINS_AVX2 12

static double s_thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if defined(__x86_64__)
/* The 16 chains are 16 named variables, not an array: an array loop is compiled with
 * the accumulators in memory, and the store-to-load latency then caps the rate. */
#define S_CHAIN12(FMA)                                                                             \
    FMA(c0), FMA(c1), FMA(c2), FMA(c3), FMA(c4), FMA(c5), FMA(c6), FMA(c7), FMA(c8), FMA(c9),      \
        FMA(c10), FMA(c11)
#define S_CHAIN16(FMA) S_CHAIN12(FMA), FMA(c12), FMA(c13), FMA(c14), FMA(c15)

/* rounds x 16 chains x 16 lanes x 2 flops; returns a value so the loop is kept */
__attribute__((target("avx512f"))) static float s_fma512(long rounds)
{
    const __m512 a = _mm512_set1_ps(0.9999999f), b = _mm512_set1_ps(1e-7f);
    __m512 c0 = _mm512_set1_ps(0.f), c1 = _mm512_set1_ps(1.f), c2 = _mm512_set1_ps(2.f),
           c3 = _mm512_set1_ps(3.f), c4 = _mm512_set1_ps(4.f), c5 = _mm512_set1_ps(5.f),
           c6 = _mm512_set1_ps(6.f), c7 = _mm512_set1_ps(7.f), c8 = _mm512_set1_ps(8.f),
           c9 = _mm512_set1_ps(9.f), c10 = _mm512_set1_ps(10.f), c11 = _mm512_set1_ps(11.f),
           c12 = _mm512_set1_ps(12.f), c13 = _mm512_set1_ps(13.f), c14 = _mm512_set1_ps(14.f),
           c15 = _mm512_set1_ps(15.f);
#define S_F512(c) (c = _mm512_fmadd_ps(c, a, b))
    for (long r = 0; r < rounds; r++)
        S_CHAIN16(S_F512);
#undef S_F512
#define S_ADD512(c) (c0 = _mm512_add_ps(c0, c))
    S_CHAIN16(S_ADD512);
#undef S_ADD512
    return _mm512_reduce_add_ps(c0);
}

/* rounds x 12 chains x 8 lanes x 2 flops (12 accumulators + 2 operands in 16 ymm) */
__attribute__((target("avx2,fma"))) static float s_fma256(long rounds)
{
    const __m256 a = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);
    __m256 c0 = _mm256_set1_ps(0.f), c1 = _mm256_set1_ps(1.f), c2 = _mm256_set1_ps(2.f),
           c3 = _mm256_set1_ps(3.f), c4 = _mm256_set1_ps(4.f), c5 = _mm256_set1_ps(5.f),
           c6 = _mm256_set1_ps(6.f), c7 = _mm256_set1_ps(7.f), c8 = _mm256_set1_ps(8.f),
           c9 = _mm256_set1_ps(9.f), c10 = _mm256_set1_ps(10.f), c11 = _mm256_set1_ps(11.f);
#define S_F256(c) (c = _mm256_fmadd_ps(c, a, b))
    for (long r = 0; r < rounds; r++)
        S_CHAIN12(S_F256);
#undef S_F256
#define S_ADD256(c) (c0 = _mm256_add_ps(c0, c))
    S_CHAIN12(S_ADD256);
#undef S_ADD256
    float v[8];
    _mm256_storeu_ps(v, c0);
    return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}
#endif

/* SSE fallback: multiply and add (2 flops per lane, 4 lanes). */
static float s_fma128(long rounds)
{
    float acc[S_CHAINS][4];
    for (int i = 0; i < S_CHAINS; i++)
        for (int l = 0; l < 4; l++)
            acc[i][l] = (float)i;
    for (long r = 0; r < rounds; r++)
        for (int i = 0; i < S_CHAINS; i++)
            for (int l = 0; l < 4; l++)
                acc[i][l] = acc[i][l] * 0.9999999f + 1e-7f;
    float s = 0;
    for (int i = 0; i < S_CHAINS; i++)
        for (int l = 0; l < 4; l++)
            s += acc[i][l];
    return s;
}

typedef struct {
    int lanes;     /* 16, 8 or 4 */
    long rounds;   /* per timed run */
    double gflops; /* best over the runs (out) */
    volatile float sink;
} s_job_t;

static float s_kernel(int lanes, long rounds)
{
#if defined(__x86_64__)
    if (lanes == 16)
        return s_fma512(rounds);
    if (lanes == 8)
        return s_fma256(rounds);
#endif
    return s_fma128(rounds);
}

/* Independent chains the kernel for this width runs. */
static int s_chains(int lanes)
{
    return lanes == 8 ? S_CHAINS_AVX2 : S_CHAINS;
}

static void *s_measure(void *arg)
{
    s_job_t *j = arg;
    double flops = (double)j->rounds * s_chains(j->lanes) * j->lanes * 2.0, best = 1e30;
    j->sink = s_kernel(j->lanes, j->rounds / 10); /* warm up: clocks and caches */
    for (int k = 0; k < 7; k++) {
        double t0 = s_thread_cpu();
        j->sink = s_kernel(j->lanes, j->rounds);
        double dt = s_thread_cpu() - t0;
        best = dt < best ? dt : best;
    }
    j->gflops = flops / best * 1e-9;
    return NULL;
}

/* Rounds for ~0.15 s at the measured one-thread rate. */
static long s_rounds_for(int lanes)
{
    s_job_t j = {.lanes = lanes, .rounds = 2000000};
    s_measure(&j);
    double per_s = j.gflops * 1e9 / (s_chains(lanes) * lanes * 2.0);
    long r = (long)(0.15 * per_s);
    return r > 1000 ? r : 1000;
}

static double s_sgemm_gflops(void)
{
    const int n = 2048;
    float *a = wisp_alloc((size_t)n * n * sizeof *a), *b = wisp_alloc((size_t)n * n * sizeof *b);
    float *c = wisp_alloc((size_t)n * n * sizeof *c);
    if (!a || !b || !c)
        return 0;
    wisp_rng_t r;
    wisp_rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = 2.0f * wisp_rng_uniform(&r) - 1.0f;
        b[i] = 2.0f * wisp_rng_uniform(&r) - 1.0f;
    }
    openblas_set_num_threads(1);
    double best = 1e30;
    for (int k = 0; k < 4; k++) {
        double t0 = s_thread_cpu();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = s_thread_cpu() - t0;
        best = k && dt < best ? dt : best; /* the first call packs cold pages */
    }
    wisp_free(a), wisp_free(b), wisp_free(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

int main(int argc, char **argv)
{
    (void)argc;
    wisp_blas_startup('L', argv);
    wisp_cpu_t cpu;
    wisp_cpu_detect(&cpu);
    int lanes = cpu.isa == WISP_ISA_AVX512 ? 16 : cpu.isa == WISP_ISA_AVX2 ? 8 : 4;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        unsigned fam = (a >> 8) & 0xf, model = (a >> 4) & 0xf;
        if (fam == 0xf)
            fam += (a >> 20) & 0xff;
        if (fam == 6 || fam >= 0xf)
            model |= ((a >> 16) & 0xf) << 4;
        printf("cpu_family=%u\ncpu_model=%u\n", fam, model);
    }
#endif
    printf("cpu_isa=%s\n", wisp_isa_name(cpu.isa));
    printf("fma_isa=%s\n", lanes == 16 ? "avx512" : lanes == 8 ? "avx2" : "sse");
    printf("fma_chains=%d\n", s_chains(lanes));
    const char *core = openblas_get_corename();
    printf("blas_core=%s\n", core ? core : "unknown");
    long rounds = s_rounds_for(lanes);
    s_job_t one = {.lanes = lanes, .rounds = rounds};
    s_measure(&one);
    printf("fma_peak_gflops_1t=%.1f\n", one.gflops);
    s_job_t two[2] = {{.lanes = lanes, .rounds = rounds}, {.lanes = lanes, .rounds = rounds}};
    pthread_t th;
    int started = pthread_create(&th, NULL, s_measure, &two[1]) == 0;
    s_measure(&two[0]);
    if (started)
        pthread_join(th, NULL);
    printf("fma_peak_gflops_2t=%.1f\n", started ? two[0].gflops + two[1].gflops : two[0].gflops);
    double sg = s_sgemm_gflops();
    printf("sgemm_2048_gflops_1t_thread_cpu=%.1f\n", sg);
    printf("sgemm_2048_fma_frac_1t=%.3f\n", sg / one.gflops);
    return 0;
}
