/* Bad input through the C API: every call must return the right status and a message, and the
 * program must not crash or leak (run under valgrind by tests/c_api.rs).
 * Usage: bad_input WEIGHTS_DIR FEATURES.safetensors */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metad2a.h"

static int failures = 0;

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "FAIL %s\n", what);
        failures++;
    }
}

/* progress hook: counts calls, asks to stop at the call numbered *user_data (0: never) */
static int calls = 0;
static int stop_after(uint32_t stage, uint64_t done, uint64_t total, void *user_data) {
    calls++;
    check(stage <= 1 && done <= total, "progress arguments in range");
    int limit = *(int *)user_data;
    return limit != 0 && calls >= limit;
}

static void expect(const char *what, metad2a_status got, metad2a_status want, const char *needle) {
    const char *msg = metad2a_last_error();
    if (got != want || (needle && strstr(msg, needle) == NULL)) {
        fprintf(stderr, "FAIL %s: status %d (want %d), message \"%s\" (want \"%s\")\n", what, got, want, msg,
                needle ? needle : "");
        failures++;
    } else {
        printf("ok   %s: %s\n", what, got == METAD2A_STATUS_OK ? "ok" : msg);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    metad2a_engine *engine = NULL;
    metad2a_result *result = NULL;
    metad2a_dataset *data = NULL;

    expect("load NULL dir", metad2a_engine_load(NULL, &engine), METAD2A_STATUS_INVALID_ARGUMENT, "dir is NULL");
    expect("load NULL out", metad2a_engine_load(argv[1], NULL), METAD2A_STATUS_INVALID_ARGUMENT, "out is NULL");
    expect("load missing dir", metad2a_engine_load("/nonexistent/weights", &engine), METAD2A_STATUS_IO, "manifest.json");
    if (engine != NULL) failures++;
    unsigned char junk[64] = {1, 2, 3};
    expect("load junk from memory", metad2a_engine_load_from_memory(junk, sizeof junk, junk, sizeof junk, NULL, 0, &engine),
           METAD2A_STATUS_WEIGHTS, "not a valid safetensors file");
    expect("load from memory, zero length",
           metad2a_engine_load_from_memory(junk, 0, junk, sizeof junk, NULL, 0, &engine), METAD2A_STATUS_INVALID_ARGUMENT,
           "length 0");
    expect("load from memory, cache length without pointer",
           metad2a_engine_load_from_memory(junk, 8, junk, 8, NULL, 5, &engine), METAD2A_STATUS_INVALID_ARGUMENT, "graph_cache");
    expect("load", metad2a_engine_load(argv[1], &engine), METAD2A_STATUS_OK, NULL);
    size_t dim = 0;
    expect("feature dim", metad2a_engine_feature_dim(engine, &dim), METAD2A_STATUS_OK, NULL);
    if (metad2a_abi_version() != METAD2A_ABI_VERSION) {
        fprintf(stderr, "FAIL abi version %u, header %u\n", metad2a_abi_version(), METAD2A_ABI_VERSION);
        failures++;
    }
    metad2a_space space = METAD2A_SPACE_MBV3;
    expect("space", metad2a_engine_space(engine, &space), METAD2A_STATUS_OK, NULL);
    check(space == METAD2A_SPACE_NB201, "the fixture weights are for NB201");
    expect("space NULL engine", metad2a_engine_space(NULL, &space), METAD2A_STATUS_INVALID_ARGUMENT, "engine is NULL");
    expect("verify", metad2a_engine_verify(engine), METAD2A_STATUS_OK, NULL);
    expect("verify NULL engine", metad2a_engine_verify(NULL), METAD2A_STATUS_INVALID_ARGUMENT, "engine is NULL");
    expect("use cuda NULL engine", metad2a_engine_use_cuda(NULL), METAD2A_STATUS_INVALID_ARGUMENT, "engine is NULL");
    /* Without a GPU (or without feature cuda) the engine says why and keeps using the CPU: the
     * searches below run on it either way. */
    metad2a_status cuda = metad2a_engine_use_cuda(engine);
    if (cuda == METAD2A_STATUS_OK) {
        printf("ok   use cuda: searching on %s\n", metad2a_last_error());
    } else {
        expect("use cuda without a usable GPU", cuda, METAD2A_STATUS_DEVICE, "CUDA unavailable");
    }

    /* a small, valid dataset: 3 classes x 20 rows */
    size_t rows = 60;
    float *feats = malloc(rows * dim * sizeof(float));
    int labels[60];
    for (size_t i = 0; i < rows * dim; i++) feats[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (int i = 0; i < 60; i++) labels[i] = i / 20;
    metad2a_search_params p = metad2a_default_search_params();
    p.num_archs = 20;

    expect("search NULL engine", metad2a_search(NULL, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_INVALID_ARGUMENT, "engine is NULL");
    expect("search NULL features", metad2a_search(engine, NULL, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_INVALID_ARGUMENT, "NULL");
    expect("search NULL out", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, NULL),
           METAD2A_STATUS_INVALID_ARGUMENT, "out is NULL");
    expect("search zero rows", metad2a_search(engine, feats, METAD2A_DTYPE_F32, 0, dim, labels, &p, &result),
           METAD2A_STATUS_INVALID_ARGUMENT, "must be positive");
    expect("search wrong dim", metad2a_search(engine, feats, METAD2A_DTYPE_F32, 30, dim * 2, labels, &p, &result),
           METAD2A_STATUS_DATA, "dimensional");
    expect("search bad dtype", metad2a_search(engine, feats, 7, rows, dim, labels, &p, &result),
           METAD2A_STATUS_INVALID_ARGUMENT, "dtype");
    labels[5] = -1;
    expect("search negative label", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_DATA, "negative");
    labels[5] = 0;
    labels[59] = 7;
    expect("search missing class", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_DATA, "has no rows");
    labels[59] = 2;
    feats[3] = NAN;
    expect("search NaN feature", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_DATA, "non-finite");
    feats[3] = 0.25f;
    expect("search too few rows per class",
           metad2a_search(engine, feats, METAD2A_DTYPE_F32, 50, dim, labels, &p, &result), METAD2A_STATUS_DATA,
           "rows; a set needs 20");
    p.max_mflops = -1;
    expect("search negative budget", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_INVALID_ARGUMENT, "max_mflops");
    p.max_mflops = 0;
    p.num_archs = 0;
    expect("search zero candidates", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_INVALID_ARGUMENT, "at least 1");
    p.num_archs = 20;
    if (result != NULL) failures++;

    /* the progress hook is called, and stops the search when it returns non-zero */
    int never = 0, first = 1;
    p.progress = stop_after;
    p.progress_user_data = &never;
    expect("search with progress", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_OK, NULL);
    check(calls >= 2, "progress called while generating and before ranking");
    metad2a_result_free(&result);
    calls = 0;
    p.progress_user_data = &first;
    expect("search cancelled", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result),
           METAD2A_STATUS_CANCELLED, "cancelled");
    check(result == NULL && calls == 1, "a cancelled search stops at once and returns no result");
    p.progress = NULL;
    p.progress_user_data = NULL;

    expect("search ok", metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result), METAD2A_STATUS_OK,
           NULL);
    size_t n = 0;
    expect("result count", metad2a_result_count(result, &n), METAD2A_STATUS_OK, NULL);
    const char *arch = NULL;
    expect("result index out of range", metad2a_result_get(result, n, &arch, NULL, NULL, NULL),
           METAD2A_STATUS_INVALID_ARGUMENT, "out of range");
    expect("result NULL", metad2a_result_get(NULL, 0, &arch, NULL, NULL, NULL), METAD2A_STATUS_INVALID_ARGUMENT,
           "result is NULL");
    expect("result free", metad2a_result_free(&result), METAD2A_STATUS_OK, NULL);
    if (result != NULL) failures++;
    expect("result free twice", metad2a_result_free(&result), METAD2A_STATUS_OK, NULL);

    /* f16 input */
    uint16_t *half = malloc(rows * dim * sizeof(uint16_t));
    for (size_t i = 0; i < rows * dim; i++) half[i] = 0x3c00; /* 1.0 */
    expect("search f16", metad2a_search(engine, half, METAD2A_DTYPE_F16, rows, dim, labels, &p, &result), METAD2A_STATUS_OK,
           NULL);
    metad2a_result_free(&result);
    half[0] = 0x7e00; /* NaN */
    expect("search f16 NaN", metad2a_search(engine, half, METAD2A_DTYPE_F16, rows, dim, labels, &p, &result),
           METAD2A_STATUS_DATA, "non-finite");

    expect("dataset missing file", metad2a_dataset_load("/nonexistent/features.safetensors", &data), METAD2A_STATUS_IO,
           "nonexistent");
    expect("dataset NULL path", metad2a_dataset_load(NULL, &data), METAD2A_STATUS_INVALID_ARGUMENT, "path is NULL");
    expect("dataset wrong file", metad2a_dataset_load(argv[1], &data), METAD2A_STATUS_IO, NULL);

    expect("panic is contained", metad2a_selftest_panic(), METAD2A_STATUS_PANIC, "metad2a_selftest_panic was called");
    expect("engine still works after a panic",
           metad2a_search(engine, feats, METAD2A_DTYPE_F32, rows, dim, labels, &p, &result), METAD2A_STATUS_OK, NULL);
    metad2a_result_free(&result);

    expect("engine free", metad2a_engine_free(&engine), METAD2A_STATUS_OK, NULL);
    if (engine != NULL) failures++;
    expect("engine free NULL", metad2a_engine_free(NULL), METAD2A_STATUS_OK, NULL);
    free(feats);
    free(half);
    printf(failures ? "%d FAILURES\n" : "all bad-input checks passed\n", failures);
    return failures != 0;
}
