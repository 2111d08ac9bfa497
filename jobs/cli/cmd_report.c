/* wisp report: prints a summary of a classify results file or a training output
 * directory, and draws PNG plots with gnuplot when it is installed (jobs/cli/report.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/report.h"
#include "base/util.h"

static void s_help(FILE *out)
{
    fprintf(out,
            "usage: wisp report RESULTS.h5|TRAIN_DIR [--plots DIR] [--no-plots] [--max-errors N]\n"
            "       wisp report RESULTS.h5 --csv FILE|- [--segments-csv FILE]\n"
            "\n"
            "For a classify results file: row counts (ok/error), accuracy when the file has\n"
            "true labels, a per-class table (support, predicted, precision, recall, F1), the\n"
            "confusion matrix, the failed rows (path: error) and the run attributes\n"
            "(model/adapter identities, timings, throughput).\n"
            "For a training output directory (metrics.jsonl, adapter/, head/): the loss and\n"
            "accuracy curves (first/last/best), validation per epoch, throughput, the adapter\n"
            "configuration and the label list.\n"
            "\n"
            "When gnuplot is installed, PNG plots are written: <name>_confusion.png for a\n"
            "results file, training_curves.png for a training directory.\n"
            "\n"
            "options:\n"
            "  --plots DIR      where to write the plots (default: next to the input: the\n"
            "                   results file's directory, or the training directory itself)\n"
            "  --no-plots       print the summary only\n"
            "  --max-errors N   list at most N failed rows (default 20; 0 lists all)\n"
            "  --csv FILE       instead of the summary, write the rows of a results file as\n"
            "                   CSV (- for stdout): row, path, label, label_name, score,\n"
            "                   true_label, true_label_name, status, error, note, duration,\n"
            "                   top_1..top_K with their probabilities, prob_<class> per class\n"
            "  --segments-csv FILE  with --csv, also the windows of a windowed run (segments\n"
            "                   group): row, path, start, end, label, label_name, score, probs\n"
            "\n"
            "examples:\n"
            "  wisp report out/test_results.h5\n"
            "  wisp report out/train --plots /tmp/plots\n"
            "  wisp report results.h5 --no-plots --max-errors 0\n"
            "  wisp report results.h5 --csv results.csv --segments-csv windows.csv\n");
}

/* --csv: the rows (and segments) of a results file as CSV. */
static int s_export_csv(const char *input, const char *csv, const char *seg_csv)
{
    wisp_error_t err = {0};
    FILE *out = strcmp(csv, "-") == 0 ? stdout : fopen(csv, "w");
    FILE *seg = seg_csv ? (strcmp(seg_csv, "-") == 0 ? stdout : fopen(seg_csv, "w")) : NULL;
    int rc = WISP_OK;
    if (!out || (seg_csv && !seg))
        rc = wisp_error_set(&err, WISP_ERR_IO, "%s: %s", !out ? csv : seg_csv, strerror(errno));
    else
        rc = wisp_report_results_csv(input, out, seg, &err);
    if (out && out != stdout && fclose(out) != 0 && rc == WISP_OK)
        rc = wisp_error_set(&err, WISP_ERR_IO, "%s: %s", csv, strerror(errno));
    if (seg && seg != stdout && fclose(seg) != 0 && rc == WISP_OK)
        rc = wisp_error_set(&err, WISP_ERR_IO, "%s: %s", seg_csv, strerror(errno));
    if (rc != WISP_OK) {
        fprintf(stderr, "wisp report: %s\n", err.msg);
        return WISP_EXIT_FAILURE;
    }
    return WISP_EXIT_OK;
}

/* "dir/name.h5" -> "name" (the stem names the plot). */
static void s_stem(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, size, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out)
        *dot = '\0';
}

int wisp_cmd_report(int argc, char **argv)
{
    const char *input = NULL, *plots = NULL, *csv = NULL, *seg_csv = NULL;
    int no_plots = 0;
    long max_errors = 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            s_help(stdout);
            return WISP_EXIT_OK;
        } else if (strcmp(a, "--no-plots") == 0) {
            no_plots = 1;
        } else if (strcmp(a, "--plots") == 0 || strncmp(a, "--plots=", 8) == 0) {
            plots = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : "");
            if (!*plots) {
                fprintf(stderr, "wisp report: --plots needs a directory\n");
                return WISP_EXIT_USAGE;
            }
        } else if (strcmp(a, "--csv") == 0 || strcmp(a, "--segments-csv") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "wisp report: %s needs a file (or - for stdout)\n", a);
                return WISP_EXIT_USAGE;
            }
            *(a[2] == 'c' ? &csv : &seg_csv) = argv[++i];
        } else if (strcmp(a, "--max-errors") == 0 || strncmp(a, "--max-errors=", 13) == 0) {
            const char *v = a[12] == '=' ? a + 13 : (i + 1 < argc ? argv[++i] : "");
            char *end;
            errno = 0;
            max_errors = strtol(v, &end, 10);
            if (errno || end == v || *end || max_errors < 0) {
                fprintf(stderr,
                        "wisp report: --max-errors must be a non-negative integer, got '%s'\n", v);
                return WISP_EXIT_USAGE;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "wisp report: unknown option '%s' (try wisp report --help)\n", a);
            return WISP_EXIT_USAGE;
        } else if (!input) {
            input = a;
        } else {
            fprintf(stderr, "wisp report: one input only, got '%s' and '%s'\n", input, a);
            return WISP_EXIT_USAGE;
        }
    }
    if (!input) {
        fprintf(stderr, "wisp report: missing RESULTS.h5 or TRAIN_DIR (try wisp report --help)\n");
        return WISP_EXIT_USAGE;
    }
    struct stat st;
    if (stat(input, &st) != 0) {
        fprintf(stderr, "wisp report: %s: %s\n", input, strerror(errno));
        return WISP_EXIT_FAILURE;
    }
    int is_dir = S_ISDIR(st.st_mode);
    if (seg_csv && !csv) {
        fprintf(stderr, "wisp report: --segments-csv goes with --csv\n");
        return WISP_EXIT_USAGE;
    }
    if (csv) {
        if (is_dir) {
            fprintf(stderr, "wisp report: --csv needs a results file, %s is a directory\n", input);
            return WISP_EXIT_USAGE;
        }
        return s_export_csv(input, csv, seg_csv);
    }

    wisp_error_t err = {0};
    wisp_report_results_t *res = NULL;
    wisp_report_train_t *train = NULL;
    if (is_dir)
        train = wisp_report_train_load(input, &err);
    else
        res = wisp_report_results_load(input, &err);
    if (!res && !train) {
        fprintf(stderr, "wisp report: %s\n", err.msg);
        return WISP_EXIT_FAILURE;
    }
    if (res)
        wisp_report_results_print(res, stdout, (size_t)max_errors);
    else
        wisp_report_train_print(train, stdout);
    fflush(stdout);

    if (!no_plots) {
        char dir[4096], png[4096], stem[1024];
        if (plots)
            snprintf(dir, sizeof dir, "%s", plots);
        else if (is_dir)
            snprintf(dir, sizeof dir, "%s", input);
        else
            wisp_path_dirname(dir, sizeof dir, input);
        if (is_dir)
            snprintf(stem, sizeof stem, "training_curves.png");
        else {
            s_stem(input, stem, sizeof stem - 16);
            strcat(stem, "_confusion.png");
        }
        wisp_error_clear(&err);
        if (!wisp_report_have_gnuplot()) {
            printf("\nplots: gnuplot is not installed (apt-get install gnuplot-nox), no PNGs "
                   "written\n");
        } else if (res && (!res->has_truth || res->n_scored == 0)) {
            printf("\nplots: no ok row with a known true label, no confusion plot\n");
        } else if (train && train->n_steps == 0 && train->n_evals == 0) {
            printf("\nplots: nothing logged yet, no curves\n");
        } else if (wisp_mkdir_p(dir, &err) != WISP_OK ||
                   wisp_path_join(png, sizeof png, dir, stem) != WISP_OK ||
                   (res ? wisp_report_plot_confusion(res, png, &err)
                        : wisp_report_plot_train(train, png, &err)) != WISP_OK) {
            /* The summary is out: a failed plot is a warning, not a failed command. */
            fprintf(stderr, "wisp report: plot failed: %s\n", err.msg[0] ? err.msg : dir);
        } else {
            printf("\nplots: %s\n", png);
        }
    }
    wisp_report_results_destroy(&res);
    wisp_report_train_destroy(&train);
    return WISP_EXIT_OK;
}
