/* wisp-coordinator JOB.json [--set key=value ...] [--endpoint-file F] [--fresh]
 *                  [--log-level L] [--no-progress]
 * wisp-coordinator --keygen PREFIX      (CURVE keypair: PREFIX.public, PREFIX.secret)
 * wisp-coordinator --keys               (list the job config keys) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exit.h"
#include "coord.h"
#include "formats/jobcfg.h"
#include "base/log.h"
#include "dist/proto.h"
#include "nn/blas.h"

static volatile sig_atomic_t s_stop_flag;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop_flag = 1;
}

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "usage: wisp-coordinator JOB.json [--set key=value ...] [--endpoint-file FILE]\n"
        "                        [--fresh] [--no-progress] [--log-level debug|info|warn|error]\n"
        "       wisp-coordinator --keygen PREFIX   write a CURVE keypair PREFIX.public/.secret\n"
        "       wisp-coordinator --keys            list the job config keys\n"
        "A rerun of the same job resumes from its committed results; --fresh discards them.\n"
        "The bound endpoint is printed as 'endpoint=tcp://HOST:PORT' on stdout, then the\n"
        "final JSON summary. Exit: 0 done, 1 done with item errors, 3 failure, 130 interrupted.\n"
        "\n"
        "examples:\n"
        "  wisp-coordinator job.json --endpoint-file /shared/run1/endpoint --no-progress\n"
        "  wisp-coordinator train.json --set cluster.endpoint=tcp://0.0.0.0:5555 \\\n"
        "      --set train.global_batch=64 --log-level debug\n"
        "  wisp-coordinator --keygen /shared/keys/coordinator   # CURVE keypair\n");
}

int main(int argc, char **argv)
{
    wisp_log_init('C', 0, WISP_LOG_INFO);
    wisp_blas_startup('C', argv); /* may re-execute with better BLAS kernels (nn/blas.h) */
    const char *job = NULL, *endpoint_file = NULL;
    char **sets = calloc((size_t)argc, sizeof *sets);
    int n_sets = 0, fresh = 0, no_progress = 0;
    if (!sets)
        return WISP_EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            s_usage(stdout);
            free(sets);
            return WISP_EXIT_OK;
        } else if (!strcmp(a, "--keygen") && i + 1 < argc) {
            wisp_error_t e = {0};
            int rc = wisp_proto_keygen(argv[++i], &e);
            if (rc)
                fprintf(stderr, "wisp-coordinator: %s\n", e.msg);
            free(sets);
            return rc ? WISP_EXIT_FAILURE : WISP_EXIT_OK;
        } else if (!strcmp(a, "--keys")) {
            const char *const *names;
            int n = wisp_jobcfg_keys(&names);
            for (int k = 0; k < n; k++)
                printf("%s\n", names[k]);
            free(sets);
            return WISP_EXIT_OK;
        } else if (!strcmp(a, "--set") && i + 1 < argc) {
            sets[n_sets++] = argv[++i];
        } else if (!strncmp(a, "--set=", 6)) {
            sets[n_sets++] = (char *)a + 6;
        } else if (!strcmp(a, "--endpoint-file") && i + 1 < argc) {
            endpoint_file = argv[++i];
        } else if (!strcmp(a, "--fresh")) {
            fresh = 1;
        } else if (!strcmp(a, "--resume")) {
            fresh = 0;
        } else if (!strcmp(a, "--no-progress")) {
            no_progress = 1;
        } else if (!strcmp(a, "--log-level") && i + 1 < argc) {
            int l = wisp_log_parse_level(argv[++i]);
            if (l < 0) {
                fprintf(stderr, "wisp-coordinator: unknown log level '%s'\n", argv[i]);
                free(sets);
                return WISP_EXIT_USAGE;
            }
            wisp_log_set_level((wisp_log_level_t)l);
        } else if (a[0] != '-' && !job) {
            job = a;
        } else {
            fprintf(stderr, "wisp-coordinator: unexpected argument '%s'\n", a);
            s_usage(stderr);
            free(sets);
            return WISP_EXIT_USAGE;
        }
    }
    if (!job) {
        s_usage(stderr);
        free(sets);
        return WISP_EXIT_USAGE;
    }
    wisp_error_t err = {0};
    wisp_jobcfg_t cfg;
    if (wisp_jobcfg_load(&cfg, job, sets, n_sets, &err) != 0) {
        fprintf(stderr, "wisp-coordinator: %s\n", err.msg);
        free(sets);
        return WISP_EXIT_USAGE;
    }
    free(sets);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    wisp_coord_params_t p;
    wisp_coord_default_params(&p);
    p.resume = !fresh;
    p.endpoint_file = endpoint_file;
    p.stop = &s_stop_flag;
    if (no_progress)
        p.progress_tty = 0;
    int code = WISP_EXIT_FAILURE;
    wisp_coord_t *c = wisp_coord_new(&cfg, &p, &err);
    if (!c) {
        fprintf(stderr, "wisp-coordinator: %s\n", err.msg);
        goto done;
    }
    printf("endpoint=%s\n", wisp_coord_endpoint(c));
    fflush(stdout);
    int rc = wisp_coord_run(c, &err);
    if (rc == WISP_ERR_INTERRUPTED) {
        code = WISP_EXIT_INTERRUPTED;
    } else if (rc) {
        fprintf(stderr, "wisp-coordinator: %s\n", err.msg);
    } else {
        const cJSON *errors = cJSON_GetObjectItemCaseSensitive(wisp_coord_summary(c), "errors");
        code = cJSON_IsNumber(errors) && errors->valuedouble > 0 ? WISP_EXIT_PARTIAL : WISP_EXIT_OK;
    }
done:
    wisp_coord_destroy(&c);
    wisp_jobcfg_free(&cfg);
    return code;
}
