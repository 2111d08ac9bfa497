/* bench_run_classify: end-to-end distributed classify throughput at 1 and 2
 * worker ranks (scaling efficiency), at whisper-tiny dimensions.
 *
 * Builds a random whisper-tiny checkpoint (wisp init-model --size tiny), a
 * synthetic labeled dataset (wisp synth), a seq_bn adapter + head (wisp train,
 * one step), then runs `wisp run` on a classify job with -np 1 and -np 2 and
 * reads the coordinator's JSON summary. Truncated features (clip-length mel)
 * keep the run short; files/s is measured over the time workers were present
 * (model loading included, mpirun startup not).
 *   bench_run_classify [--clips-per-class N] [--padded]
 * Prints key=value lines. Needs mpirun (as root: the OMPI_* variables). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/util.h"

static int s_sh(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "bench_run_classify: failed (%d): %s\n", rc, cmd);
    return rc;
}

static int s_run(const char *bin, const char *dir, int np, double *files_per_s, double *audio_per_s,
                 double *steady)
{
    static char cmd[16384], path[8192];
    snprintf(cmd, sizeof cmd,
             "timeout 600 %s/wisp run %s/job.json -np %d --no-progress --set output=%s/out%d.h5 "
             ">%s/run%d.json 2>%s/run%d.log",
             bin, dir, np, dir, np, dir, np, dir, np);
    int rc = system(cmd);
    if (rc != 0 && WEXITSTATUS(rc) != 1) {
        fprintf(stderr, "bench_run_classify: wisp run -np %d failed (see %s/run%d.log)\n", np, dir,
                np);
        return -1;
    }
    snprintf(path, sizeof path, "%s/run%d.json", dir, np);
    char *text = NULL;
    if (wisp_read_file(path, 1 << 20, &text, NULL, NULL) != 0)
        return -1;
    char *brace = strchr(text, '{'); /* after the endpoint= line */
    cJSON *j = brace ? cJSON_Parse(brace) : NULL;
    free(text);
    cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "files_per_s");
    cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "audio_s_per_s");
    cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "steady_files_per_s");
    if (!cJSON_IsNumber(f) || !cJSON_IsNumber(a) || !cJSON_IsNumber(st)) {
        cJSON_Delete(j);
        return -1;
    }
    *files_per_s = f->valuedouble;
    *audio_per_s = a->valuedouble;
    *steady = st->valuedouble;
    cJSON_Delete(j);
    return 0;
}

int main(int argc, char **argv)
{
    int per_class = 12, padded = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--clips-per-class") && i + 1 < argc)
            per_class = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--padded"))
            padded = 1;
        else {
            fprintf(stderr, "usage: bench_run_classify [--clips-per-class N] [--padded]\n");
            return 2;
        }
    }
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    char self[PATH_MAX], here[PATH_MAX], bin[PATH_MAX + 16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    wisp_path_dirname(here, sizeof here, self);
    snprintf(bin, sizeof bin, "%s/../bin", here);
    char dir[] = "/tmp/wisp-bench-run-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    static char cmd[65536];
    snprintf(cmd, sizeof cmd,
             "%s/wisp init-model --size tiny --num-labels 4 -o %s/model >/dev/null 2>&1 && "
             "%s/wisp synth -o %s/data --classes 4 --per-class %d --formats wav --max-seconds 4 -q "
             ">/dev/null 2>&1 && "
             "%s/wisp train --model %s/model --preset seq_bn --train %s/data/train.csv --truncate "
             "-o %s/trained "
             "--steps 1 --threads 1 >/dev/null 2>&1",
             bin, dir, bin, dir, per_class, bin, dir, dir, dir);
    if (s_sh(cmd) != 0)
        return 1;
    snprintf(cmd, sizeof cmd,
             "cat > %s/job.json <<'EOF'\n"
             "{\"kind\": \"classify\", \"model\": \"model\", \"adapter\": \"trained/adapter\", "
             "\"head\": \"trained/head\",\n"
             " \"manifest\": \"data/all.csv\", \"output\": \"out.h5\",\n"
             " \"classify\": {\"batch_size\": 8, \"truncate\": %s},\n"
             " \"cluster\": {\"shard_size\": 8, \"credit\": 2, \"lease_timeout\": 300, "
             "\"threads_per_worker\": 1}}\n"
             "EOF",
             dir, padded ? "false" : "true");
    if (s_sh(cmd) != 0)
        return 1;
    double f1 = 0, a1 = 0, s1 = 0, f2 = 0, a2 = 0, s2 = 0;
    if (s_run(bin, dir, 1, &f1, &a1, &s1) != 0 || s_run(bin, dir, 2, &f2, &a2, &s2) != 0)
        return 1;
    printf("model=whisper-tiny features=%s clips=%d np1_files_per_s=%.2f np1_audio_s_per_s=%.1f "
           "np1_steady_files_per_s=%.2f np2_files_per_s=%.2f np2_audio_s_per_s=%.1f "
           "np2_steady_files_per_s=%.2f "
           "scaling_efficiency=%.2f steady_scaling_efficiency=%.2f\n",
           padded ? "padded30s" : "truncated", 4 * per_class, f1, a1, s1, f2, a2, s2,
           f1 > 0 ? f2 / (2 * f1) : 0, s1 > 0 ? s2 / (2 * s1) : 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return s_sh(cmd) != 0;
}
