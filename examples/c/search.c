/*
 * Loads an engine, reads a feature file, runs a search and prints the top 5 architectures.
 *
 *     cc -O2 -I include examples/c/search.c target/release/libmetad2a.a \
 *        -lpthread -ldl -lm -lrt -lutil -lgcc_s -lc -o metad2a-search
 *     ./metad2a-search WEIGHTS_DIR FEATURES.safetensors [SEED]
 */
#include <stdio.h>
#include <stdlib.h>

#include "metad2a.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s WEIGHTS_DIR FEATURES.safetensors [SEED]\n", argv[0]);
        return 2;
    }
    printf("metad2a %s\n", metad2a_version());

    metad2a_engine *engine = NULL;
    if (metad2a_engine_load(argv[1], &engine) != METAD2A_STATUS_OK) {
        fprintf(stderr, "cannot load weights: %s\n", metad2a_last_error());
        return 1;
    }
    metad2a_dataset *data = NULL;
    if (metad2a_dataset_load(argv[2], &data) != METAD2A_STATUS_OK) {
        fprintf(stderr, "cannot read features: %s\n", metad2a_last_error());
        metad2a_engine_free(&engine);
        return 1;
    }
    size_t rows = 0, dim = 0, classes = 0;
    metad2a_dataset_shape(data, &rows, &dim, &classes);
    printf("dataset: %zu rows of %zu features, %zu classes\n", rows, dim, classes);

    metad2a_search_params params = metad2a_default_search_params();
    params.top_k = 5;
    if (argc > 3) params.seed = strtoull(argv[3], NULL, 10);

    metad2a_result *result = NULL;
    int rc = 0;
    if (metad2a_search_dataset(engine, data, &params, &result) != METAD2A_STATUS_OK) {
        fprintf(stderr, "search failed: %s\n", metad2a_last_error());
        rc = 1;
    } else {
        size_t n = 0;
        uint64_t decoded = 0;
        double ms = 0;
        metad2a_result_count(result, &n);
        metad2a_result_stats(result, &decoded, &ms);
        printf("%llu graphs decoded, %.1f ms\n", (unsigned long long)decoded, ms);
        double novelty = 0, gate = 0;
        metad2a_result_data_fit(result, &novelty, &gate);
        if (novelty == novelty)  /* not NaN: the weights have a gated cell mix */
            printf("data fit: novelty %.4f, gate %.4f\n", novelty, gate);
        for (size_t i = 0; i < n; i++) {
            const char *arch = NULL;
            float score = 0;
            uint64_t flops = 0, nparams = 0;
            metad2a_result_get(result, i, &arch, &score, &flops, &nparams);
            printf("%zu  %+.6f  %7.2f MFLOPs  %.3f M params  %s\n", i + 1, score, flops / 1e6, nparams / 1e6, arch);
        }
    }
    metad2a_result_free(&result);
    metad2a_dataset_free(&data);
    metad2a_engine_free(&engine);
    return rc;
}
