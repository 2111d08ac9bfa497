/* fuzz_manifest: a manifest (formats/manifest.c with formats/labels.c). The first byte
 * chooses the form and the options: bit 0 JSONL (else CSV), bits 1-2 the unlabeled policy
 * (keep, error, skip), bit 3 a fixed class list {"a", "b", "10"}; the rest is the text.
 * A manifest that loads must keep its header's promises: labels in [-1, n_classes) and
 * named by classes[label], counts that match the items, durations -1 or finite >= 0,
 * every path non-empty. Nothing is probed (no audio is opened). */
#include <math.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "formats/manifest.h"

/* The loader picks the form by the name's ending: a .jsonl link to the memfd. */
static const char *s_named(const char *target, int jsonl)
{
    static char link_path[2][96];
    char *p = link_path[jsonl];
    if (!p[0]) {
        snprintf(p, sizeof link_path[0], "/dev/shm/wisp-fuzz-manifest-%d.%s", (int)getpid(),
                 jsonl ? "jsonl" : "csv");
        unlink(p);
        if (symlink(target, p) != 0)
            abort();
    }
    return p;
}

static void s_check(const wisp_manifest_t *m)
{
    size_t labeled = 0, known = 0;
    for (size_t i = 0; i < m->n_items; i++) {
        const wisp_manifest_item_t *it = &m->items[i];
        FUZZ_CHECK(it->path && it->path[0], "item %zu has an empty path", i);
        FUZZ_CHECK(it->label >= -1 && it->label < m->n_classes, "item %zu label %d of %d", i,
                   it->label, m->n_classes);
        const char *name = wisp_manifest_label_name(m, i);
        if (it->label >= 0) {
            labeled++;
            FUZZ_CHECK(name && name == m->classes[it->label], "item %zu label %d has no name", i,
                       it->label);
        } else {
            FUZZ_CHECK(!name, "unlabeled item %zu has a label name", i);
        }
        FUZZ_CHECK(it->duration == -1 || (isfinite(it->duration) && it->duration >= 0),
                   "item %zu duration %g", i, it->duration);
        known += it->duration >= 0;
    }
    FUZZ_CHECK(labeled == m->n_labeled, "n_labeled %zu, counted %zu", m->n_labeled, labeled);
    FUZZ_CHECK(known == m->n_duration_known, "n_duration_known %zu, counted %zu",
               m->n_duration_known, known);
    FUZZ_CHECK(isfinite(m->total_duration) && m->total_duration >= 0, "total duration %g",
               m->total_duration);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    if (size < 1)
        return 0;
    static const char *const fixed[] = {"a", "b", "10"};
    int jsonl = data[0] & 1;
    wisp_manifest_opts_t opts = wisp_manifest_default_opts();
    opts.unlabeled = (data[0] >> 1) & 3;
    if (opts.unlabeled > WISP_MANIFEST_UNLABELED_SKIP)
        opts.unlabeled = WISP_MANIFEST_UNLABELED_KEEP;
    if (data[0] & 8) {
        opts.classes = fixed;
        opts.n_classes = 3;
    }
    const char *path = s_named(fuzz_file(data + 1, size - 1), jsonl);
    wisp_manifest_t m;
    wisp_error_t err = {0};
    int rc = wisp_manifest_load_opts(&m, path, &opts, &err);
    fuzz_check_error(rc, &err);
    if (rc == 0) {
        s_check(&m);
        wisp_manifest_free(&m);
    }
    return 0;
}
