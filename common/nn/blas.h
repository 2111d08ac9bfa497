/* nn/blas.h: which OpenBLAS kernels a wisp process runs, and its floating-point mode.
 *
 * OpenBLAS (built with DYNAMIC_ARCH, as Debian ships it) picks a kernel set ("core")
 * from the CPU model when the library loads. A CPU newer than the build is not
 * recognised and gets a fallback core: on an AVX-512 Xeon unknown to 0.3.21 that is
 * Prescott (SSE3), a fifth of the machine. The variable OPENBLAS_CORETYPE forces a
 * core, but it is read only while the library loads, before main() runs.
 *
 * So every binary calls wisp_blas_startup() first in main() (before MPI_Init): it
 * compares the loaded core with the CPU's instruction set (cpuid) and, when the
 * variable is unset and the core is below what the CPU offers, re-executes the
 * program (/proc/self/exe, same pid, same environment otherwise, so MPI ranks keep
 * their launcher's variables) with OPENBLAS_CORETYPE set to the best core for that
 * instruction set. The new image checks that OpenBLAS loaded that core and that a
 * small sgemm agrees with a plain loop; if not, it re-executes once more without the
 * variable (OpenBLAS's own choice). A guard variable, WISP_BLAS_STAGE, carries the
 * stage and the pid across the re-exec so it happens at most twice. Once decided, the
 * process removes the variables it set, so processes it starts (the coordinator,
 * mpirun's ranks, possibly on other CPUs) decide for themselves. An OPENBLAS_CORETYPE
 * set by the user is always respected. docs/TROUBLESHOOTING.md ("BLAS kernels") has
 * the user's side.
 *
 * The same call sets flush-to-zero and denormals-are-zero (MXCSR FTZ+DAZ) on the
 * calling thread and restarts OpenBLAS's thread pool so that its threads, created
 * again from this thread on the next BLAS call, inherit the mode (a new thread starts
 * with its creator's floating-point environment, C11 7.6). The model's pool threads set
 * it themselves (nn/pool.c). Subnormal floats cost ~100 cycles per operation on x86;
 * flushing them changes results only where values are below 1.2e-38.
 *
 * Test-only variables (tests/integration/blas_reexec.sh):
 *   WISP_BLAS_TEST_PICK=CORE    simulate OpenBLAS picking CORE by itself: the process
 *                               first re-executes with OPENBLAS_CORETYPE=CORE and then
 *                               treats that value as OpenBLAS's own choice;
 *   WISP_BLAS_TEST_BREAK=1      make the verification sgemm disagree (fallback path).
 *
 * Process-wide state: the decision, written once by wisp_blas_startup() before any
 * thread starts and read by wisp_blas_summary(). */
#ifndef WISP_NN_BLAS_H
#define WISP_NN_BLAS_H

/* Instruction-set levels that OpenBLAS's x86-64 kernel sets are written for. */
typedef enum {
    WISP_ISA_BASE = 0,   /* SSE2/SSE3 only */
    WISP_ISA_AVX = 1,    /* AVX without AVX2+FMA (Sandy Bridge, Bulldozer family) */
    WISP_ISA_AVX2 = 2,   /* AVX2 + FMA (Haswell, Zen) */
    WISP_ISA_AVX512 = 3, /* AVX-512 F+BW+VL+DQ with OS support (Skylake-X and later) */
} wisp_isa_t;

typedef struct {
    wisp_isa_t isa; /* highest level the CPU and the OS (XCR0) both enable */
    int amd;        /* AMD/Hygon: the AVX2 core is Zen rather than Haswell */
} wisp_cpu_t;

/* What the decision is made from; all of it is read, nothing is changed. */
typedef struct {
    const char *picked;   /* core OpenBLAS loaded (openblas_get_corename) */
    wisp_cpu_t cpu;       /* from cpuid */
    const char *coretype; /* OPENBLAS_CORETYPE as the user set it; NULL or "" when unset */
    int dynamic;          /* the build selects kernels at load time (DYNAMIC_ARCH) */
} wisp_blas_facts_t;

typedef struct {
    const char *use; /* core to re-execute with; NULL keeps the loaded one */
    char why[192];   /* one line for the log and the summary */
} wisp_blas_choice_t;

/* The CPU this thread runs on (cpuid + xgetbv); WISP_ISA_BASE off x86-64. */
void wisp_cpu_detect(wisp_cpu_t *out);
/* "SSE", "AVX", "AVX2", "AVX-512". */
const char *wisp_isa_name(wisp_isa_t isa);
/* The instruction-set level an OpenBLAS core's kernels use (case-insensitive core name),
 * -1 for a name this table does not know. */
int wisp_blas_core_isa(const char *core);
/* The best core of a Debian/upstream DYNAMIC_ARCH build for a CPU; NULL for WISP_ISA_BASE
 * (no core is better than OpenBLAS's own pick there). */
const char *wisp_blas_best_core(const wisp_cpu_t *cpu);

/* The decision, a pure function of its facts: keep the loaded core when the user set
 * OPENBLAS_CORETYPE, when the build is not DYNAMIC_ARCH (the variable does nothing),
 * when the core is unknown to the table or already at the CPU's level; otherwise use
 * wisp_blas_best_core(). */
void wisp_blas_decide(const wisp_blas_facts_t *facts, wisp_blas_choice_t *out);

/* 0 when cblas_sgemm agrees with a double-precision loop on a few odd shapes and
 * transpositions (relative to sum |a||b|, 1e-5), -1 otherwise. */
int wisp_blas_verify(void);

/* Sets FTZ+DAZ on the calling thread (no-op off x86). */
void wisp_blas_set_ftz_daz(void);
/* FTZ+DAZ on the calling thread and on OpenBLAS's threads: stops OpenBLAS's thread
 * pool (pthreads build) so that the next threaded BLAS call starts it again from a
 * thread in this mode. Call it where no BLAS call runs concurrently. */
void wisp_blas_threads_ftz_daz(void);
/* 1 when the calling thread has both FTZ and DAZ set. */
int wisp_blas_ftz_daz_enabled(void);

/* First call in every main(), before MPI_Init and before any thread is created: the
 * kernel decision above (may re-execute the program; returns only in the final image),
 * FTZ+DAZ for this thread and OpenBLAS's threads, and one log line with role (the
 * log's role letter; the rank is taken from the MPI/Slurm launcher's environment when
 * present). Never fails: whatever goes wrong keeps OpenBLAS's own choice and says so. */
void wisp_blas_startup(char role, char **argv);

/* One line: the core in use and why, e.g. "SkylakeX (OpenBLAS picked Prescott on an
 * AVX-512 CPU; verified)". Without wisp_blas_startup (tests, library use) it says the
 * check did not run. */
const char *wisp_blas_summary(void);

#endif
