/* metrics.c: the metrics log with its lines written ahead into checkpoints (see
 * metrics.h). */
#include "train/metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static void s_add(wisp_train_metrics_t *m, const char *line, size_t n)
{
    if (m->f) {
        fwrite(line, 1, n, m->f);
        fflush(m->f);
    }
    if (m->len + n + 1 > m->cap) {
        size_t cap = 2 * (m->len + n + 1) + 256;
        char *p = realloc(m->pending, cap);
        if (!p)
            return; /* the log still has the line; only its copy for the checkpoint is lost */
        m->pending = p;
        m->cap = cap;
    }
    memcpy(m->pending + m->len, line, n);
    m->len += n;
    m->pending[m->len] = '\0';
}

/* JSON has no NaN/Inf: null for them. */
static size_t s_num(char *buf, size_t at, size_t n, const char *key, double v)
{
    int k = isfinite(v) ? snprintf(buf + at, n - at, ",\"%s\":%.9g", key, v)
                        : snprintf(buf + at, n - at, ",\"%s\":null", key);
    return k > 0 && at + (size_t)k < n ? at + (size_t)k : at;
}

void wisp_train_metrics_step(wisp_train_metrics_t *m, const wisp_trainer_stats_t *s, long epoch)
{
    char buf[512];
    size_t at = (size_t)snprintf(buf, sizeof buf, "{\"type\":\"step\",\"step\":%ld,\"epoch\":%ld",
                                 s->step, epoch);
    at = s_num(buf, at, sizeof buf, "loss", s->loss);
    at = s_num(buf, at, sizeof buf, "lr", s->lr);
    at = s_num(buf, at, sizeof buf, "acc", s->acc);
    at = s_num(buf, at, sizeof buf, "clips_per_s",
               s->seconds > 0 ? (double)s->items / s->seconds : 0.0);
    at = s_num(buf, at, sizeof buf, "grad_norm", s->grad_norm);
    int k = snprintf(buf + at, sizeof buf - at, ",\"clips\":%ld,\"failed\":%ld}\n", s->items,
                     s->failed);
    if (k > 0 && at + (size_t)k < sizeof buf)
        s_add(m, buf, at + (size_t)k);
}

void wisp_train_metrics_eval(wisp_train_metrics_t *m, long step, long epoch, double val_loss,
                             double val_acc)
{
    char buf[256];
    size_t at = (size_t)snprintf(buf, sizeof buf, "{\"type\":\"eval\",\"step\":%ld,\"epoch\":%ld",
                                 step, epoch);
    at = s_num(buf, at, sizeof buf, "val_loss", val_loss);
    at = s_num(buf, at, sizeof buf, "val_acc", val_acc);
    if (at + 2 < sizeof buf) {
        memcpy(buf + at, "}\n", 2);
        s_add(m, buf, at + 2);
    }
}

wisp_ckpt_file_t wisp_train_metrics_ckpt_file(const wisp_train_metrics_t *m)
{
    wisp_ckpt_file_t f = {WISP_TRAIN_METRICS_CKPT_FILE, m->pending ? m->pending : "", m->len};
    return f;
}

void wisp_train_metrics_saved(wisp_train_metrics_t *m)
{
    if (!m->pending)
        return;
    size_t start = m->len;
    for (int k = 0; k < m->keep_tail && start > 0; k++) { /* back over keep_tail lines */
        start--;
        while (start > 0 && m->pending[start - 1] != '\n')
            start--;
    }
    memmove(m->pending, m->pending + start, m->len - start);
    m->len -= start;
    m->pending[m->len] = '\0';
}

/* A line's type (0 step, 1 eval, -1 other) and step; kept when it belongs before the
 * resume point of step S (step lines <= S, eval lines < S). */
static int s_line_key(const char *line, long *step)
{
    cJSON *j = cJSON_Parse(line);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
    int type = -1;
    if (cJSON_IsString(t) && cJSON_IsNumber(s) && s->valuedouble >= 0 && s->valuedouble < 1e15) {
        type = !strcmp(t->valuestring, "step") ? 0 : !strcmp(t->valuestring, "eval") ? 1 : -1;
        *step = (long)s->valuedouble;
    }
    cJSON_Delete(j);
    return type;
}

static int s_keep(int type, long step, long resume_step)
{
    return (type == 0 && step <= resume_step) || (type == 1 && step < resume_step);
}

/* Appends to out the lines of text that are kept and not yet in seen[type][step]
 * (seen covers steps 0..resume_step). */
static void s_merge(char *text, long resume_step, unsigned char *seen, char **out, size_t *len,
                    size_t *cap)
{
    char *save = NULL;
    for (char *line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        long step = 0;
        int type = s_line_key(line, &step);
        if (type < 0 || !s_keep(type, step, resume_step) || seen[2 * step + type])
            continue;
        seen[2 * step + type] = 1;
        size_t n = strlen(line);
        if (*len + n + 2 > *cap) {
            size_t c = 2 * (*len + n + 2);
            char *p = realloc(*out, c);
            if (!p)
                return;
            *out = p;
            *cap = c;
        }
        memcpy(*out + *len, line, n);
        (*out)[*len + n] = '\n';
        *len += n + 1;
    }
}

int wisp_train_metrics_open(wisp_train_metrics_t *m, const char *path, long resume_step,
                            const char *ahead, size_t ahead_len, wisp_error_t *err)
{
    memset(m, 0, sizeof *m);
    if (!path)
        return WISP_OK;
    char *text = NULL, *extra = NULL, *out = NULL;
    size_t len = 0, olen = 0, ocap = 0;
    unsigned char *seen = NULL;
    int rc = WISP_OK;
    if (resume_step > 0 || ahead) {
        wisp_error_t e = {0};
        rc = wisp_read_file(path, WISP_TRAIN_METRICS_MAX, &text, &len, &e);
        if (rc && rc != WISP_ERR_NOTFOUND) {
            rc = wisp_error_set(err, rc, "%s", e.msg);
            goto done;
        }
        rc = WISP_OK;
        seen = calloc(2 * (size_t)(resume_step + 1), 1);
        extra = malloc(ahead_len + 1);
        if (!seen || !extra) {
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (ahead_len)
            memcpy(extra, ahead, ahead_len);
        extra[ahead_len] = '\0';
        s_merge(text, resume_step, seen, &out, &olen, &ocap);
        s_merge(extra, resume_step, seen, &out, &olen, &ocap);
    }
    if ((rc = wisp_write_file_atomic(path, out ? out : "", olen, err)))
        goto done;
    m->f = fopen(path, "a");
    if (!m->f)
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", path, strerror(errno));
done:
    free(text);
    free(extra);
    free(out);
    free(seen);
    return rc;
}

void wisp_train_metrics_close(wisp_train_metrics_t *m)
{
    if (m->f)
        fclose(m->f);
    free(m->pending);
    memset(m, 0, sizeof *m);
}
