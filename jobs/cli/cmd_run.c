/* wisp run JOB.json [-np N] [--set key=value ...] [--fresh] [--restarts R] [--mpirun PATH]
 *
 * The local default: starts wisp-coordinator on an ephemeral loopback port and
 * `mpirun -np N wisp-worker --coordinator tcp://127.0.0.1:PORT`. The coordinator
 * is a separate process that outlives the workers: under Open MPI one dead rank
 * ends the whole mpirun, so when mpirun exits while the coordinator still has
 * work, the launcher starts a fresh mpirun (up to R times) and the coordinator
 * re-leases the lost shards. SIGINT/SIGTERM go to the coordinator, which stops
 * cleanly and leaves resumable state. Exit status: the coordinator's. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/commands.h"
#include "formats/jobcfg.h"
#include "base/log.h"
#include "base/util.h"
#include "train/trainer.h"

static volatile sig_atomic_t s_signalled;

static void s_on_signal(int sig)
{
    s_signalled = sig;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: wisp run JOB.json [-np N] [--set key=value ...] [--fresh] [--restarts R]\n"
            "                [--mpirun PATH] [--no-progress]\n"
            "Runs the coordinator and N MPI worker ranks on this machine (default N=1).\n"
            "An mpirun that dies while work remains is relaunched up to R times (default 3).\n"
            "\n"
            "examples:\n"
            "  wisp run classify.json -np 4\n"
            "  wisp run train.json -np 2 --set train.lr=3e-4 --set output=runs/lr3e-4\n"
            "  wisp run classify.json -np 4 --fresh --no-progress   # discard earlier results\n");
}

static pid_t s_spawn(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "wisp run: cannot start %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Waits for pid up to timeout s; returns its exit code, or -1 if still running. */
static int s_wait_for(pid_t pid, double timeout)
{
    double end = wisp_now() + timeout;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        if (r < 0 && errno != EINTR)
            return 255;
        if (wisp_now() >= end)
            return -1;
        usleep(20000);
    }
}

static void s_end(pid_t pid, double grace)
{
    if (pid <= 0 || s_wait_for(pid, grace) >= 0)
        return;
    kill(pid, SIGTERM);
    if (s_wait_for(pid, 5) >= 0)
        return;
    kill(pid, SIGKILL);
    s_wait_for(pid, 5);
}

typedef struct {
    const char *job, *mpirun;
    int np, restarts, fresh, no_progress;
    char **sets;
    int n_sets;
} s_args_t;

/* 0 to run, else the exit code (usage printed). */
static int s_parse(int argc, char **argv, s_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->mpirun = "mpirun";
    a->np = 1;
    a->restarts = 3;
    a->sets = calloc((size_t)argc + 1, sizeof *a->sets);
    if (!a->sets)
        return WISP_EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            s_usage(stdout);
            return -1;
        } else if ((!strcmp(argv[i], "-np") || !strcmp(argv[i], "-n")) && i + 1 < argc) {
            a->np = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            a->sets[a->n_sets++] = argv[++i];
        } else if (!strcmp(argv[i], "--restarts") && i + 1 < argc) {
            a->restarts = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--mpirun") && i + 1 < argc) {
            a->mpirun = argv[++i];
        } else if (!strcmp(argv[i], "--fresh")) {
            a->fresh = 1;
        } else if (!strcmp(argv[i], "--no-progress")) {
            a->no_progress = 1;
        } else if (argv[i][0] != '-' && !a->job) {
            a->job = argv[i];
        } else {
            fprintf(stderr, "wisp run: unexpected argument '%s'\n", argv[i]);
            s_usage(stderr);
            return WISP_EXIT_USAGE;
        }
    }
    if (!a->job || a->np < 1 || a->restarts < 0) {
        s_usage(stderr);
        return WISP_EXIT_USAGE;
    }
    return 0;
}

/* The config is validated here so mistakes surface before anything starts; a train
 * job's output directory is kept (*train_out, "" otherwise) for the closing message. */
static int s_validate(const s_args_t *a, long cores, char *train_out, size_t n)
{
    wisp_jobcfg_t cfg;
    wisp_error_t err = {0};
    if (wisp_jobcfg_load(&cfg, a->job, a->sets, a->n_sets, &err) != 0) {
        fprintf(stderr, "wisp run: %s\n", err.msg);
        return WISP_EXIT_USAGE;
    }
    if ((long)a->np * cfg.threads_per_worker > cores)
        WISP_LOGW(
            "%d ranks x %d threads exceeds the %ld cores here (set cluster.threads_per_worker)",
            a->np, cfg.threads_per_worker, cores);
    snprintf(train_out, n, "%s", strcmp(cfg.kind, "train") == 0 ? cfg.output : "");
    wisp_jobcfg_free(&cfg);
    return 0;
}

/* After an interrupted train job, with every process gone: the checkpoint a rerun
 * resumes from (the coordinator cannot know it: workers may finish one after it). */
static void s_train_resume_note(const char *outdir)
{
    long step = outdir[0] ? wisp_trainer_latest_step(outdir) : -1;
    if (step >= 0)
        fprintf(stderr, "wisp run: interrupted; a rerun resumes from the checkpoint of step %ld\n",
                step);
    else if (outdir[0])
        fprintf(stderr, "wisp run: interrupted before the first checkpoint; a rerun starts over\n");
}

/* Waits for the coordinator's endpoint file; 0, or the coordinator's exit code when
 * it ended first (*coord is then -1). */
static int s_wait_endpoint(pid_t *coord, const char *epfile, char *endpoint, size_t n)
{
    for (;;) {
        char *text = NULL;
        if (access(epfile, R_OK) == 0 && wisp_read_file(epfile, n - 1, &text, NULL, NULL) == 0) {
            snprintf(endpoint, n, "%s", text);
            free(text);
            return 0;
        }
        int rc = s_wait_for(*coord, 0.05);
        if (rc >= 0) {
            *coord = -1;
            return rc;
        }
    }
}

/* Runs mpirun (relaunched while the coordinator still has work) until the
 * coordinator exits; returns its exit code. An mpirun that exits 0 has been told
 * the job is done (workers exit 0 only after STOP "done"): it is not relaunched
 * while the coordinator lingers. */
static int s_supervise(pid_t *coord, pid_t *mpi, char *const margv[], int restarts)
{
    int launches = 0, forwarded = 0, workers_done = 0;
    while (*coord > 0) {
        if (*mpi < 0 && !workers_done && launches <= restarts && !s_signalled) {
            if (launches)
                WISP_LOGW("workers exited while the job is running: relaunching (%d of %d)",
                          launches, restarts);
            *mpi = s_spawn(margv);
            launches++;
        }
        int rc = s_wait_for(*coord, 0.1);
        if (rc >= 0) {
            *coord = -1;
            return rc;
        }
        if ((s_signalled || (*mpi < 0 && !workers_done && launches > restarts)) && !forwarded) {
            if (!s_signalled)
                WISP_LOGE("workers keep exiting (%d launches; their errors are above): stopping "
                          "the coordinator (state stays resumable)",
                          launches);
            kill(*coord, SIGTERM);
            forwarded = 1;
        }
        int mrc = *mpi > 0 ? s_wait_for(*mpi, 0) : -1;
        if (mrc >= 0) {
            *mpi = -1;
            workers_done = mrc == WISP_EXIT_OK;
        }
    }
    return WISP_EXIT_FAILURE;
}

int wisp_cmd_run(int argc, char **argv)
{
    s_args_t a;
    int code = s_parse(argc, argv, &a);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char train_out[WISP_JOBCFG_PATH_MAX] = "";
    if (code == 0)
        code = s_validate(&a, cores, train_out, sizeof train_out);
    if (code) {
        free(a.sets);
        return code < 0 ? WISP_EXIT_OK : code;
    }
    /* The coordinator draws a progress line on this terminal; the workers' log lines
     * reach it through mpirun's pipes and must erase that line first (base/log.h). */
    if (isatty(2))
        setenv(WISP_LOG_ERASE_ENV, "1", 0);
    char self[PATH_MAX], dir[PATH_MAX], coord_bin[PATH_MAX + 32], worker_bin[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char tmp[] = "/tmp/wisp-run-XXXXXX";
    if (n <= 0 || !mkdtemp(tmp)) {
        fprintf(stderr, "wisp run: %s\n", n <= 0 ? "cannot find my own binary" : "mkdtemp failed");
        free(a.sets);
        return WISP_EXIT_FAILURE;
    }
    self[n] = '\0';
    wisp_path_dirname(dir, sizeof dir, self);
    snprintf(coord_bin, sizeof coord_bin, "%s/wisp-coordinator", dir);
    snprintf(worker_bin, sizeof worker_bin, "%s/wisp-worker", dir);
    char epfile[64], endpoint[512] = "";
    snprintf(epfile, sizeof epfile, "%s/endpoint", tmp);

    char **cargv = calloc((size_t)(2 * a.n_sets + 10), sizeof *cargv);
    int k = 0;
    pid_t mpi = -1, coord = -1;
    code = WISP_EXIT_FAILURE;
    if (!cargv)
        goto done;
    cargv[k++] = coord_bin;
    cargv[k++] = (char *)a.job;
    cargv[k++] = "--endpoint-file";
    cargv[k++] = epfile;
    for (int i = 0; i < a.n_sets; i++) {
        cargv[k++] = "--set";
        cargv[k++] = a.sets[i];
    }
    if (a.fresh)
        cargv[k++] = "--fresh";
    if (a.no_progress)
        cargv[k++] = "--no-progress";
    cargv[k] = NULL;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    code = WISP_EXIT_FAILURE;
    coord = s_spawn(cargv);
    if (coord < 0)
        goto done;
    /* The coordinator writes its bound endpoint once it listens. */
    if ((code = s_wait_endpoint(&coord, epfile, endpoint, sizeof endpoint)) != 0 || coord < 0)
        goto done;
    char np_s[16];
    snprintf(np_s, sizeof np_s, "%d", a.np);
    char *margv[16];
    k = 0;
    margv[k++] = (char *)a.mpirun;
    margv[k++] = "-np";
    margv[k++] = np_s;
    if (a.np > cores)
        margv[k++] = "--oversubscribe";
    margv[k++] = worker_bin;
    margv[k++] = "--coordinator";
    margv[k++] = endpoint;
    margv[k] = NULL;
    code = s_supervise(&coord, &mpi, margv, a.restarts);
done:
    if (coord > 0)
        s_end(coord, 0);
    /* After a clean end the workers have been told to stop: give them time to
     * leave; after a coordinator failure nobody will tell them, so end them now. */
    s_end(mpi, code == WISP_EXIT_OK || code == WISP_EXIT_PARTIAL ? 15 : 0.5);
    if (code == WISP_EXIT_INTERRUPTED)
        s_train_resume_note(train_out);
    unlink(epfile);
    rmdir(tmp);
    free(cargv);
    free(a.sets);
    return code;
}
