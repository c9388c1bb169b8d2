/*
 * metad2a: MetaD2A neural architecture search from a sample of a dataset's features.
 *
 * Usage:
 *
 *     if (metad2a_abi_version() != METAD2A_ABI_VERSION) return 1;  // header and library differ
 *     metad2a_engine *engine = NULL;
 *     if (metad2a_engine_load("weights/nb201-lite0", &engine) != METAD2A_STATUS_OK) {
 *         fprintf(stderr, "%s\n", metad2a_last_error());
 *         return 1;
 *     }
 *     metad2a_search_params params = metad2a_default_search_params();
 *     params.top_k = 5;
 *     metad2a_result *result = NULL;
 *     if (metad2a_search(engine, features, METAD2A_DTYPE_F32, rows, dim, labels, &params, &result)
 *             == METAD2A_STATUS_OK) {
 *         size_t n = 0;
 *         metad2a_result_count(result, &n);
 *         for (size_t i = 0; i < n; i++) {
 *             const char *arch; float score;
 *             metad2a_result_get(result, i, &arch, &score, NULL, NULL);
 *             printf("%zu %f %s\n", i + 1, score, arch);
 *         }
 *     }
 *     metad2a_result_free(&result);
 *     metad2a_engine_free(&engine);
 *
 * Thread safety: an engine is immutable once loaded. Any number of threads may call
 * metad2a_search / metad2a_search_dataset on the same engine (and the same dataset) at the same
 * time. Results and datasets must not be freed while another thread uses them. The last-error
 * message is kept per thread. Every call returns a status; no call aborts the process on bad
 * input, and a panic inside the library is returned as METAD2A_STATUS_PANIC. Paths (weights,
 * feature files) always come from the caller; the library reads no file on its own.
 */

#ifndef METAD2A_H
#define METAD2A_H

/* Generated from src/ffi/mod.rs by cbindgen (cbindgen.toml); do not edit by hand.
   Regenerate: METAD2A_BLESS=1 cargo test --test c_api header */

#include <stddef.h>
#include <stdint.h>

#define METAD2A_ABI_VERSION 4

/*
 Result of every call.
 */
typedef enum metad2a_status {
  METAD2A_STATUS_OK = 0,
  /*
   A NULL pointer, a zero or inconsistent size, an unknown enum value.
   */
  METAD2A_STATUS_INVALID_ARGUMENT = 1,
  /*
   A file could not be read.
   */
  METAD2A_STATUS_IO = 2,
  /*
   Weights that are missing, damaged or inconsistent.
   */
  METAD2A_STATUS_WEIGHTS = 3,
  /*
   Feature data the engine cannot use (width, classes, non-finite values, ...).
   */
  METAD2A_STATUS_DATA = 4,
  /*
   A bug inside the engine: a panic was caught at the boundary.
   */
  METAD2A_STATUS_PANIC = 5,
  /*
   The accelerator failed.
   */
  METAD2A_STATUS_DEVICE = 6,
  /*
   A failure inside the engine that is not a panic.
   */
  METAD2A_STATUS_INTERNAL = 7,
  /*
   The progress callback asked to stop.
   */
  METAD2A_STATUS_CANCELLED = 8,
} metad2a_status;

/*
 The search space an engine's weights are for.
 */
typedef enum metad2a_space {
  /*
   NAS-Bench-201 cells (15,625).
   */
  METAD2A_SPACE_NB201 = 0,
  /*
   MobileNetV3 subnets (OFA).
   */
  METAD2A_SPACE_MBV3 = 1,
} metad2a_space;

/*
 Storage type of a caller's feature buffer.
 */
typedef enum metad2a_dtype {
  METAD2A_DTYPE_F32 = 0,
  /*
   IEEE half precision, as `uint16_t` bit patterns.
   */
  METAD2A_DTYPE_F16 = 1,
} metad2a_dtype;

/*
 A feature file loaded into memory (opaque).
 */
typedef struct metad2a_dataset metad2a_dataset;

/*
 A loaded engine (opaque). Immutable; safe to share between threads.
 */
typedef struct metad2a_engine metad2a_engine;

/*
 The ranked candidates of one search (opaque).
 */
typedef struct metad2a_result metad2a_result;

/*
 Called during a search: `stage` 0 while generating (`done` unique candidates of `total`),
 1 before ranking (`done` = `total` = candidates). Return 0 to go on, anything else to stop
 the search with `METAD2A_STATUS_CANCELLED`. Called on the searching thread.
 */
typedef int32_t (*metad2a_progress_fn)(uint32_t stage,
                                       uint64_t done,
                                       uint64_t total,
                                       void *user_data);

/*
 Search parameters; get the defaults from [`metad2a_default_search_params`] and change fields.
 */
typedef struct metad2a_search_params {
  /*
   Same seed, same result.
   */
  uint64_t seed;
  /*
   Candidates to generate and rank (default 500).
   */
  uint32_t num_archs;
  /*
   Set samples each score is averaged over (default 10).
   */
  uint32_t resamples;
  /*
   Candidates kept in the result, best first (default 10; 0 keeps all).
   */
  uint32_t top_k;
  /*
   Feature rows per class in a set sample (default 20).
   */
  uint32_t per_class;
  /*
   Non-zero: draw rows with replacement (classes may have fewer than `per_class` rows).
   */
  uint8_t with_replacement;
  /*
   Non-zero: score all 15,625 NB201 cells instead of generating candidates.
   */
  uint8_t exhaustive;
  /*
   Stop generating after this many decoded graphs (0: the default cap).
   */
  uint64_t max_decoded;
  /*
   Keep only cells of at most this many MFLOPs (multiply-adds; 0: no cap).
   */
  double max_mflops;
  /*
   Keep only cells of at most this many million parameters (0: no cap).
   */
  double max_mparams;
  /*
   Optional progress and cancel hook (NULL: none).
   */
  metad2a_progress_fn progress;
  /*
   Passed to `progress` unchanged.
   */
  void *progress_user_data;
} metad2a_search_params;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/*
 The library version, e.g. "0.1.0" (static storage; never NULL).
 */
const char *metad2a_version(void);

/*
 The C interface version of the library ([`METAD2A_ABI_VERSION`] when it was built).
 */
uint32_t metad2a_abi_version(void);

/*
 The message of the last failed call on this thread ("" if none). Valid until the next
 failing call on this thread.
 */
const char *metad2a_last_error(void);

/*
 Loads an engine from a weights directory (`manifest.json`, the two models and, when present,
 the graph-embedding cache; see README). On success `*out` owns the engine.

 # Safety
 `dir` is a NUL-terminated path; `out` points to writable storage for a pointer.
 */
enum metad2a_status metad2a_engine_load(const char *dir, struct metad2a_engine **out);

/*
 Loads an engine from safetensors images in memory (weights linked into a program):
 `generator` and `predictor` (the files of a weights directory), and optionally the graph
 cache (`graph_cache` NULL and `graph_cache_len` 0 for none; searches are then slower).
 The buffers are NOT copied: they must stay valid and unchanged until the engine is freed.
 Align each to at least 4 bytes (e.g. `_Alignas(64)`): f32 tensors of a buffer that is not
 aligned are read correctly, but copied into memory first.

 # Safety
 Each non-NULL pointer addresses at least its length in readable bytes, for the lifetime of
 the engine; `out` points to writable storage for a pointer.
 */
enum metad2a_status metad2a_engine_load_from_memory(const uint8_t *generator,
                                                    size_t generator_len,
                                                    const uint8_t *predictor,
                                                    size_t predictor_len,
                                                    const uint8_t *graph_cache,
                                                    size_t graph_cache_len,
                                                    struct metad2a_engine **out);

/*
 Frees an engine and sets `*engine` to NULL. NULL or `*engine == NULL` is a no-op.

 # Safety
 `*engine` was returned by a `metad2a_engine_load*` call and is not in use by another thread.
 */
enum metad2a_status metad2a_engine_free(struct metad2a_engine **engine);

/*
 The width of the feature rows the engine reads.

 # Safety
 `engine` is a live engine; `out` is writable.
 */
enum metad2a_status metad2a_engine_feature_dim(const struct metad2a_engine *engine, size_t *out);

/*
 The search space the engine's weights are for.

 # Safety
 `engine` is NULL or live; `out` is NULL or writable.
 */
enum metad2a_status metad2a_engine_space(const struct metad2a_engine *engine,
                                         enum metad2a_space *out);

/*
 Moves the engine's searches to the first CUDA GPU: set encoding, decoding and NB201 ranking
 run there from now on, with the same results as on the CPU (up to float rounding).
 `METAD2A_STATUS_DEVICE`, with the reason in [`metad2a_last_error`], when no GPU is usable or
 the library was built without feature `cuda`; the engine then keeps searching on the CPU,
 so a caller may go on either way. When it succeeds, [`metad2a_last_error`] holds the
 device's name.

 # Safety
 `engine` is NULL or live and not in use by another thread (call it before sharing the
 engine).
 */
enum metad2a_status metad2a_engine_use_cuda(struct metad2a_engine *engine);

/*
 Checks the engine's weights files against their manifest again, every byte (sizes and
 whole-file checksums): loading checks each tensor only when a model first reads it, so a
 damaged tensor that searches never read (the predictor's graph encoder, when the graph cache
 stands in for it) is found here. An engine loaded from memory has no files to check.
 `METAD2A_STATUS_WEIGHTS` says the files on disk differ from the manifest; the engine keeps
 using what it loaded either way.

 # Safety
 `engine` is NULL or live.
 */
enum metad2a_status metad2a_engine_verify(const struct metad2a_engine *engine);

/*
 The default search parameters (official settings: 500 candidates, 10 resamples, 20 rows per
 class; top 10 kept; no budget).
 */
struct metad2a_search_params metad2a_default_search_params(void);

/*
 Searches on a caller's feature buffer: `rows` rows of `dim` values (row-major, `dtype`) and
 one class label per row (`0..C`, every class present). `params` may be NULL for the
 defaults. On success `*out` owns the result. Thread-safe: many threads may search on one
 engine at once.

 # Safety
 `features` addresses `rows * dim` values of `dtype`; `labels` addresses `rows` values;
 `params` is NULL or valid; `out` is writable.
 */
enum metad2a_status metad2a_search(const struct metad2a_engine *engine,
                                   const void *features,
                                   uint32_t dtype,
                                   size_t rows,
                                   size_t dim,
                                   const int32_t *labels,
                                   const struct metad2a_search_params *params,
                                   struct metad2a_result **out);

/*
 Loads a feature file (safetensors with `features` `[N, D]` and `labels` `[N]`; see README).

 # Safety
 `path` is a NUL-terminated path; `out` is writable.
 */
enum metad2a_status metad2a_dataset_load(const char *path, struct metad2a_dataset **out);

/*
 Rows, width and number of classes of a dataset (any of the out-pointers may be NULL).

 # Safety
 `dataset` is live; non-NULL out-pointers are writable.
 */
enum metad2a_status metad2a_dataset_shape(const struct metad2a_dataset *dataset,
                                          size_t *rows,
                                          size_t *dim,
                                          size_t *classes);

/*
 Searches on a loaded dataset (see [`metad2a_search`]). A dataset may be shared by threads.

 # Safety
 `engine` and `dataset` are live; `params` is NULL or valid; `out` is writable.
 */
enum metad2a_status metad2a_search_dataset(const struct metad2a_engine *engine,
                                           const struct metad2a_dataset *dataset,
                                           const struct metad2a_search_params *params,
                                           struct metad2a_result **out);

/*
 Frees a dataset and sets `*dataset` to NULL (NULL is a no-op).

 # Safety
 `*dataset` came from `metad2a_dataset_load` and is not in use by another thread.
 */
enum metad2a_status metad2a_dataset_free(struct metad2a_dataset **dataset);

/*
 Number of candidates in a result (ranked best first).

 # Safety
 `result` is live; `out` is writable.
 */
enum metad2a_status metad2a_result_count(const struct metad2a_result *result, size_t *out);

/*
 Candidate `i`: its NAS-Bench-201 string (owned by the result, valid until it is freed), its
 predicted score (higher is better), and its network's multiply-adds and parameters (standard
 NB201 network). Any out-pointer may be NULL.

 # Safety
 `result` is live; non-NULL out-pointers are writable.
 */
enum metad2a_status metad2a_result_get(const struct metad2a_result *result,
                                       size_t i,
                                       const char **arch,
                                       float *score,
                                       uint64_t *flops,
                                       uint64_t *params);

/*
 Graphs decoded by the generation stage and the wall-clock time of the search (either
 out-pointer may be NULL).

 # Safety
 `result` is live; non-NULL out-pointers are writable.
 */
enum metad2a_status metad2a_result_stats(const struct metad2a_result *result,
                                         uint64_t *decoded,
                                         double *total_ms);

/*
 How far the searched data is from the meta-training tasks of weights with a gated cell mix:
 the novelty of its mean set embedding (in units of the training spread; beyond the weights'
 radius the data is unlike any training task) and the share of the mix's
 dataset-dependent part kept at it (near 0: the ranking every dataset gets). Both NaN for
 weights without a gated mix. Either out-pointer may be NULL.

 # Safety
 `result` is live; non-NULL out-pointers are writable.
 */
enum metad2a_status metad2a_result_data_fit(const struct metad2a_result *result,
                                            double *novelty,
                                            double *gate);

/*
 Frees a result and sets `*result` to NULL (NULL is a no-op).

 # Safety
 `*result` came from a search call and is not in use by another thread.
 */
enum metad2a_status metad2a_result_free(struct metad2a_result **result);

/*
 Panics inside the library on purpose and returns what the boundary makes of it:
 `METAD2A_STATUS_PANIC`, with the message in `metad2a_last_error`. For integrators' tests of
 their error handling.
 */
enum metad2a_status metad2a_selftest_panic(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* METAD2A_H */
