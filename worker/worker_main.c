/* mpirun -np N wisp-worker --coordinator tcp://HOST:PORT
 *        [--coordinator-file FILE] [--curve-server FILE --curve-key PREFIX]
 *        [--timeout S] [--log-level L]
 * Each MPI rank is one worker. MPI errors return codes (MPI_ERRORS_RETURN)
 * instead of aborting, so a rank reports what failed before it exits. */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/exit.h"
#include "base/log.h"
#include "base/util.h"
#include "nn/blas.h"
#include "worker.h"

static volatile sig_atomic_t s_stop_flag;

/* Sanitizer builds: Open MPI's dlopen'ed components leak at MPI_Finalize with
 * stacks LeakSanitizer cannot symbolise (so they cannot be suppressed), which
 * would turn every rank's exit into a failure. Leak checking of the worker code
 * itself runs in-process in tests/test_coord.c. Without sanitizers this hook is
 * never called. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop_flag = 1;
}

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "usage: mpirun -np N wisp-worker --coordinator tcp://HOST:PORT [--coordinator-file FILE]\n"
        "                   [--curve-server SERVER.public --curve-key PREFIX] [--timeout S]\n"
        "                   [--log-level debug|info|warn|error]\n"
        "--coordinator-file waits for FILE (written by wisp-coordinator --endpoint-file).\n"
        "\n"
        "examples:\n"
        "  mpirun -np 8 wisp-worker --coordinator-file /shared/run1/endpoint\n"
        "  mpirun -np 4 --hostfile hosts wisp-worker --coordinator tcp://node0:5555 --timeout 60\n"
        "  mpirun -np 8 wisp-worker --coordinator-file /shared/run1/endpoint \\\n"
        "      --curve-server /shared/keys/coordinator.public --curve-key /shared/keys/worker\n");
}

/* Waits up to timeout s for the endpoint file to appear. */
static int s_read_endpoint(const char *path, double timeout, char *ep, size_t n)
{
    double end = wisp_now() + timeout;
    for (;;) {
        char *text = NULL;
        size_t len = 0;
        if (access(path, R_OK) == 0 && wisp_read_file(path, n - 1, &text, &len, NULL) == 0) {
            while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
                text[--len] = '\0';
            snprintf(ep, n, "%s", text);
            free(text);
            return len ? 0 : -1;
        }
        if (wisp_now() > end)
            return -1;
        usleep(100000);
    }
}

int main(int argc, char **argv)
{
    int provided = 0, rank = 0, size = 1;
    wisp_blas_startup('W', argv); /* before MPI_Init: may re-execute (nn/blas.h) */
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "wisp-worker: MPI_Init failed\n");
        return WISP_EXIT_FAILURE;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    wisp_log_init('W', rank, WISP_LOG_INFO);

    wisp_worker_params_t p;
    wisp_worker_default_params(&p);
    const char *endpoint_file = NULL;
    char endpoint[512] = "";
    int code = WISP_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            code = WISP_EXIT_OK;
            goto done;
        } else if (!strcmp(a, "--coordinator") && i + 1 < argc) {
            snprintf(endpoint, sizeof endpoint, "%s", argv[++i]);
        } else if (!strcmp(a, "--coordinator-file") && i + 1 < argc) {
            endpoint_file = argv[++i];
        } else if (!strcmp(a, "--curve-server") && i + 1 < argc) {
            p.curve_server_public = argv[++i];
        } else if (!strcmp(a, "--curve-key") && i + 1 < argc) {
            p.curve_key = argv[++i];
        } else if (!strcmp(a, "--timeout") && i + 1 < argc) {
            p.timeout = atof(argv[++i]);
        } else if (!strcmp(a, "--log-level") && i + 1 < argc) {
            int l = wisp_log_parse_level(argv[++i]);
            if (l < 0)
                goto usage;
            wisp_log_set_level((wisp_log_level_t)l);
        } else {
            goto usage;
        }
    }
    if (!endpoint[0] && endpoint_file &&
        s_read_endpoint(endpoint_file, p.timeout, endpoint, sizeof endpoint) != 0) {
        fprintf(stderr, "wisp-worker: %s: no coordinator endpoint after %.0f s\n", endpoint_file,
                p.timeout);
        code = WISP_EXIT_FAILURE;
        goto done;
    }
    if (!endpoint[0] || (p.curve_server_public && !p.curve_key) || !(p.timeout > 0))
        goto usage;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    MPI_Comm comm = MPI_COMM_WORLD;
    /* One id for the ranks of this mpirun: step jobs need the whole world. */
    unsigned long long world = 0;
    if (rank == 0) {
        wisp_rng_t r;
        wisp_rng_seed(&r, (uint64_t)getpid() ^ (uint64_t)(wisp_now() * 1e9));
        world = wisp_rng_u64(&r);
    }
    if (MPI_Bcast(&world, 1, MPI_UNSIGNED_LONG_LONG, 0, comm) != MPI_SUCCESS) {
        fprintf(stderr, "wisp-worker[%d]: MPI_Bcast of the world id failed\n", rank);
        code = WISP_EXIT_FAILURE;
        goto done;
    }
    p.world = world;
    p.endpoint = endpoint;
    p.rank = rank;
    p.size = size;
    p.mpi_comm = &comm;
    p.stop = &s_stop_flag;
    p.set_blas_threads = 1;
    wisp_error_t err = {0};
    wisp_worker_stats_t stats = {0};
    int rc = wisp_worker_run(&p, &stats, &err);
    if (rc == WISP_ERR_INTERRUPTED) {
        code = WISP_EXIT_INTERRUPTED;
    } else if (rc) {
        fprintf(stderr, "wisp-worker[%d]: %s\n", rank, err.msg);
        code = WISP_EXIT_FAILURE;
    } else {
        code = WISP_EXIT_OK;
    }
    /* A step job's ranks meet in collectives: a rank leaving before the end (error,
     * STOP of a dropped world, signal) may leave a peer blocked in one, and
     * MPI_Finalize would then wait for good. Ending the world makes mpirun exit so
     * the launcher can relaunch or end. */
    if (code != WISP_EXIT_OK && size > 1 && stats.step_job) {
        fprintf(stderr, "wisp-worker[%d]: leaving the training world early: ending it\n", rank);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
    goto done;
usage:
    s_usage(stderr);
done:
    MPI_Finalize();
    return code;
}
