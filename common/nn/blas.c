/* nn/blas.c: the OpenBLAS core decision and the floating-point mode (see blas.h).
 *
 * The decision itself (wisp_blas_decide) is a pure function of four facts, tested by
 * a table in tests/test_blas.c; wisp_blas_startup is the state machine around it that
 * reads the facts, re-executes and verifies. The stages, carried by WISP_BLAS_STAGE =
 * "PID:STAGE:PICKED:TARGET" (PID guards against a value inherited from a parent):
 *   (none) fresh start: decide; re-exec as "set" when a better core exists
 *   sim    test-only: OPENBLAS_CORETYPE was set by us to simulate OpenBLAS's pick;
 *          decide as a fresh start would with that pick
 *   set    we asked for TARGET: check it loaded and computes; else re-exec "fallback"
 *   fallback  OpenBLAS's own choice again, after TARGET failed; never re-exec */
#include "nn/blas.h"

#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <xmmintrin.h>
#define S_X86 1
#else
#define S_X86 0
#endif

#include "base/log.h"

#define S_GUARD    "WISP_BLAS_STAGE"
#define S_VAR      "OPENBLAS_CORETYPE"
#define S_NAME_MAX 32 /* longest core name accepted from the guard variable */

/* The process's decision (blas.h: written once before threads start). */
static char s_summary[256];

/* OpenBLAS's pthread server: joins its threads; the next BLAS call that needs them
 * creates them again from the calling thread. Internal to OpenBLAS's pthreads build
 * (exported by Debian's libopenblas), absent from the OpenMP and serial builds, so weak. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

/* ---- CPU and cores ---- */

static const struct {
    const char *name;
    wisp_isa_t isa;
} s_cores[] = {
    /* x86-64 cores of OpenBLAS's DYNAMIC_ARCH list, by the instructions their kernels use */
    {"Katmai", WISP_ISA_BASE},       {"Coppermine", WISP_ISA_BASE},
    {"Northwood", WISP_ISA_BASE},    {"Prescott", WISP_ISA_BASE},
    {"Banias", WISP_ISA_BASE},       {"Atom", WISP_ISA_BASE},
    {"Core2", WISP_ISA_BASE},        {"Penryn", WISP_ISA_BASE},
    {"Dunnington", WISP_ISA_BASE},   {"Nehalem", WISP_ISA_BASE},
    {"Athlon", WISP_ISA_BASE},       {"Opteron", WISP_ISA_BASE},
    {"Opteron_SSE3", WISP_ISA_BASE}, {"Barcelona", WISP_ISA_BASE},
    {"Nano", WISP_ISA_BASE},         {"Bobcat", WISP_ISA_BASE},
    {"Sandybridge", WISP_ISA_AVX},   {"Bulldozer", WISP_ISA_AVX},
    {"Piledriver", WISP_ISA_AVX},    {"Steamroller", WISP_ISA_AVX},
    {"Excavator", WISP_ISA_AVX},     {"Haswell", WISP_ISA_AVX2},
    {"Zen", WISP_ISA_AVX2},          {"SkylakeX", WISP_ISA_AVX512},
    {"Cooperlake", WISP_ISA_AVX512}, {"SapphireRapids", WISP_ISA_AVX512},
};

int wisp_blas_core_isa(const char *core)
{
    for (size_t i = 0; core && i < sizeof s_cores / sizeof s_cores[0]; i++)
        if (strcasecmp(core, s_cores[i].name) == 0)
            return (int)s_cores[i].isa;
    return -1;
}

const char *wisp_isa_name(wisp_isa_t isa)
{
    static const char *names[] = {"SSE", "AVX", "AVX2", "AVX-512"};
    return (unsigned)isa < 4 ? names[isa] : "?";
}

const char *wisp_blas_best_core(const wisp_cpu_t *cpu)
{
    switch (cpu->isa) {
    case WISP_ISA_AVX512:
        return "SkylakeX"; /* Cooperlake adds only bf16 GEMMs: same sgemm, older builds lack it */
    case WISP_ISA_AVX2: return cpu->amd ? "Zen" : "Haswell";
    case WISP_ISA_AVX: return "Sandybridge";
    default: return NULL;
    }
}

#if S_X86
static unsigned long long s_xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

void wisp_cpu_detect(wisp_cpu_t *out)
{
    memset(out, 0, sizeof *out);
#if S_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return;
    unsigned max_leaf = a;
    /* vendor string is ebx, edx, ecx: "AuthenticAMD" / "HygonGenuine" */
    out->amd = (b == 0x68747541u && d == 0x69746e65u) || (b == 0x6f677948u && d == 0x6e65476eu);
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    unsigned long long xcr0 = osxsave ? s_xgetbv0() : 0;
    if (!avx || (xcr0 & 0x6) != 0x6) /* the OS must save XMM and YMM state */
        return;
    out->isa = WISP_ISA_AVX;
    if (max_leaf < 7)
        return;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);
    if (avx2 && fma)
        out->isa = WISP_ISA_AVX2;
    if (out->isa == WISP_ISA_AVX2 && avx512 && (xcr0 & 0xe0) == 0xe0) /* opmask, ZMM state */
        out->isa = WISP_ISA_AVX512;
#endif
}

/* ---- the decision ---- */

void wisp_blas_decide(const wisp_blas_facts_t *f, wisp_blas_choice_t *out)
{
    const char *picked = f->picked ? f->picked : "unknown";
    const char *isa = wisp_isa_name(f->cpu.isa);
    const char *best = wisp_blas_best_core(&f->cpu);
    int have = wisp_blas_core_isa(picked);
    out->use = NULL;
    if (f->coretype && f->coretype[0]) {
        if (have >= 0 && have < (int)f->cpu.isa && best)
            snprintf(out->why, sizeof out->why,
                     "%s (OPENBLAS_CORETYPE=%s respected; this %s CPU would run %s)", picked,
                     f->coretype, isa, best);
        else
            snprintf(out->why, sizeof out->why, "%s (OPENBLAS_CORETYPE=%s respected)", picked,
                     f->coretype);
    } else if (!f->dynamic) {
        snprintf(out->why, sizeof out->why, "%s (OpenBLAS built for this core only, %s CPU)",
                 picked, isa);
    } else if (have < 0 || !best || have >= (int)f->cpu.isa) {
        snprintf(out->why, sizeof out->why, "%s (OpenBLAS's choice on an %s CPU)", picked, isa);
    } else {
        out->use = best;
        snprintf(out->why, sizeof out->why, "OpenBLAS picked %s on an %s CPU; using %s", picked,
                 isa, best);
    }
}

/* ---- verification ---- */

/* One product C = op(A) op(B), m x n, inner k, against a double loop. */
static int s_check_one(int m, int n, int k, int ta, int tb, int brk)
{
    size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c);
    int bad = !a || !b || !c;
    unsigned x = 12345u;
    for (size_t i = 0; !bad && i < na + nb; i++) {
        x = x * 1664525u + 1013904223u;
        float v = (float)((x >> 8) & 0xffff) / 32768.0f - 1.0f;
        if (i < na)
            a[i] = v;
        else
            b[i - na] = v;
    }
    if (!bad) {
        /* row-major: A is (m,k), or (k,m) when transposed; B is (k,n), or (n,k) */
        int lda = ta ? m : k, ldb = tb ? k : n;
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
        for (int i = 0; i < m && !bad; i++)
            for (int j = 0; j < n && !bad; j++) {
                double s = 0, mag = 0;
                for (int p = 0; p < k; p++) {
                    double av = ta ? a[(size_t)p * m + i] : a[(size_t)i * k + p];
                    double bv = tb ? b[(size_t)j * k + p] : b[(size_t)p * n + j];
                    s += av * bv;
                    mag += fabs(av * bv);
                }
                if (brk && i == m / 2 && j == n / 3)
                    s += 1.0 + mag; /* WISP_BLAS_TEST_BREAK: a wrong reference value */
                if (!(fabs((double)c[(size_t)i * n + j] - s) <= 1e-5 * mag + 1e-30))
                    bad = 1;
            }
    }
    free(a), free(b), free(c);
    return bad ? -1 : 0;
}

int wisp_blas_verify(void)
{
    /* odd edges for the kernels' tails, both transpositions, one block large enough
     * for the packed path of every core (~3 M multiply-adds in all) */
    static const int shapes[][5] = {
        {37, 53, 129, 0, 1}, {64, 64, 64, 0, 0}, {96, 17, 300, 1, 0}, {160, 144, 136, 0, 1}};
    const char *brk = getenv("WISP_BLAS_TEST_BREAK");
    int b = brk && brk[0] == '1';
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (s_check_one(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], shapes[i][4],
                        b && i == 3) != 0)
            return -1;
    return 0;
}

/* ---- floating-point mode ---- */

void wisp_blas_set_ftz_daz(void)
{
#if S_X86
    _mm_setcsr(_mm_getcsr() | 0x8040u); /* bit 15 FTZ, bit 6 DAZ */
#endif
}

int wisp_blas_ftz_daz_enabled(void)
{
#if S_X86
    return (_mm_getcsr() & 0x8040u) == 0x8040u;
#else
    return 0;
#endif
}

void wisp_blas_threads_ftz_daz(void)
{
    wisp_blas_set_ftz_daz();
    /* OpenBLAS starts its threads while loading (before main) or when the count is
     * raised, from whichever thread asks; stopped here, they are started again on the
     * next threaded call by its caller (this thread or a pool thread, both flushed). */
    if (blas_thread_shutdown_)
        blas_thread_shutdown_();
}

/* ---- start-up ---- */

typedef struct {
    char stage[16];
    char picked[S_NAME_MAX];
    char target[S_NAME_MAX];
} s_guard_t;

/* Copies the next ':'-separated field of at most cap-1 characters; -1 when too long. */
static int s_field(const char **p, char *dst, size_t cap)
{
    const char *e = strchr(*p, ':');
    size_t n = e ? (size_t)(e - *p) : strlen(*p);
    if (n >= cap)
        return -1;
    memcpy(dst, *p, n);
    dst[n] = '\0';
    *p += n + (e ? 1 : 0);
    return 0;
}

/* 1 when WISP_BLAS_STAGE is present, well formed and names this process. */
static int s_guard_read(s_guard_t *g)
{
    const char *v = getenv(S_GUARD);
    if (!v)
        return 0;
    char *end = NULL;
    errno = 0;
    long pid = strtol(v, &end, 10);
    if (errno || end == v || *end != ':' || pid <= 0 || pid != (long)getpid())
        return 0;
    const char *p = end + 1;
    if (s_field(&p, g->stage, sizeof g->stage) || s_field(&p, g->picked, sizeof g->picked) ||
        s_field(&p, g->target, sizeof g->target))
        return 0;
    return 1;
}

/* Re-executes this program with the guard set to STAGE and OPENBLAS_CORETYPE = core
 * (unset when NULL). Returns only on failure, with the environment restored. */
static void s_reexec(char **argv, const char *stage, const char *picked, const char *target,
                     const char *core)
{
    char guard[128];
    snprintf(guard, sizeof guard, "%ld:%s:%s:%s", (long)getpid(), stage, picked ? picked : "",
             target ? target : "");
    if (setenv(S_GUARD, guard, 1) != 0 || (core ? setenv(S_VAR, core, 1) : unsetenv(S_VAR)) != 0)
        goto fail;
    execv("/proc/self/exe", argv);
    if (argv[0] && strchr(argv[0], '/'))
        execv(argv[0], argv);
fail:
    WISP_LOGW("blas: cannot re-execute %s (%s); keeping OpenBLAS's kernels",
              argv[0] ? argv[0] : "?", strerror(errno));
    unsetenv(S_GUARD);
    unsetenv(S_VAR);
}

/* The launcher's rank for the log prefix before MPI_Init (0 when not launched). */
static int s_env_rank(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        char *end = NULL;
        if (!v || !*v)
            continue;
        errno = 0;
        long r = strtol(v, &end, 10);
        if (!errno && *end == '\0' && r >= 0 && r <= INT_MAX)
            return (int)r;
    }
    return 0;
}

static int s_is_dynamic(void)
{
    const char *cfg = openblas_get_config();
    return cfg && strstr(cfg, "DYNAMIC_ARCH") != NULL;
}

/* A fresh start (coretype: the user's OPENBLAS_CORETYPE, NULL in the "sim" stage):
 * decides, re-executes when a better core exists, else records the decision. */
static void s_fresh(char **argv, const char *loaded, const char *coretype, const wisp_cpu_t *cpu)
{
    wisp_blas_facts_t f = {loaded, *cpu, coretype, s_is_dynamic()};
    wisp_blas_choice_t ch;
    wisp_blas_decide(&f, &ch);
    if (ch.use) {
        s_reexec(argv, "set", loaded, ch.use, ch.use);
        snprintf(s_summary, sizeof s_summary, "%s (re-execution failed; %s)", loaded, ch.why);
        return;
    }
    snprintf(s_summary, sizeof s_summary, "%s", ch.why);
    int have = wisp_blas_core_isa(loaded);
    if (have >= 0 && have < (int)cpu->isa)
        WISP_LOGI("blas: %s", ch.why); /* kept below the CPU's level: worth a line */
    else
        WISP_LOGD("blas: %s", ch.why);
}

/* The "set" stage: the asked-for core must be loaded and agree with the loop. */
static void s_check_set(char **argv, const s_guard_t *g, const char *loaded, const wisp_cpu_t *cpu,
                        const char *sim)
{
    if (strcasecmp(loaded, g->target) == 0 && wisp_blas_verify() == 0) {
        snprintf(s_summary, sizeof s_summary, "%s (OpenBLAS picked %s on an %s CPU; verified)",
                 loaded, g->picked, wisp_isa_name(cpu->isa));
        WISP_LOGI("blas: OpenBLAS picked %s on an %s CPU; using %s", g->picked,
                  wisp_isa_name(cpu->isa), loaded);
        return;
    }
    /* back to OpenBLAS's own choice: no variable, or the simulated pick again */
    s_reexec(argv, "fallback", g->picked, g->target, sim ? g->picked : NULL);
    snprintf(s_summary, sizeof s_summary, "%s (%s failed verification; re-execution failed)",
             loaded, g->target);
}

void wisp_blas_startup(char role, char **argv)
{
    wisp_log_init(role, s_env_rank(), wisp_log_level());
    s_guard_t g;
    int ours = s_guard_read(&g);
    const char *sim = getenv("WISP_BLAS_TEST_PICK");
    const char *user = getenv(S_VAR);
    const char *loaded = openblas_get_corename();
    loaded = loaded ? loaded : "unknown";
    wisp_cpu_t cpu;
    wisp_cpu_detect(&cpu);
    if (sim && (!*sim || strlen(sim) >= S_NAME_MAX))
        sim = NULL;
    if (!ours) {
        unsetenv(S_GUARD); /* stale (another pid) or malformed */
        if (sim && !(user && *user))
            s_reexec(argv, "sim", sim, NULL, sim);
        s_fresh(argv, loaded, user, &cpu);
    } else if (strcmp(g.stage, "sim") == 0) {
        s_fresh(argv, loaded, NULL, &cpu);
    } else if (strcmp(g.stage, "set") == 0) {
        s_check_set(argv, &g, loaded, &cpu, sim);
    } else {
        snprintf(s_summary, sizeof s_summary, "%s (OpenBLAS's choice; %s failed verification)",
                 loaded, g.target);
        WISP_LOGW("blas: %s kernels disagree with a plain loop; keeping OpenBLAS's %s", g.target,
                  loaded);
    }
    if (ours) { /* the decision is made: children decide for themselves */
        unsetenv(S_GUARD);
        unsetenv(S_VAR);
    }
    wisp_blas_threads_ftz_daz();
}

const char *wisp_blas_summary(void)
{
    if (!s_summary[0]) { /* filled lazily by the first caller, like the start-up would */
        const char *c = openblas_get_corename();
        snprintf(s_summary, sizeof s_summary, "%s (start-up check not run)", c ? c : "unknown");
    }
    return s_summary;
}
