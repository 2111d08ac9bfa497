/* bench_synth: how fast the synthetic data the demo and tests rely on is made.
 *   synth_clip_msamples_per_s   wisp_synth_clip over every class, 16 kHz (no I/O)
 *   synth_dataset_clips_per_s   wisp_synth_dataset, 8 classes x 12 clips, mixed formats
 *   synth_dataset_audio_x_realtime  seconds of audio written per second
 * No PyTorch counterpart: there is nothing to compare against. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "audio/synth.h"
#include "base/util.h"

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    const int rate = 16000;
    const size_t n = 3 * (size_t)rate;
    float *x = wisp_alloc(n * sizeof *x);
    if (!x)
        return 1;
    double t0 = wisp_now();
    int reps = 0;
    do {
        for (int c = 0; c < WISP_SYNTH_NUM_CLASSES; c++)
            wisp_synth_clip(c, (uint64_t)reps * 16 + (uint64_t)c, rate, x, n);
        reps++;
    } while (wisp_now() - t0 < 0.5);
    double dt = wisp_now() - t0;
    printf("synth_clip_msamples_per_s=%.2f\n",
           (double)reps * WISP_SYNTH_NUM_CLASSES * n / dt / 1e6);
    wisp_free(x);

    char dir[] = "/tmp/wisp-bench-synth-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    wisp_synth_params_t p = wisp_synth_default_params();
    p.classes = 8;
    p.per_class = 12;
    wisp_synth_summary_t sum;
    wisp_error_t err = {0};
    t0 = wisp_now();
    int rc = wisp_synth_dataset(dir, &p, &sum, &err);
    dt = wisp_now() - t0;
    nftw(dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (rc != WISP_OK) {
        fprintf(stderr, "bench_synth: %s\n", err.msg);
        return 1;
    }
    printf("synth_dataset_clips_per_s=%.1f\n", (double)sum.clips / dt);
    printf("synth_dataset_audio_x_realtime=%.1f\n", sum.seconds / dt);
    return 0;
}
