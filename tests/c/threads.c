/* Four threads search concurrently on one engine; each result must equal the sequential run
 * with the same seed. Usage: threads WEIGHTS_DIR FEATURES.safetensors */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "metad2a.h"

#define THREADS 4
#define TOP 20

static metad2a_engine *engine;
static metad2a_dataset *data;

typedef struct {
    unsigned long long seed;
    char archs[TOP][128];
    float scores[TOP];
    size_t n;
    int status;
} job;

static void run(job *j) {
    metad2a_search_params p = metad2a_default_search_params();
    p.seed = j->seed;
    p.num_archs = 100;
    p.top_k = TOP;
    metad2a_result *r = NULL;
    j->status = metad2a_search_dataset(engine, data, &p, &r);
    if (j->status != METAD2A_STATUS_OK) return;
    metad2a_result_count(r, &j->n);
    for (size_t i = 0; i < j->n; i++) {
        const char *a;
        metad2a_result_get(r, i, &a, &j->scores[i], NULL, NULL);
        strncpy(j->archs[i], a, 127);
        j->archs[i][127] = 0;
    }
    metad2a_result_free(&r);
}

static void *worker(void *arg) {
    run((job *)arg);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (metad2a_engine_load(argv[1], &engine) != METAD2A_STATUS_OK ||
        metad2a_dataset_load(argv[2], &data) != METAD2A_STATUS_OK) {
        fprintf(stderr, "setup: %s\n", metad2a_last_error());
        return 1;
    }
    job seq[THREADS], par[THREADS];
    memset(seq, 0, sizeof seq);
    memset(par, 0, sizeof par);
    for (int t = 0; t < THREADS; t++) {
        seq[t].seed = par[t].seed = 100 + t;
        run(&seq[t]);
    }
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, worker, &par[t]);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    int bad = 0;
    for (int t = 0; t < THREADS; t++) {
        if (seq[t].status != METAD2A_STATUS_OK || par[t].status != METAD2A_STATUS_OK || seq[t].n != TOP ||
            seq[t].n != par[t].n) {
            fprintf(stderr, "thread %d: status %d/%d, %zu/%zu candidates\n", t, seq[t].status, par[t].status, seq[t].n, par[t].n);
            bad = 1;
            continue;
        }
        for (size_t i = 0; i < seq[t].n; i++) {
            if (strcmp(seq[t].archs[i], par[t].archs[i]) != 0 || seq[t].scores[i] != par[t].scores[i]) {
                fprintf(stderr, "thread %d rank %zu differs: %s vs %s\n", t, i + 1, seq[t].archs[i], par[t].archs[i]);
                bad = 1;
            }
        }
    }
    /* different seeds should not all agree */
    if (!bad && strcmp(seq[0].archs[TOP - 1], seq[1].archs[TOP - 1]) == 0 && seq[0].scores[0] == seq[1].scores[0] &&
        strcmp(seq[0].archs[10], seq[1].archs[10]) == 0)
        fprintf(stderr, "note: seeds 100 and 101 gave similar top lists\n");
    metad2a_dataset_free(&data);
    metad2a_engine_free(&engine);
    printf(bad ? "MISMATCH\n" : "concurrent == sequential for %d threads\n", THREADS);
    return bad;
}
