/* Tests of common/manifest: CSV, JSONL and audiofolder manifests, labels, errors,
 * duration probing and the shard plan. */
#include "testutil.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sndfile.h>

#include "base/err.h"
#include "formats/labels.h"
#include "formats/manifest.h"
#include "base/util.h"

static char *s_fixture(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/manifest/%s", wisp_test_data_dir(), name);
    return p;
}

/* Writes text to tmpdir/name and returns the path (static buffer). */
static const char *s_write_tmp(const char *name, const char *text)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", wisp_test_tmpdir(), name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* A mono 16-bit file of `frames` samples at `rate` Hz (format from the extension). */
static void s_write_audio(const char *path, int frames, int rate, int format)
{
    SF_INFO info = {.samplerate = rate, .channels = 1, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    assert_non_null(sf);
    short *buf = calloc((size_t)frames, sizeof *buf);
    for (int i = 0; i < frames; i++)
        buf[i] = (short)((i * 37) % 2000 - 1000);
    assert_int_equal(sf_write_short(sf, buf, frames), frames);
    sf_close(sf);
    free(buf);
}

static void test_csv_quoting_and_relative_paths_resolve_against_the_manifest_dir(void **state)
{
    (void)state;
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load(&m, s_fixture("quoted.csv"), NULL, 0, &e), WISP_OK);
    assert_int_equal(m.kind, WISP_MANIFEST_CSV);
    assert_int_equal(m.n_items, 5);
    char want[512];
    snprintf(want, sizeof want, "%s/manifest/a.wav", wisp_test_data_dir());
    assert_string_equal(m.items[0].path, want);
    snprintf(want, sizeof want, "%s/manifest/dir/b, with comma.wav", wisp_test_data_dir());
    assert_string_equal(m.items[1].path, want);
    snprintf(want, sizeof want, "%s/manifest/c \"q\".wav", wisp_test_data_dir());
    assert_string_equal(m.items[2].path, want);
    assert_string_equal(m.items[3].path, "/abs/d.wav");
    snprintf(want, sizeof want, "%s/manifest/multi\nline.wav", wisp_test_data_dir());
    assert_string_equal(m.items[4].path, want);
    /* Classes are the sorted unique names. */
    assert_int_equal(m.n_classes, 3);
    assert_string_equal(m.classes[0], "bird");
    assert_string_equal(m.classes[1], "cat");
    assert_string_equal(m.classes[2], "dog");
    int labels[5] = {1, 2, 1, 0, 2};
    double durs[5] = {1.5, 2, -1, 0.5, 1};
    int lines[5] = {2, 3, 4, 5, 7};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(m.items[i].label, labels[i]);
        assert_string_equal(wisp_manifest_label_name(&m, i), m.classes[labels[i]]);
        assert_true(m.items[i].duration == durs[i]);
        assert_int_equal(m.items[i].line, lines[i]);
    }
    assert_int_equal(m.n_labeled, 5);
    assert_int_equal(m.n_duration_known, 4);
    assert_true(m.total_duration == 5.0);
    wisp_manifest_free(&m);
    assert_null(m.items);
}

static void test_csv_with_bom_crlf_and_blank_padded_fields_reads_integer_labels(void **state)
{
    (void)state;
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load(&m, s_fixture("crlf_bom.csv"), NULL, 0, &e), WISP_OK);
    assert_int_equal(m.n_items, 3);
    assert_string_equal(m.items[0].path, "/abs/p.wav");
    assert_string_equal(m.items[2].path, "/abs/r.wav");
    /* All labels are integers: classes "0".."K-1", label = the integer. */
    assert_int_equal(m.n_classes, 2);
    assert_string_equal(m.classes[0], "0");
    assert_string_equal(m.classes[1], "1");
    assert_int_equal(m.items[0].label, 1);
    assert_int_equal(m.items[1].label, 0);
    assert_int_equal(m.items[2].label, -1);
    assert_null(wisp_manifest_label_name(&m, 2));
    assert_int_equal(m.n_labeled, 2);
    wisp_manifest_free(&m);
}

static void test_csv_accepts_the_hugging_face_file_name_column(void **state)
{
    (void)state;
    const char *p = s_write_tmp("meta.csv", "File_Name,speaker,Label\n/a/x.wav,s1,yes\n");
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load(&m, p, NULL, 0, &e), WISP_OK);
    assert_int_equal(m.n_items, 1);
    assert_string_equal(m.items[0].path, "/a/x.wav");
    assert_string_equal(wisp_manifest_label_name(&m, 0), "yes");
    wisp_manifest_free(&m);
}

static void test_jsonl_reads_integer_and_null_labels_and_durations(void **state)
{
    (void)state;
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load(&m, s_fixture("items.jsonl"), NULL, 0, &e), WISP_OK);
    assert_int_equal(m.kind, WISP_MANIFEST_JSONL);
    assert_int_equal(m.n_items, 3);
    char want[512];
    snprintf(want, sizeof want, "%s/manifest/sub/y.flac", wisp_test_data_dir());
    assert_string_equal(m.items[1].path, want);
    /* integer labels are classes by name: 0 and 2 are two classes */
    assert_int_equal(m.n_classes, 2);
    assert_string_equal(m.classes[1], "2");
    assert_int_equal(m.items[0].label, 1);
    assert_int_equal(m.items[1].label, 0);
    assert_int_equal(m.items[2].label, -1);
    assert_true(m.items[1].duration == 3.25);
    assert_true(m.items[0].duration == -1);
    assert_int_equal(m.items[2].line, 4);
    wisp_manifest_free(&m);
}

static void test_given_classes_map_names_and_integer_ids(void **state)
{
    (void)state;
    const char *classes[] = {"dog", "cat", "bird", "fish"};
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load(&m, s_fixture("quoted.csv"), classes, 4, &e), WISP_OK);
    assert_int_equal(m.n_classes, 4);
    assert_string_equal(m.classes[3], "fish");
    int labels[5] = {1, 0, 1, 2, 0};
    for (int i = 0; i < 5; i++)
        assert_int_equal(m.items[i].label, labels[i]);
    wisp_manifest_free(&m);

    /* Integer labels index the given classes. */
    const char *abc[] = {"a", "b", "c"};
    assert_int_equal(wisp_manifest_load(&m, s_fixture("items.jsonl"), abc, 3, &e), WISP_OK);
    assert_int_equal(m.items[0].label, 2);
    assert_string_equal(wisp_manifest_label_name(&m, 0), "c");
    assert_string_equal(wisp_manifest_label_name(&m, 1), "a");
    assert_int_equal(wisp_manifest_class_index(&m, "b"), 1);
    assert_int_equal(wisp_manifest_class_index(&m, "zz"), -1);
    wisp_manifest_free(&m);
}

static void test_unknown_label_is_an_error_naming_file_line_and_label(void **state)
{
    (void)state;
    const char *classes[] = {"cat", "dog"};
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load(&m, s_fixture("quoted.csv"), classes, 2, &e),
                     WISP_ERR_NOTFOUND);
    assert_non_null(strstr(e.msg, "quoted.csv:5:"));
    assert_non_null(strstr(e.msg, "'bird'"));
    assert_int_equal(m.n_items, 0);
    assert_null(m.items);
    /* An integer past the class list is unknown too. */
    wisp_error_clear(&e);
    const char *two[] = {"a", "b"};
    assert_int_equal(wisp_manifest_load(&m, s_fixture("items.jsonl"), two, 2, &e),
                     WISP_ERR_NOTFOUND);
    assert_non_null(strstr(e.msg, "items.jsonl:1:"));
}

static void test_each_malformed_manifest_is_a_clear_error(void **state)
{
    (void)state;
    struct {
        const char *name, *text, *want;
        int code;
    } cases[] = {
        {"empty.csv", "", "empty manifest", WISP_ERR_FORMAT},
        {"header_only.csv", "path,label\n\n", "empty manifest", WISP_ERR_FORMAT},
        {"nopath.csv", "file,label\na.wav,x\n", "nopath.csv:1: header has no 'path' column",
         WISP_ERR_FORMAT},
        {"unterminated.csv", "path,label\na.wav,x\n\"b.wav,y\nc.wav,z\n",
         "unterminated.csv:3:"
         " unterminated quote",
         WISP_ERR_FORMAT},
        {"afterquote.csv", "path\n\"a\"b.wav\n", "afterquote.csv:2:", WISP_ERR_FORMAT},
        {"emptypath.csv", "path,label\n,x\n", "emptypath.csv:2: empty path", WISP_ERR_FORMAT},
        {"baddur.csv", "path,duration\na.wav,abc\n", "baddur.csv:2: bad duration", WISP_ERR_FORMAT},
        {"bad.jsonl", "{\"path\": \"a.wav\"}\n{\"path\": \"b.wav\",\n",
         "bad.jsonl:2: not a "
         "JSON object",
         WISP_ERR_FORMAT},
        {"nopath.jsonl", "{\"file\": \"a.wav\"}\n", "nopath.jsonl:1: no string \"path\"",
         WISP_ERR_FORMAT},
        {"badlabel.jsonl", "{\"path\": \"a.wav\", \"label\": 1.5}\n",
         "badlabel.jsonl:1:", WISP_ERR_FORMAT},
        {"blank.jsonl", "\n  \n", "empty manifest", WISP_ERR_FORMAT},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *p = s_write_tmp(cases[k].name, cases[k].text);
        wisp_manifest_t m;
        wisp_error_t e = {0};
        int rc = wisp_manifest_load(&m, p, NULL, 0, &e);
        if (rc == WISP_OK || !strstr(e.msg, cases[k].name) || !strstr(e.msg, cases[k].want) ||
            rc != cases[k].code)
            fail_msg("%s: rc=%d msg='%s' (want '%s')", cases[k].name, rc, e.msg, cases[k].want);
        assert_null(m.items);
    }
    /* Missing manifest. */
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load(&m, "/nonexistent/m.csv", NULL, 0, &e), WISP_ERR_NOTFOUND);
    assert_non_null(strstr(e.msg, "/nonexistent/m.csv"));
}

static void test_audiofolder_is_sorted_labeled_by_directory_and_probed(void **state)
{
    (void)state;
    char root[512], p[600];
    snprintf(root, sizeof root, "%s/folder", wisp_test_tmpdir());
    snprintf(p, sizeof p, "%s/cat", root);
    assert_int_equal(wisp_mkdir_p(p, NULL), WISP_OK);
    snprintf(p, sizeof p, "%s/dog/deeper", root);
    assert_int_equal(wisp_mkdir_p(p, NULL), WISP_OK);
    snprintf(p, sizeof p, "%s/dog/b.wav", root);
    s_write_audio(p, 4000, 16000, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    snprintf(p, sizeof p, "%s/cat/c.WAV", root);
    s_write_audio(p, 8000, 8000, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    snprintf(p, sizeof p, "%s/cat/a.flac", root);
    s_write_audio(p, 24000, 16000, SF_FORMAT_FLAC | SF_FORMAT_PCM_16);
    snprintf(p, sizeof p, "%s/root.wav", root);
    s_write_audio(p, 1600, 16000, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    /* Not inputs: text file, hidden file, file two levels down. */
    snprintf(p, sizeof p, "%s/cat/notes.txt", root);
    FILE *f = fopen(p, "w");
    fputs("x", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/cat/.hidden.wav", root);
    s_write_audio(p, 100, 16000, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    snprintf(p, sizeof p, "%s/dog/deeper/x.wav", root);
    s_write_audio(p, 100, 16000, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    /* A corrupt "audio" file is an item (it becomes an error row later). */
    snprintf(p, sizeof p, "%s/dog/z.wav", root);
    f = fopen(p, "w");
    fputs("not audio", f);
    fclose(f);

    wisp_manifest_opts_t o = wisp_manifest_default_opts();
    o.probe_durations = 1;
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load_opts(&m, root, &o, &e), WISP_OK);
    assert_int_equal(m.kind, WISP_MANIFEST_AUDIOFOLDER);
    assert_int_equal(m.n_items, 5);
    const char *rel[5] = {"cat/a.flac", "cat/c.WAV", "dog/b.wav", "dog/z.wav", "root.wav"};
    int labels[5] = {0, 0, 1, 1, -1};
    double durs[5] = {1.5, 1.0, 0.25, -1, 0.1};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", root, rel[i]);
        assert_string_equal(m.items[i].path, p);
        assert_int_equal(m.items[i].label, labels[i]);
        if (!(m.items[i].duration == durs[i]))
            fail_msg("item %d: duration %g, want %g", i, m.items[i].duration, durs[i]);
    }
    assert_int_equal(m.n_classes, 2);
    assert_string_equal(m.classes[0], "cat");
    assert_string_equal(m.classes[1], "dog");
    assert_int_equal(m.n_duration_known, 4);
    wisp_manifest_free(&m);

    /* Without probing the files are not opened: durations unknown. A trailing
     * slash on the root changes nothing. */
    snprintf(p, sizeof p, "%s//", root);
    assert_int_equal(wisp_manifest_load(&m, p, NULL, 0, &e), WISP_OK);
    snprintf(p, sizeof p, "%s/cat/a.flac", root);
    assert_string_equal(m.items[0].path, p);
    assert_true(m.items[0].duration == -1);
    assert_int_equal(m.n_duration_known, 0);
    /* A class list without "dog" refuses the dog directory. */
    wisp_manifest_free(&m);
    const char *cats[] = {"cat"};
    assert_int_equal(wisp_manifest_load(&m, root, cats, 1, &e), WISP_ERR_NOTFOUND);
    assert_non_null(strstr(e.msg, "'dog'"));
}

/* Checks the plan covers every item once, in order, and returns the shard count. */
static size_t s_check_plan(const wisp_manifest_t *m, const wisp_shard_t *s, size_t n)
{
    size_t next = 0;
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(s[k].begin, next);
        assert_true(s[k].end > s[k].begin);
        next = s[k].end;
    }
    assert_int_equal(next, m->n_items);
    return n;
}

static void test_shards_cut_by_duration_and_fall_back_to_count(void **state)
{
    (void)state;
    /* Durations 10,10,10,50,5,5,5,5,unknown(mean 12.5),10 with a 20 s target. */
    const char *p =
        s_write_tmp("durs.csv", "path,duration\n"
                                "a,10\nb,10\nc,10\nd,50\ne,5\nf,5\ng,5\nh,5\ni,\nj,10\n");
    wisp_manifest_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_manifest_load(&m, p, NULL, 0, &e), WISP_OK);
    wisp_shard_t *s;
    size_t n;
    assert_int_equal(wisp_manifest_shards(&m, 20, 100, &s, &n, &e), WISP_OK);
    s_check_plan(&m, s, n);
    /* [a b] 20 | [c] 10 (d would overshoot by 40) | [d] 50 | [e f g h] 20 |
     * [i j] 110/9 + 10 (i counts as the mean of the 9 known durations) */
    size_t want_end[] = {2, 3, 4, 8, 10};
    double want_sec[] = {20, 10, 50, 20, 110.0 / 9 + 10};
    assert_int_equal(n, 5);
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(s[k].end, want_end[k]);
        assert_true(fabs(s[k].seconds - want_sec[k]) < 1e-9);
    }
    free(s);
    /* max_items caps a shard. */
    assert_int_equal(wisp_manifest_shards(&m, 1000, 3, &s, &n, &e), WISP_OK);
    assert_int_equal(s_check_plan(&m, s, n), 4);
    assert_int_equal(s[3].end - s[3].begin, 1);
    free(s);
    /* Bad arguments. */
    assert_int_equal(wisp_manifest_shards(&m, 20, 0, &s, &n, &e), WISP_ERR_ARG);
    wisp_manifest_free(&m);

    /* No durations known: count only. */
    p = s_write_tmp("nodur.csv", "path\na\nb\nc\nd\ne\nf\ng\n");
    assert_int_equal(wisp_manifest_load(&m, p, NULL, 0, &e), WISP_OK);
    assert_int_equal(m.n_classes, 0);
    assert_int_equal(wisp_manifest_shards(&m, 20, 3, &s, &n, &e), WISP_OK);
    assert_int_equal(s_check_plan(&m, s, n), 3);
    assert_int_equal(s[0].end, 3);
    assert_int_equal(s[1].end, 6);
    free(s);
    wisp_manifest_free(&m);
}

static void test_damaged_manifests_never_crash_the_parsers(void **state)
{
    (void)state;
    /* Valid manifests with 1-4 bytes replaced by syntax characters, or truncated. */
    static const char *const seeds[2] = {
        "path,label,duration\na.wav,cat,1.5\n\"b, c.wav\",\"dog\",2\n\"x \"\"q\"\".wav\",cat,\n"
        "/abs/d.wav,7,0.5\n\n\"multi\nline.wav\",dog,1\n",
        "{\"path\": \"x.wav\", \"label\": 2}\n{\"path\": \"y.flac\", \"label\": \"a\", "
        "\"duration\": 3.25}\n\n{\"path\": \"z.wav\", \"label\": null}\n"};
    static const char alphabet[] = "\",\n\r {}:[]\\0-.e\xc3";
    wisp_rng_t g;
    wisp_rng_seed(&g, 11);
    int ok = 0, failed = 0;
    for (int it = 0; it < 300; it++) {
        const char *seed = seeds[it % 2];
        size_t n = strlen(seed);
        char text[256];
        memcpy(text, seed, n + 1);
        if (it % 5 == 4) {
            text[wisp_rng_u64(&g) % n] = '\0';
        } else {
            int k = 1 + (int)(wisp_rng_u64(&g) % 4);
            while (k-- > 0)
                text[wisp_rng_u64(&g) % n] = alphabet[wisp_rng_u64(&g) % (sizeof alphabet - 1)];
        }
        const char *name = it % 2 ? "fuzz.jsonl" : "fuzz.csv";
        const char *p = s_write_tmp(name, text);
        wisp_manifest_t m;
        wisp_error_t e = {0};
        int rc = wisp_manifest_load(&m, p, NULL, 0, &e);
        if (rc == WISP_OK) {
            assert_true(m.n_items > 0);
            for (size_t i = 0; i < m.n_items; i++)
                assert_true(m.items[i].label >= -1 && m.items[i].label < m.n_classes);
            ok++;
        } else {
            assert_true(rc < 0);
            assert_non_null(strstr(e.msg, name));
            assert_null(m.items);
            failed++;
        }
        wisp_manifest_free(&m);
    }
    if (!(ok > 20 && failed > 20))
        fail_msg("ok=%d failed=%d: the inputs do not reach both outcomes", ok, failed);
}

static void test_labels_derive_integer_or_sorted_name_classes_and_look_up_both(void **state)
{
    (void)state;
    /* every label an integer: classes by name, in numeric order (10..15 are 6 classes) */
    const char *ints[] = {"12", NULL, "10", "", "15", "11", "13", "14", "10", "2"};
    wisp_labels_t *l = wisp_labels_new(ints, 10, NULL, 0, "t", NULL);
    assert_non_null(l);
    assert_int_equal(wisp_labels_n_classes(l), 7);
    assert_string_equal(wisp_labels_name(l, 0), "2");
    assert_string_equal(wisp_labels_name(l, 1), "10");
    assert_string_equal(wisp_labels_name(l, 6), "15");
    assert_null(wisp_labels_name(l, 7));
    assert_null(wisp_labels_name(l, -1));
    assert_int_equal(wisp_labels_find(l, "10"), 1);
    assert_int_equal(wisp_labels_find(l, "2"), 0);
    assert_int_equal(wisp_labels_find(l, "3"), 3); /* not a name: the id, in range */
    assert_int_equal(wisp_labels_find(l, "7"), -1);
    assert_int_equal(wisp_labels_find(l, ""), -1);
    assert_int_equal(wisp_labels_find(l, NULL), -1);
    wisp_labels_destroy(&l);
    assert_null(l);
    /* a name among them: sorted unique names, integers are names */
    const char *mixed[] = {"dog", "10", "cat", "dog", "2"};
    l = wisp_labels_new(mixed, 5, NULL, 0, "t", NULL);
    assert_int_equal(wisp_labels_n_classes(l), 4);
    const char *want[] = {"10", "2", "cat", "dog"};
    for (int c = 0; c < 4; c++)
        assert_string_equal(wisp_labels_name(l, c), want[c]);
    assert_int_equal(wisp_labels_find(l, "cat"), 2);
    assert_int_equal(wisp_labels_find(l, "2"), 1); /* the name "2", not id 2 */
    assert_int_equal(wisp_labels_find(l, "3"), 3); /* an unknown integer falls back to the id */
    assert_int_equal(wisp_labels_find(l, "cow"), -1);
    wisp_labels_destroy(&l);
    /* given classes: names first, then integer ids in range */
    const char *cls[] = {"yes", "no"};
    l = wisp_labels_new(mixed, 5, cls, 2, "t", NULL);
    assert_int_equal(wisp_labels_n_classes(l), 2);
    assert_int_equal(wisp_labels_find(l, "no"), 1);
    assert_int_equal(wisp_labels_find(l, "1"), 1);
    assert_int_equal(wisp_labels_find(l, "2"), -1);
    wisp_labels_destroy(&l);
    /* nothing labeled: no classes */
    l = wisp_labels_new(NULL, 0, NULL, 0, "t", NULL);
    assert_non_null(l);
    assert_int_equal(wisp_labels_n_classes(l), 0);
    assert_int_equal(wisp_labels_find(l, "0"), -1);
    wisp_labels_destroy(&l);
    wisp_error_t e = {0};
    assert_null(wisp_labels_new(NULL, 3, NULL, 0, "t", &e));
    assert_int_equal(e.code, WISP_ERR_ARG);
    /* a given list names each class once */
    const char *twice[] = {"a", "b", "a"};
    wisp_error_clear(&e);
    assert_null(wisp_labels_new(NULL, 0, twice, 3, "t", &e));
    assert_int_equal(e.code, WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "\"a\" appears twice"));
    assert_int_equal(wisp_labels_parse_id("123456789"), 123456789);
    assert_int_equal(wisp_labels_parse_id("1234567890"), -1);
    assert_int_equal(wisp_labels_parse_id("-1"), -1);
    assert_int_equal(wisp_labels_parse_id("1a"), -1);
}

/* Loads text written to tmpdir/name and expects an error code whose message has needle. */
static void s_expect_manifest_error(const char *name, const char *text, size_t len, int code,
                                    const char *needle)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", wisp_test_tmpdir(), name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
    wisp_manifest_t m;
    wisp_error_t e = {0};
    int rc = wisp_manifest_load(&m, p, NULL, 0, &e);
    if (rc != code || !strstr(e.msg, needle))
        fail_msg("%s: got %d '%s', expected %d with '%s'", name, rc, e.msg, code, needle);
    assert_int_equal(m.n_items, 0);
}

static void test_hostile_label_ids_durations_and_bytes_are_refused_before_use(void **state)
{
    (void)state;
    wisp_manifest_t m;
    wisp_error_t e = {0};
    /* one huge integer label is one class by name, not 10^9 classes */
    const char *p = s_write_tmp("bigid.csv", "path,label\n/a.wav,999999999\n/b.wav,5\n");
    assert_int_equal(wisp_manifest_load(&m, p, NULL, 0, &e), WISP_OK);
    assert_int_equal(m.n_classes, 2);
    assert_string_equal(m.classes[0], "5");
    assert_string_equal(m.classes[1], "999999999");
    assert_int_equal(m.items[0].label, 1);
    wisp_manifest_free(&m);
    /* a JSONL label beyond int is refused by value, before any cast */
    const char *t = "{\"path\": \"/a.wav\", \"label\": 1e10}\n";
    s_expect_manifest_error("big.jsonl", t, strlen(t), WISP_ERR_FORMAT, "1e+10");
    t = "{\"path\": \"/a.wav\", \"label\": 2.5}\n";
    s_expect_manifest_error("frac.jsonl", t, strlen(t), WISP_ERR_FORMAT, "2.5");
    /* durations: inf and nan are not durations, in CSV and JSONL (1e999 parses to inf) */
    t = "path,duration\n/a.wav,inf\n";
    s_expect_manifest_error("inf.csv", t, strlen(t), WISP_ERR_FORMAT, ":2: bad duration 'inf'");
    t = "path,duration\n/a.wav,1e999\n";
    s_expect_manifest_error("inf2.csv", t, strlen(t), WISP_ERR_FORMAT, "bad duration");
    t = "{\"path\": \"/a.wav\", \"duration\": 1e999}\n";
    s_expect_manifest_error("inf.jsonl", t, strlen(t), WISP_ERR_FORMAT, ":1: bad duration");
    /* a NUL byte would silently cut the path: refused with its line */
    static const char nul[] = "path,label\n/a.wav,x\n/b\0.wav,y\n";
    s_expect_manifest_error("nul.csv", nul, sizeof nul - 1, WISP_ERR_FORMAT, ":3: NUL byte");
    static const char nulj[] = "{\"path\": \"/a.wav\"}\n{\"path\": \"/b\0c.wav\"}\n";
    s_expect_manifest_error("nul.jsonl", nulj, sizeof nulj - 1, WISP_ERR_FORMAT, ":2: NUL byte");
    /* JSONL: trailing text after the object is an error; duplicate keys take the last */
    t = "{\"path\": \"/a.wav\"} {\"path\": \"/b.wav\"}\n";
    s_expect_manifest_error("two.jsonl", t, strlen(t), WISP_ERR_FORMAT, ":1:");
    t = "{\"path\": \"/a.wav\"}x\n";
    s_expect_manifest_error("junk.jsonl", t, strlen(t), WISP_ERR_FORMAT, "after the JSON value");
    p = s_write_tmp("dup.jsonl",
                    "{\"path\": \"/a.wav\", \"label\": \"cat\", \"label\": \"dog\"}\n");
    assert_int_equal(wisp_manifest_load(&m, p, NULL, 0, &e), WISP_OK);
    assert_string_equal(wisp_manifest_label_name(&m, 0), "dog");
    wisp_manifest_free(&m);
    /* an audiofolder without audio is the empty-manifest error (and no qsort(NULL, 0)) */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/noaudio", wisp_test_tmpdir());
    mkdir(dir, 0755);
    char f[600];
    snprintf(f, sizeof f, "%s/readme.txt", dir);
    FILE *fp = fopen(f, "w");
    fputs("x", fp);
    fclose(fp);
    wisp_error_clear(&e);
    assert_int_equal(wisp_manifest_load(&m, dir, NULL, 0, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "empty manifest"));
}

/* A manifest over 4 GiB loads (the old reader refused it: "limit is 4294967296").
 * The file is sparse so the test costs little disk: 1 000 JSONL records, each on its
 * line followed by a line of ~4.4 MB of NUL bytes (a hole; a NUL-only line is blank,
 * as a zero-filled preallocated tail); offsets past 2^32 are on the way. */
static void test_a_manifest_over_4_gib_loads(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/huge.jsonl", wisp_test_tmpdir());
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    const off_t hole = 4400000;
    off_t off = 0;
    for (int k = 0; k < 1000; k++) {
        char line[128];
        int n = snprintf(line, sizeof line, "{\"path\": \"/d/clip_%04d.wav\", \"label\": \"c%d\"}",
                         k, k % 3);
        line[n++] = '\n';
        assert_int_equal(pwrite(fd, line, (size_t)n, off), n);
        off += n + hole;
        assert_int_equal(pwrite(fd, "\n", 1, off - 1), 1);
    }
    close(fd);
    assert_true(off > ((off_t)4 << 30));
    wisp_manifest_t m;
    wisp_error_t e = {0};
    int rc = wisp_manifest_load(&m, p, NULL, 0, &e);
    unlink(p);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(m.n_items, 1000);
    assert_string_equal(m.items[999].path, "/d/clip_0999.wav");
    assert_int_equal(m.items[999].line, 1999);
    assert_int_equal(m.n_classes, 3);
    assert_string_equal(wisp_manifest_label_name(&m, 998), "c2");
    wisp_manifest_free(&m);
}

static void test_training_labels_are_never_guessed_silently(void **state)
{
    (void)state;
    wisp_manifest_t m;
    wisp_error_t e = {0};
    /* an empty label in a training manifest: an error naming the row, or skipped and
     * counted when asked (it used to drop the row without a word) */
    const char *p = s_write_tmp("train_gap.csv", "path,label\n/a.wav,cat\n/b.wav,\n/c.wav,dog\n");
    assert_int_equal(wisp_manifest_load_training(&m, p, NULL, 0, NULL, NULL, &e), WISP_ERR_FORMAT);
    if (!strstr(e.msg, "train_gap.csv:3:") || !strstr(e.msg, "/b.wav has no label") ||
        !strstr(e.msg, "1 of 3"))
        fail_msg("'%s'", e.msg);
    assert_int_equal(wisp_manifest_load_training(&m, p, NULL, 0, NULL, "skip", NULL), WISP_OK);
    assert_int_equal(m.n_items, 2);
    assert_int_equal(m.n_skipped_unlabeled, 1);
    assert_string_equal(m.items[1].path, "/c.wav");
    wisp_manifest_free(&m);
    wisp_error_clear(&e);
    assert_int_equal(wisp_manifest_load_training(&m, p, NULL, 0, NULL, "drop", &e), WISP_ERR_ARG);
    assert_int_equal(wisp_manifest_unlabeled_policy("keep"), WISP_MANIFEST_UNLABELED_KEEP);
    /* integer labels 10..15 are 6 classes by name */
    p = s_write_tmp("ints.csv", "path,label\n/a,10\n/b,15\n/c,12\n/d,11\n/e,13\n/f,14\n/g,10\n");
    assert_int_equal(wisp_manifest_load_training(&m, p, NULL, 0, NULL, NULL, &e), WISP_OK);
    assert_int_equal(m.n_classes, 6);
    assert_string_equal(m.classes[0], "10");
    assert_string_equal(m.classes[5], "15");
    assert_int_equal(m.items[1].label, 5);
    wisp_manifest_free(&m);
    /* a class list file fixes the classes and their order */
    char lp[512];
    snprintf(lp, sizeof lp, "%s", s_write_tmp("classes.txt", "dog\r\n\n  cat \nbird\n"));
    p = s_write_tmp("named.csv", "path,label\n/a,cat\n/b,bird\n");
    assert_int_equal(wisp_manifest_load_training(&m, p, NULL, 0, lp, NULL, &e), WISP_OK);
    assert_int_equal(m.n_classes, 3);
    assert_string_equal(m.classes[0], "dog");
    assert_string_equal(m.classes[1], "cat");
    assert_int_equal(m.items[0].label, 1);
    assert_int_equal(m.items[1].label, 2);
    wisp_manifest_free(&m);
    const char *heads[] = {"dog", "cat", "bird"}, *other[] = {"cat", "dog", "bird"};
    assert_int_equal(wisp_manifest_load_training(&m, p, heads, 3, lp, NULL, &e), WISP_OK);
    wisp_manifest_free(&m);
    wisp_error_clear(&e);
    assert_int_equal(wisp_manifest_load_training(&m, p, other, 3, lp, NULL, &e), WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "differs from the head"));
    p = s_write_tmp("cow.csv", "path,label\n/a,cow\n");
    wisp_error_clear(&e);
    assert_int_equal(wisp_manifest_load_training(&m, p, NULL, 0, lp, NULL, &e), WISP_ERR_NOTFOUND);
    assert_non_null(strstr(e.msg, "'cow'"));
    snprintf(lp, sizeof lp, "%s", s_write_tmp("twice.txt", "a\nb\na\n"));
    wisp_error_clear(&e);
    assert_int_equal(wisp_manifest_load_training(&m, p, NULL, 0, lp, NULL, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "\"a\" appears twice"));
}

static void test_hugging_face_audiofolder_splits_and_metadata_csv(void **state)
{
    (void)state;
    /* root/{train,test}/<label>/<file>, and a metadata.csv in the test split */
    char root[512], d[700], f[800];
    snprintf(root, sizeof root, "%s/hf", wisp_test_tmpdir());
    mkdir(root, 0755);
    const char *dirs[] = {"train", "train/cat", "train/dog", "test"};
    for (int i = 0; i < 4; i++) {
        snprintf(d, sizeof d, "%s/%s", root, dirs[i]);
        mkdir(d, 0755);
    }
    const char *files[] = {"train/cat/1.wav", "train/dog/2.wav", "train/dog/3.wav", "test/x.wav",
                           "test/y.wav"};
    for (int i = 0; i < 5; i++) {
        snprintf(f, sizeof f, "%s/%s", root, files[i]);
        s_write_audio(f, 160, 16000, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    }
    snprintf(f, sizeof f, "%s/test/metadata.csv", root);
    FILE *fp = fopen(f, "w");
    fputs("file_name,label\nx.wav,dog\ny.wav,cat\n", fp);
    fclose(fp);
    wisp_manifest_t m;
    wisp_error_t e = {0};
    /* the dataset root: refused, naming the split folder to give (was "empty manifest") */
    assert_int_equal(wisp_manifest_load(&m, root, NULL, 0, &e), WISP_ERR_FORMAT);
    if (!strstr(e.msg, "split") || !strstr(e.msg, "hf/train"))
        fail_msg("'%s'", e.msg);
    snprintf(d, sizeof d, "%s/train", root);
    assert_int_equal(wisp_manifest_load(&m, d, NULL, 0, &e), WISP_OK);
    assert_int_equal(m.n_items, 3);
    assert_int_equal(m.n_classes, 2);
    assert_string_equal(wisp_manifest_label_name(&m, 2), "dog");
    wisp_manifest_free(&m);
    /* the split with metadata.csv: its rows (file_name relative to the folder) */
    snprintf(d, sizeof d, "%s/test", root);
    assert_int_equal(wisp_manifest_load(&m, d, NULL, 0, &e), WISP_OK);
    assert_int_equal(m.kind, WISP_MANIFEST_AUDIOFOLDER);
    assert_int_equal(m.n_items, 2);
    snprintf(f, sizeof f, "%s/test/x.wav", root);
    assert_string_equal(m.items[0].path, f);
    assert_string_equal(wisp_manifest_label_name(&m, 0), "dog");
    assert_int_equal(m.items[1].line, 3);
    wisp_manifest_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_quoting_and_relative_paths_resolve_against_the_manifest_dir),
        cmocka_unit_test(test_csv_with_bom_crlf_and_blank_padded_fields_reads_integer_labels),
        cmocka_unit_test(test_csv_accepts_the_hugging_face_file_name_column),
        cmocka_unit_test(test_jsonl_reads_integer_and_null_labels_and_durations),
        cmocka_unit_test(test_given_classes_map_names_and_integer_ids),
        cmocka_unit_test(test_unknown_label_is_an_error_naming_file_line_and_label),
        cmocka_unit_test(test_each_malformed_manifest_is_a_clear_error),
        cmocka_unit_test(test_audiofolder_is_sorted_labeled_by_directory_and_probed),
        cmocka_unit_test(test_shards_cut_by_duration_and_fall_back_to_count),
        cmocka_unit_test(test_damaged_manifests_never_crash_the_parsers),
        cmocka_unit_test(test_labels_derive_integer_or_sorted_name_classes_and_look_up_both),
        cmocka_unit_test(test_hostile_label_ids_durations_and_bytes_are_refused_before_use),
        cmocka_unit_test(test_a_manifest_over_4_gib_loads),
        cmocka_unit_test(test_training_labels_are_never_guessed_silently),
        cmocka_unit_test(test_hugging_face_audiofolder_splits_and_metadata_csv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
