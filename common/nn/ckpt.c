/* ckpt.c: resumable checkpoints (see ckpt.h for the layout). */
#include "nn/ckpt.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "formats/json.h"
#include "formats/st.h"
#include "base/util.h"

#define CKPT_FORMAT    "wisp-checkpoint"
#define CKPT_VERSION   1
#define CKPT_MAX_STATE (1u << 20)

static int s_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf of a directory this module wrote (no symlinks followed). */
static int s_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int wisp_ckpt_rmtree(const char *path)
{
    return s_rmtree(path);
}

static void s_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static int s_join(char *dst, size_t size, const char *dir, const char *name, wisp_error_t *err)
{
    if (wisp_path_join(dst, size, dir, name) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    return WISP_OK;
}

static int s_save_tensors(const char *path, wisp_model_t *model, const float *base,
                          const char *prefix, const float *base2, const char *prefix2,
                          wisp_error_t *err)
{
    wisp_st_writer_t *w = wisp_st_writer_new();
    if (!w)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    int rc = WISP_OK;
    int nt = wisp_model_num_param_tensors(model);
    for (int i = 0; i < nt && rc == WISP_OK; i++) {
        const wisp_param_info_t *p = wisp_model_param_tensor(model, i);
        char name[512];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        rc = wisp_st_writer_add_f32(w, name, WISP_DT_F32, p->ndim, p->shape, base + p->offset);
        if (rc == WISP_OK && base2) {
            snprintf(name, sizeof name, "%s%s", prefix2, p->name);
            rc = wisp_st_writer_add_f32(w, name, WISP_DT_F32, p->ndim, p->shape, base2 + p->offset);
        }
    }
    if (rc != WISP_OK)
        wisp_error_set(err, rc, "%s: cannot add tensors (%s)", path, wisp_strerror(rc));
    else
        rc = wisp_st_writer_save(w, path, err);
    wisp_st_writer_destroy(&w);
    return rc;
}

static int s_write_state(const char *path, const wisp_ckpt_state_t *st, long opt_steps,
                         size_t num_params, wisp_error_t *err)
{
    cJSON *j = cJSON_CreateObject();
    char hex[32];
    int rc = WISP_OK;
    if (!j)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    cJSON_AddStringToObject(j, "format", CKPT_FORMAT);
    cJSON_AddNumberToObject(j, "version", CKPT_VERSION);
    cJSON_AddNumberToObject(j, "step", (double)st->step);
    cJSON_AddNumberToObject(j, "epoch", (double)st->epoch);
    cJSON_AddNumberToObject(j, "pos", (double)st->pos);
    /* 64-bit values as hex strings: JSON numbers are doubles. */
    snprintf(hex, sizeof hex, "%016" PRIx64, st->data_seed);
    cJSON_AddStringToObject(j, "data_seed", hex);
    snprintf(hex, sizeof hex, "%016" PRIx64, st->rng_state);
    cJSON_AddStringToObject(j, "rng_state", hex);
    cJSON_AddNumberToObject(j, "optimizer_steps", (double)opt_steps);
    cJSON_AddNumberToObject(j, "num_params", (double)num_params);
    cJSON_AddStringToObject(j, "fingerprint", st->fingerprint);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    rc = wisp_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

/* The caller's extra files, each checked to be a plain name inside the directory. */
static int s_write_files(const char *tmp, const wisp_ckpt_file_t *files, int n_files,
                         wisp_error_t *err)
{
    char path[4096];
    for (int i = 0; i < n_files; i++) {
        const char *name = files[i].name;
        /* a plain name, or one inside the adapter/ or head/ written above */
        const char *base = name;
        if (name && (strncmp(name, "adapter/", 8) == 0 || strncmp(name, "head/", 5) == 0)) {
            char sub[16];
            base = strchr(name, '/') + 1;
            snprintf(sub, sizeof sub, "%.*s", (int)(base - name - 1), name);
            if (s_join(path, sizeof path, tmp, sub, err) || access(path, F_OK) != 0)
                base = NULL;
        }
        if (!base || !base[0] || strchr(base, '/') || base[0] == '.')
            return wisp_error_set(err, WISP_ERR_ARG, "%s: bad checkpoint file name '%s'", tmp,
                                  name ? name : "");
        int rc = s_join(path, sizeof path, tmp, name, err);
        if (rc || (rc = wisp_write_file_atomic(path, files[i].data ? files[i].data : "",
                                               files[i].data ? files[i].len : 0, err)))
            return rc;
    }
    return WISP_OK;
}

int wisp_ckpt_read_file(const char *dir, const char *name, size_t max, char **text, size_t *len,
                        wisp_error_t *err)
{
    char path[4096];
    *text = NULL;
    *len = 0;
    int rc = s_join(path, sizeof path, dir, name, err);
    if (rc)
        return rc;
    if (access(path, F_OK) != 0)
        return wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: not in the checkpoint", path);
    return wisp_read_file(path, max, text, len, err);
}

int wisp_ckpt_save(const char *root, const wisp_ckpt_state_t *state, wisp_model_t *model,
                   wisp_adamw_t *opt, int keep, const wisp_ckpt_file_t *files, int n_files,
                   char *out_dir, size_t out_dir_size, wisp_error_t *err)
{
    char name[64], final[4096], tmp[4096], path[4096];
    int rc;
    if (wisp_adamw_size(opt) != wisp_model_num_params(model))
        return wisp_error_set(err, WISP_ERR_ARG, "%s: optimizer holds %zu values, model %zu", root,
                              wisp_adamw_size(opt), wisp_model_num_params(model));
    if ((rc = wisp_mkdir_p(root, err)) != WISP_OK)
        return rc;
    snprintf(name, sizeof name, "step-%08ld", state->step);
    if (wisp_path_join(final, sizeof final, root, name) != WISP_OK ||
        snprintf(tmp, sizeof tmp, "%s/.%s.tmp", root, name) >= (int)sizeof tmp)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", root);
    if (s_rmtree(tmp) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot remove stale temporary: %s", tmp,
                              strerror(errno));
    if ((rc = wisp_mkdir_p(tmp, err)) != WISP_OK)
        return rc;

    if ((rc = s_join(path, sizeof path, tmp, "params.safetensors", err)))
        return rc;
    if ((rc = s_save_tensors(path, model, wisp_model_params(model), "", NULL, NULL, err)))
        return rc;
    if ((rc = s_join(path, sizeof path, tmp, "adamw.safetensors", err)))
        return rc;
    if ((rc = s_save_tensors(path, model, wisp_adamw_m(opt), "exp_avg.", wisp_adamw_v(opt),
                             "exp_avg_sq.", err)))
        return rc;
    if (wisp_model_adapter(model)) {
        if ((rc = s_join(path, sizeof path, tmp, "adapter", err)))
            return rc;
        if ((rc = wisp_model_save_adapter(model, path, err)))
            return rc;
    }
    if (wisp_model_head(model)) {
        if ((rc = s_join(path, sizeof path, tmp, "head", err)))
            return rc;
        if ((rc = wisp_model_save_head(model, path, err)))
            return rc;
    }
    if ((rc = s_join(path, sizeof path, tmp, "state.json", err)))
        return rc;
    if ((rc = s_write_state(path, state, wisp_adamw_steps(opt), wisp_model_num_params(model), err)))
        return rc;
    if ((rc = s_write_files(tmp, files, n_files, err)))
        return rc;
    s_fsync_dir(tmp);

    /* Replace a checkpoint of the same step (a resumed run re-saving it). */
    if (s_rmtree(final) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot replace: %s", final, strerror(errno));
    if (rename(tmp, final) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: rename to %s failed: %s", tmp, final,
                              strerror(errno));
    s_fsync_dir(root);
    if ((rc = s_join(path, sizeof path, root, "LATEST", err)))
        return rc;
    if ((rc = wisp_write_file_atomic(path, name, strlen(name), err)))
        return rc;
    if (out_dir)
        snprintf(out_dir, out_dir_size, "%s", final);

    if (keep > 0) { /* prune: the newest `keep` step-* directories survive */
        DIR *d = opendir(root);
        long steps[256];
        int ns = 0;
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL && ns < 256) {
            long s;
            char extra;
            if (sscanf(e->d_name, "step-%ld%c", &s, &extra) == 1)
                steps[ns++] = s;
        }
        if (d)
            closedir(d);
        for (int i = 0; i < ns; i++) {
            int newer = 0;
            for (int j = 0; j < ns; j++)
                newer += steps[j] > steps[i];
            if (newer >= keep && steps[i] != state->step) {
                snprintf(path, sizeof path, "%s/step-%08ld", root, steps[i]);
                if (s_rmtree(path) != 0)
                    WISP_LOGW("%s: cannot remove old checkpoint: %s", path, strerror(errno));
            }
        }
    }
    return WISP_OK;
}

int wisp_ckpt_latest(const char *root, char *dir, size_t dir_size, wisp_error_t *err)
{
    char path[4096], *text = NULL;
    size_t len = 0;
    int rc = s_join(path, sizeof path, root, "LATEST", err);
    if (rc)
        return rc;
    if (access(path, F_OK) != 0)
        return wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: no checkpoint (no LATEST file)", root);
    if ((rc = wisp_read_file(path, 256, &text, &len, err)))
        return rc;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
        text[--len] = '\0';
    long s;
    char extra;
    if (len == 0 || strchr(text, '/') || sscanf(text, "step-%ld%c", &s, &extra) != 1) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: not a checkpoint name: '%s'", path, text);
    } else if (snprintf(dir, dir_size, "%s/%s", root, text) >= (int)dir_size) {
        rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", root);
    } else {
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            rc = wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: names %s, which does not exist", path,
                                dir);
    }
    free(text);
    return rc;
}

static int s_get_long(const cJSON *j, const char *key, long *out, const char *path,
                      wisp_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    int64_t x = 0; /* range-checked on the double before the cast (1e300 is no long) */
    if (!cJSON_IsNumber(v) || wisp_json_int(v, 0, WISP_JSON_INT_MAX, &x) != 0 || x > LONG_MAX)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: key \"%s\" missing or not a count", path,
                              key);
    *out = (long)x;
    return WISP_OK;
}

static int s_get_u64(const cJSON *j, const char *key, uint64_t *out, const char *path,
                     wisp_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    char *end = NULL;
    if (cJSON_IsString(v) && strlen(v->valuestring) == 16) {
        errno = 0;
        unsigned long long x = strtoull(v->valuestring, &end, 16);
        if (errno == 0 && end && *end == '\0') {
            *out = (uint64_t)x;
            return WISP_OK;
        }
    }
    return wisp_error_set(err, WISP_ERR_FORMAT,
                          "%s: key \"%s\" missing or not a 16-digit hex string", path, key);
}

int wisp_ckpt_state_parse(const char *text, size_t len, const char *path, wisp_ckpt_state_t *st,
                          long *opt_steps, long *num_params, wisp_error_t *err)
{
    cJSON *j = NULL;
    memset(st, 0, sizeof *st);
    int rc = wisp_json_parse(text, len, path, &j, err);
    if (rc)
        return rc;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "format");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(j, "fingerprint");
    if (!cJSON_IsString(f) || strcmp(f->valuestring, CKPT_FORMAT) != 0)
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: not a wisp checkpoint state (format)", path);
    else if (!cJSON_IsNumber(v) || v->valuedouble != CKPT_VERSION) /* 1.9 is not 1 */
        rc = wisp_error_set(err, WISP_ERR_UNSUPPORTED, "%s: checkpoint version %g, expected %d",
                            path, cJSON_IsNumber(v) ? v->valuedouble : -1.0, CKPT_VERSION);
    else if (!cJSON_IsString(fp) || strlen(fp->valuestring) >= sizeof st->fingerprint)
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: key \"fingerprint\" missing or too long",
                            path);
    if (rc == WISP_OK)
        rc = s_get_long(j, "step", &st->step, path, err);
    if (rc == WISP_OK)
        rc = s_get_long(j, "epoch", &st->epoch, path, err);
    if (rc == WISP_OK)
        rc = s_get_long(j, "pos", &st->pos, path, err);
    if (rc == WISP_OK)
        rc = s_get_long(j, "optimizer_steps", opt_steps, path, err);
    if (rc == WISP_OK)
        rc = s_get_long(j, "num_params", num_params, path, err);
    if (rc == WISP_OK)
        rc = s_get_u64(j, "data_seed", &st->data_seed, path, err);
    if (rc == WISP_OK)
        rc = s_get_u64(j, "rng_state", &st->rng_state, path, err);
    if (rc == WISP_OK)
        snprintf(st->fingerprint, sizeof st->fingerprint, "%s", fp->valuestring);
    cJSON_Delete(j);
    return rc;
}

static int s_read_state(const char *path, wisp_ckpt_state_t *st, long *opt_steps, long *num_params,
                        wisp_error_t *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = wisp_read_file(path, CKPT_MAX_STATE, &text, &len, err);
    if (rc)
        return rc;
    rc = wisp_ckpt_state_parse(text, len, path, st, opt_steps, num_params, err);
    free(text);
    return rc;
}

/* Copies every model tensor `prefix<name>` of a checkpoint file into base; the file
 * must hold exactly those tensors, F32, with the model's shapes. */
static int s_load_tensors(const char *path, wisp_model_t *model, float *base, const char *prefix,
                          float *base2, const char *prefix2, wisp_error_t *err)
{
    wisp_st_t *st = wisp_st_open(path, err);
    if (!st)
        return err && err->code ? err->code : WISP_ERR_IO;
    int rc = WISP_OK;
    int nt = wisp_model_num_param_tensors(model);
    int expected = nt * (base2 ? 2 : 1);
    for (int pass = 0; pass < (base2 ? 2 : 1) && rc == WISP_OK; pass++) {
        float *dst = pass ? base2 : base;
        const char *pre = pass ? prefix2 : prefix;
        for (int i = 0; i < nt && rc == WISP_OK; i++) {
            const wisp_param_info_t *p = wisp_model_param_tensor(model, i);
            char name[512];
            snprintf(name, sizeof name, "%s%s", pre, p->name);
            const wisp_st_tensor_t *t = wisp_st_find(st, name);
            const float *data = NULL;
            if (!t) {
                rc = wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: tensor %s missing", path, name);
            } else if (t->dtype != WISP_DT_F32) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: tensor %s is %s, expected F32", path,
                                    name, wisp_dtype_name(t->dtype));
            } else if ((rc = wisp_st_get_f32(st, name, p->ndim, p->shape, &data, err)) == 0) {
                memcpy(dst + p->offset, data, p->numel * sizeof(float));
            }
        }
    }
    if (rc == WISP_OK && wisp_st_count(st) != expected)
        rc = wisp_error_set(err, WISP_ERR_STATE,
                            "%s: holds %d tensors, the model's adapter and head have %d "
                            "(checkpoint of another configuration?)",
                            path, wisp_st_count(st), expected);
    wisp_st_destroy(&st);
    return rc;
}

int wisp_ckpt_load(const char *dir, const char *expect_fingerprint, wisp_ckpt_state_t *state,
                   wisp_model_t *model, wisp_adamw_t *opt, wisp_error_t *err)
{
    char path[4096];
    long opt_steps = 0, num_params = 0;
    wisp_ckpt_state_t st;
    memset(&st, 0, sizeof st);
    int rc = s_join(path, sizeof path, dir, "state.json", err);
    if (rc || (rc = s_read_state(path, &st, &opt_steps, &num_params, err)))
        return rc;
    if (expect_fingerprint && strcmp(expect_fingerprint, st.fingerprint) != 0)
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: checkpoint of a different run configuration (fingerprint "
                              "%.12s..., this run %.12s...): model, adapter, head, optimiser "
                              "settings, steps, batch, seed and data must all match to resume; "
                              "use the same settings or another output directory",
                              path, st.fingerprint, expect_fingerprint);
    if ((size_t)num_params != wisp_model_num_params(model) ||
        wisp_adamw_size(opt) != wisp_model_num_params(model))
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: %ld trainable parameters, the model has %zu", path, num_params,
                              wisp_model_num_params(model));
    if ((rc = s_join(path, sizeof path, dir, "params.safetensors", err)))
        return rc;
    if ((rc = s_load_tensors(path, model, wisp_model_params(model), "", NULL, NULL, err)))
        return rc;
    if ((rc = s_join(path, sizeof path, dir, "adamw.safetensors", err)))
        return rc;
    if ((rc = s_load_tensors(path, model, wisp_adamw_m(opt), "exp_avg.", wisp_adamw_v(opt),
                             "exp_avg_sq.", err)))
        return rc;
    wisp_adamw_set_steps(opt, opt_steps);
    *state = st;
    return WISP_OK;
}
