/* windows.c: fixed windows over long audio and features.json (see windows.h). */
#include "audio/windows.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audio/audio.h"
#include "audio/features.h"
#include "audio/mel.h"
#include "base/util.h"
#include "formats/json.h"

int wisp_windows_parse_aggregate(const char *name, wisp_windows_agg_t *out, wisp_error_t *err)
{
    if (name && strcmp(name, "mean") == 0)
        *out = WISP_WINDOWS_MEAN;
    else if (name && strcmp(name, "max") == 0)
        *out = WISP_WINDOWS_MAX;
    else
        return wisp_error_set(err, WISP_ERR_ARG, "window aggregate '%s': use mean or max",
                              name ? name : "");
    return WISP_OK;
}

const char *wisp_windows_aggregate_name(wisp_windows_agg_t agg)
{
    return agg == WISP_WINDOWS_MAX ? "max" : "mean";
}

int wisp_windows_check(wisp_windows_opts_t *o, wisp_error_t *err)
{
    const double max_s = (double)WISP_N_SAMPLES / WISP_SAMPLE_RATE;
    if (!(o->seconds >= 0 && o->seconds <= max_s))
        return wisp_error_set(err, WISP_ERR_ARG,
                              "window %g s: must be in (0, %g] (the encoder sees %g s), or 0 "
                              "for none",
                              o->seconds, max_s, max_s);
    if (o->seconds == 0)
        return WISP_OK;
    if (o->seconds * WISP_SAMPLE_RATE < 1)
        return wisp_error_set(err, WISP_ERR_ARG, "window %g s is shorter than one sample",
                              o->seconds);
    if (o->hop == 0)
        o->hop = o->seconds;
    if (!(o->hop * WISP_SAMPLE_RATE >= 1 && o->hop <= o->seconds))
        return wisp_error_set(err, WISP_ERR_ARG,
                              "window hop %g s: must be in (0, %g] (the window; a longer hop "
                              "would leave audio between windows unlabelled)",
                              o->hop, o->seconds);
    if (o->aggregate != WISP_WINDOWS_MEAN && o->aggregate != WISP_WINDOWS_MAX)
        return wisp_error_set(err, WISP_ERR_ARG, "window aggregate %d: use mean or max",
                              (int)o->aggregate);
    return WISP_OK;
}

size_t wisp_windows_samples(double seconds)
{
    double n = floor(seconds * WISP_SAMPLE_RATE + 0.5);
    return n < 1 ? 1 : (size_t)n;
}

size_t wisp_windows_count(size_t n, size_t win, size_t hop)
{
    if (n <= win)
        return 1;
    return 1 + (n - win + hop - 1) / hop;
}

void wisp_windows_at(size_t n, size_t win, size_t hop, size_t k, size_t *start, size_t *len)
{
    if (n <= win) {
        *start = 0;
        *len = n;
        return;
    }
    size_t last = wisp_windows_count(n, win, hop) - 1;
    *start = k >= last ? n - win : k * hop;
    *len = win;
}

size_t wisp_windows_random_start(size_t n, size_t win, uint64_t seed, uint64_t epoch, uint64_t item)
{
    if (n <= win)
        return 0;
    /* One generator per (seed, epoch, item): the start does not depend on the order in
     * which items are visited, the rank that loads them or what was drawn before. */
    wisp_rng_t g;
    wisp_rng_seed(&g, seed ^ (epoch * 0x9e3779b97f4a7c15ull) ^ (item * 0xc2b2ae3d27d4eb4full));
    return (size_t)(wisp_rng_u64(&g) % (uint64_t)(n - win + 1));
}

int wisp_windows_train_clip(wisp_features_t *feat, const char *path, double window_seconds,
                            uint64_t seed, uint64_t epoch, uint64_t item, float *out,
                            wisp_features_info_t *info, wisp_error_t *err)
{
    if (window_seconds <= 0)
        return wisp_features_file(feat, path, out, info, err);
    wisp_audio_t a;
    memset(&a, 0, sizeof a);
    memset(info, 0, sizeof *info);
    int rc = wisp_features_decode(path, 0, &a, err);
    if (rc != WISP_OK)
        return rc;
    size_t win = wisp_windows_samples(window_seconds);
    size_t start = wisp_windows_random_start(a.n, win, seed, epoch, item);
    size_t len = a.n - start < win ? a.n - start : win;
    info->duration = a.duration;
    info->source_rate = a.source_rate;
    info->source_channels = a.source_channels;
    rc = wisp_features_window(feat, a.samples, a.n, start, len, out, &info->frames, err);
    wisp_audio_free(&a);
    return rc;
}

/* ---- features.json ---- */

char *wisp_feature_settings_text(const wisp_feature_settings_t *s)
{
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (o && cJSON_AddBoolToObject(o, "truncate", s->truncate) &&
        cJSON_AddNumberToObject(o, "window_seconds", s->window_seconds))
        text = wisp_json_print(o);
    cJSON_Delete(o);
    return text;
}

int wisp_feature_settings_save(const char *dir, const wisp_feature_settings_t *s, wisp_error_t *err)
{
    char path[4096];
    if (wisp_path_join(path, sizeof path, dir, "features.json") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    char *text = wisp_feature_settings_text(s);
    if (!text)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    int rc = wisp_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

int wisp_feature_settings_load(const char *dir, wisp_feature_settings_t *s, wisp_error_t *err)
{
    char path[4096];
    memset(s, 0, sizeof *s);
    if (wisp_path_join(path, sizeof path, dir, "features.json") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    if (access(path, F_OK) != 0)
        return 0;
    cJSON *o = NULL;
    int rc = wisp_json_load(path, &o, err);
    if (rc == WISP_OK && !cJSON_IsObject(o))
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: not a JSON object", path);
    if (rc == WISP_OK)
        rc = wisp_json_key_bool(o, "truncate", 0, &s->truncate, path, err);
    if (rc == WISP_OK) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "window_seconds");
        if (w && !cJSON_IsNull(w)) {
            if (!cJSON_IsNumber(w) || !(w->valuedouble >= 0 && w->valuedouble <= 30))
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: window_seconds must be a number in [0, 30]", path);
            else
                s->window_seconds = w->valuedouble;
        }
    }
    cJSON_Delete(o);
    return rc == WISP_OK ? 1 : rc;
}

/* The settings a check compares against: 1 found, 0 nothing to check (no dir, no
 * features.json), negative WISP_ERR_* when malformed. */
static int s_settings(const char *dir, wisp_feature_settings_t *s, wisp_error_t *err)
{
    return dir && dir[0] ? wisp_feature_settings_load(dir, s, err) : 0;
}

int wisp_feature_settings_check(const char *dir, int truncate, wisp_error_t *err)
{
    wisp_feature_settings_t s;
    int rc = s_settings(dir, &s, err);
    if (rc <= 0)
        return rc;
    if (!!s.truncate != !!truncate)
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s was trained on %s log-mel features (features.json) but this "
                              "run uses %s ones: %s",
                              dir, s.truncate ? "truncated" : "padded 30 s",
                              truncate ? "truncated" : "padded 30 s",
                              s.truncate ? "add --truncate (classify.truncate: true)"
                                         : "drop --truncate (classify.truncate: false)");
    return WISP_OK;
}

/* The clip length a window setting shows the encoder: 0 is the first 30 s. */
static size_t s_clip_samples(double window_seconds)
{
    return window_seconds > 0 ? wisp_windows_samples(window_seconds) : (size_t)WISP_N_SAMPLES;
}

int wisp_feature_settings_check_window(const char *dir, double window_seconds, wisp_error_t *err)
{
    wisp_feature_settings_t s;
    int rc = s_settings(dir, &s, err);
    if (rc <= 0)
        return rc;
    if (s_clip_samples(s.window_seconds) == s_clip_samples(window_seconds))
        return WISP_OK;
    char now[64];
    if (window_seconds > 0)
        snprintf(now, sizeof now, "windows of %g s", window_seconds);
    else
        snprintf(now, sizeof now, "the first 30 s of each file");
    if (s.window_seconds > 0)
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s was trained on windows of %g s (features.json window_seconds) "
                              "but this run classifies %s: set classify.window: %g (--window=%g)",
                              dir, s.window_seconds, now, s.window_seconds, s.window_seconds);
    return wisp_error_set(err, WISP_ERR_STATE,
                          "%s was trained on the first 30 s of each file (features.json "
                          "window_seconds 0) but this run classifies %s: set classify.window: "
                          "30 or 0 (--window=30, or no --window)",
                          dir, now);
}
