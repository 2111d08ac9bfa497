/* Tests of nn/blas: the OpenBLAS core decision (a table of picked core x CPU ISA x
 * OPENBLAS_CORETYPE), the verification sgemm, and FTZ/DAZ reaching OpenBLAS's threads.
 * The re-execution itself is tested end to end by tests/integration/blas_reexec.sh. */
#include "testutil.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "nn/blas.h"
#include "nn/pool.h"

#include <xmmintrin.h>

static const wisp_cpu_t S_AVX512 = {WISP_ISA_AVX512, 0};
static const wisp_cpu_t S_AVX512_AMD = {WISP_ISA_AVX512, 1};
static const wisp_cpu_t S_AVX2_INTEL = {WISP_ISA_AVX2, 0};
static const wisp_cpu_t S_AVX2_AMD = {WISP_ISA_AVX2, 1};
static const wisp_cpu_t S_AVX_ONLY = {WISP_ISA_AVX, 0};
static const wisp_cpu_t S_SSE_ONLY = {WISP_ISA_BASE, 0};

typedef struct {
    const char *picked;
    wisp_cpu_t cpu;
    const char *coretype;
    int dynamic;
    const char *want_use; /* NULL: keep */
    const char *want_in_why;
} s_case_t;

static void test_decision_table_covers_pick_isa_and_variable(void **state)
{
    (void)state;
    const s_case_t cases[] = {
        /* the Xeon: unknown model, SSE3 fallback core */
        {"Prescott", S_AVX512, NULL, 1, "SkylakeX", "OpenBLAS picked Prescott on an AVX-512 CPU"},
        {"Prescott", S_AVX512, "", 1, "SkylakeX", "using SkylakeX"}, /* empty = unset */
        {"Haswell", S_AVX512, NULL, 1, "SkylakeX", "picked Haswell"},
        {"Zen", S_AVX512_AMD, NULL, 1, "SkylakeX", "using SkylakeX"},
        {"Sandybridge", S_AVX512, NULL, 1, "SkylakeX", "using SkylakeX"},
        /* right already: keep, whatever the spelling */
        {"Cooperlake", S_AVX512, NULL, 1, NULL, "OpenBLAS's choice on an AVX-512 CPU"},
        {"SKYLAKEX", S_AVX512, NULL, 1, NULL, "OpenBLAS's choice"},
        {"SapphireRapids", S_AVX512, NULL, 1, NULL, "OpenBLAS's choice"},
        /* AVX2 CPUs ("Haswell-less" ones below): Haswell for Intel, Zen for AMD */
        {"Prescott", S_AVX2_INTEL, NULL, 1, "Haswell", "on an AVX2 CPU; using Haswell"},
        {"Nehalem", S_AVX2_AMD, NULL, 1, "Zen", "using Zen"},
        {"Haswell", S_AVX2_INTEL, NULL, 1, NULL, "OpenBLAS's choice on an AVX2 CPU"},
        {"Zen", S_AVX2_INTEL, NULL, 1, NULL, "OpenBLAS's choice"},
        /* a core above the CPU (cannot be improved) and a pre-AVX2 CPU */
        {"SkylakeX", S_AVX2_INTEL, NULL, 1, NULL, "OpenBLAS's choice"},
        {"Prescott", S_AVX_ONLY, NULL, 1, "Sandybridge", "on an AVX CPU; using Sandybridge"},
        {"Sandybridge", S_AVX_ONLY, NULL, 1, NULL, "OpenBLAS's choice"},
        {"Core2", S_SSE_ONLY, NULL, 1, NULL, "on an SSE CPU"},
        /* an explicit value is always respected, even a slow one */
        {"Prescott", S_AVX512, "Prescott", 1, NULL,
         "OPENBLAS_CORETYPE=Prescott respected; this AVX-512 CPU would run SkylakeX"},
        {"Haswell", S_AVX512, "haswell", 1, NULL, "OPENBLAS_CORETYPE=haswell respected"},
        {"Cooperlake", S_AVX512, "Cooperlake", 1, NULL, "OPENBLAS_CORETYPE=Cooperlake respected)"},
        /* a build for one core: the variable would do nothing */
        {"Prescott", S_AVX512, NULL, 0, NULL, "built for this core only"},
        /* a core this table does not know: never guess */
        {"Loongson3R4", S_AVX512, NULL, 1, NULL, "OpenBLAS's choice"},
        {NULL, S_AVX512, NULL, 1, NULL, "unknown"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const s_case_t *c = &cases[i];
        wisp_blas_facts_t f = {c->picked, c->cpu, c->coretype, c->dynamic};
        wisp_blas_choice_t ch;
        memset(&ch, 0x55, sizeof ch);
        wisp_blas_decide(&f, &ch);
        if (c->want_use == NULL ? ch.use != NULL
                                : (ch.use == NULL || strcmp(ch.use, c->want_use) != 0) ||
                                      strstr(ch.why, c->want_in_why) == NULL) {
            print_error("case %zu (%s, isa %d, var %s): use %s, why '%s'; want %s, '%s'\n", i,
                        c->picked ? c->picked : "NULL", (int)c->cpu.isa,
                        c->coretype ? c->coretype : "unset", ch.use ? ch.use : "keep", ch.why,
                        c->want_use ? c->want_use : "keep", c->want_in_why);
            fail();
        }
        assert_non_null(strstr(ch.why, c->want_in_why));
    }
}

static void test_core_table_knows_openblas_x86_cores(void **state)
{
    (void)state;
    assert_int_equal(wisp_blas_core_isa("Prescott"), WISP_ISA_BASE);
    assert_int_equal(wisp_blas_core_isa("sandybridge"), WISP_ISA_AVX);
    assert_int_equal(wisp_blas_core_isa("Haswell"), WISP_ISA_AVX2);
    assert_int_equal(wisp_blas_core_isa("Zen"), WISP_ISA_AVX2);
    assert_int_equal(wisp_blas_core_isa("Cooperlake"), WISP_ISA_AVX512);
    assert_int_equal(wisp_blas_core_isa("Unknown"), -1);
    assert_int_equal(wisp_blas_core_isa(NULL), -1);
    /* every best core is a core of the table at the CPU's own level */
    const wisp_cpu_t cpus[] = {S_AVX512, S_AVX2_INTEL, S_AVX2_AMD, S_AVX_ONLY};
    for (size_t i = 0; i < sizeof cpus / sizeof cpus[0]; i++)
        assert_int_equal(wisp_blas_core_isa(wisp_blas_best_core(&cpus[i])), (int)cpus[i].isa);
    assert_null(wisp_blas_best_core(&S_SSE_ONLY));
}

static void test_loaded_core_is_at_least_the_cpus_level_or_explained(void **state)
{
    (void)state;
    /* on this machine, with whatever OpenBLAS loaded: the decision has a reason and the
     * verification sgemm agrees with the loop */
    wisp_cpu_t cpu;
    wisp_cpu_detect(&cpu);
    assert_true(cpu.isa >= WISP_ISA_BASE && cpu.isa <= WISP_ISA_AVX512);
    assert_int_equal(wisp_blas_verify(), 0);
    setenv("WISP_BLAS_TEST_BREAK", "1", 1);
    assert_int_equal(wisp_blas_verify(), -1);
    unsetenv("WISP_BLAS_TEST_BREAK");
    assert_non_null(strstr(wisp_blas_summary(), openblas_get_corename()));
}

/* C = A B with every A subnormal (1e-40) and B = 1, K = 256: without FTZ/DAZ each C is
 * 2.56e-38 (a normal float), with either flag 0. The product is large enough that
 * OpenBLAS splits it over its threads, so a thread without the flags leaves non-zero
 * entries. (With a sum that stays subnormal, K = 64, this OpenBLAS runs one thread.) */
static size_t s_nonzero_after_subnormal_gemm(void)
{
    const int m = 1024, n = 1024, k = 256;
    float *a = wisp_alloc((size_t)m * k * sizeof *a), *b = wisp_alloc((size_t)k * n * sizeof *b);
    float *c = wisp_alloc((size_t)m * n * sizeof *c);
    assert_true(a && b && c);
    for (size_t i = 0; i < (size_t)m * k; i++)
        a[i] = 1e-40f;
    for (size_t i = 0; i < (size_t)k * n; i++)
        b[i] = 1.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    size_t nz = 0;
    for (size_t i = 0; i < (size_t)m * n; i++)
        nz += c[i] != 0.0f;
    wisp_free(a), wisp_free(b), wisp_free(c);
    return nz;
}

static void test_ftz_daz_reaches_openblas_threads(void **state)
{
    (void)state;
    int nt = openblas_get_num_threads();
    openblas_set_num_threads(2); /* threads started now, from a thread without the flags */
    size_t before = s_nonzero_after_subnormal_gemm();
    assert_int_equal(before, (size_t)1024 * 1024); /* subnormals survive without the flags */
    wisp_blas_set_ftz_daz();
    /* the flags on this thread alone: OpenBLAS's other thread still keeps its rows */
    size_t main_only = s_nonzero_after_subnormal_gemm();
    assert_true(main_only > 0 && main_only < (size_t)1024 * 1024);
    wisp_blas_threads_ftz_daz();
    assert_true(wisp_blas_ftz_daz_enabled());
    assert_int_equal(s_nonzero_after_subnormal_gemm(), 0);
    openblas_set_num_threads(nt);
}

typedef struct {
    volatile float tiny; /* 1e-30: tiny * tiny' underflows to a subnormal */
    uint32_t got[4];     /* bits: a subnormal read back under DAZ would compare as 0 */
    int flags[4];
} s_pool_probe_t;

static void s_probe(void *arg, int tid)
{
    s_pool_probe_t *p = arg;
    volatile float sub = p->tiny * 1e-10f; /* 1e-40: subnormal unless FTZ */
    float v = sub;
    memcpy(&p->got[tid], &v, sizeof v);
    p->flags[tid] = wisp_blas_ftz_daz_enabled();
}

static void test_pool_threads_flush_subnormals(void **state)
{
    (void)state;
    unsigned saved = _mm_getcsr();
    _mm_setcsr(saved & ~0x8040u); /* a creator without the flags: they must not be inherited */
    nn_pool_t *pool = nn_pool_new(4);
    assert_non_null(pool);
    s_pool_probe_t p = {.tiny = 1e-30f};
    nn_pool_run(pool, s_probe, &p);
    nn_pool_destroy(&pool);
    _mm_setcsr(saved);
    assert_true(p.got[0] != 0); /* the caller keeps its own mode */
    assert_int_equal(p.flags[0], 0);
    for (int t = 1; t < 4; t++) {
        assert_int_equal(p.flags[t], 1);
        assert_int_equal(p.got[t], 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decision_table_covers_pick_isa_and_variable),
        cmocka_unit_test(test_core_table_knows_openblas_x86_cores),
        cmocka_unit_test(test_loaded_core_is_at_least_the_cpus_level_or_explained),
        cmocka_unit_test(test_ftz_daz_reaches_openblas_threads),
        cmocka_unit_test(test_pool_threads_flush_subnormals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
