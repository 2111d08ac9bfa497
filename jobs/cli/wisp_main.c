/* wisp: the local multi-tool. `wisp COMMAND [options]`; `wisp COMMAND --help`. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "base/log.h"
#include "nn/blas.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} s_command_t;

/* Every subcommand, in --help order; commands.h declares them. */
static const s_command_t s_commands[] = {
    {"features", wisp_cmd_features, "compute Whisper log-mel features of audio files into HDF5"},
    {"classify", wisp_cmd_classify, "label audio files with a model (+adapter, head) into HDF5"},
    {"train", wisp_cmd_train, "train an adapter and classification head on a manifest"},
    {"run", wisp_cmd_run, "run a job config: coordinator + mpirun workers on this machine"},
    {"inspect", wisp_cmd_inspect, "show what a checkpoint, adapter or head directory holds"},
    {"init-model", wisp_cmd_init_model,
     "write a randomly initialised Whisper checkpoint (HF layout)"},
    {"synth", wisp_cmd_synth, "write a labeled synthetic audio dataset with manifests"},
    {"report", wisp_cmd_report, "summarise a results file or a training directory"},
    {NULL, NULL, NULL},
};

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: wisp COMMAND [options]   (wisp COMMAND --help for details)\n\ncommands:\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        fprintf(out, "  %-11s %s\n", c->name, c->summary);
    fprintf(out, "\nDistributed runs: wisp-coordinator JOB.json, mpirun -np N wisp-worker.\n"
                 "wisp --version prints the version and the BLAS kernels in use.\n"
                 "Exit codes: 0 ok, 1 some inputs failed, 2 usage error, 3 failure.\n");
}

int main(int argc, char **argv)
{
    wisp_log_init('L', 0, WISP_LOG_INFO);
    wisp_blas_startup('L', argv); /* may re-execute with better BLAS kernels (nn/blas.h) */
    if (argc < 2) {
        s_usage(stderr);
        return WISP_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        s_usage(stdout);
        return WISP_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("wisp %s\nblas: %s\n", WISP_VERSION, wisp_blas_summary());
        return WISP_EXIT_OK;
    }
    for (const s_command_t *c = s_commands; c->name; c++)
        if (strcmp(argv[1], c->name) == 0)
            return c->run(argc - 1, argv + 1);
    fprintf(stderr, "wisp: unknown command '%s' (try wisp --help)\n", argv[1]);
    return WISP_EXIT_USAGE;
}
