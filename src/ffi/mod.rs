//! The C API (`include/metad2a.h`, generated from this file by cbindgen).
//!
//! Conventions, after tract's and whisper.cpp's interfaces:
//! - every function returns a [`Metad2aStatus`]; on failure a message is kept for the calling
//!   thread and read with [`metad2a_last_error`];
//! - constructors write through an out-pointer; destructors take the address of the caller's
//!   pointer, free the object and set the pointer to NULL;
//! - an engine is immutable once loaded: any number of threads may search on one engine at the
//!   same time; results and datasets belong to their caller;
//! - no panic crosses the boundary: each call runs under `catch_unwind` and a panic becomes
//!   [`Metad2aStatus::Panic`];
//! - NULL pointers, zero or inconsistent sizes and non-finite values are errors, not crashes;
//! - every `unsafe` block says why it is sound (`clippy::undocumented_unsafe_blocks`);
//! - [`METAD2A_ABI_VERSION`] changes whenever a type or signature of this file does.
#![warn(clippy::undocumented_unsafe_blocks)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use crate::error::ErrorKind;
use crate::search::{Budget, Progress, SearchConfig};
use crate::space::Space;
use crate::{Dataset, Engine, Error};

/// The version of the C interface this library implements (types, signatures, meanings).
/// A program compares it with [`metad2a_abi_version`] at run time.
pub const METAD2A_ABI_VERSION: u32 = 4;

/// Result of every call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metad2aStatus {
    Ok = 0,
    /// A NULL pointer, a zero or inconsistent size, an unknown enum value.
    InvalidArgument = 1,
    /// A file could not be read.
    Io = 2,
    /// Weights that are missing, damaged or inconsistent.
    Weights = 3,
    /// Feature data the engine cannot use (width, classes, non-finite values, ...).
    Data = 4,
    /// A bug inside the engine: a panic was caught at the boundary.
    Panic = 5,
    /// The accelerator failed.
    Device = 6,
    /// A failure inside the engine that is not a panic.
    Internal = 7,
    /// The progress callback asked to stop.
    Cancelled = 8,
}

/// The search space an engine's weights are for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metad2aSpace {
    /// NAS-Bench-201 cells (15,625).
    Nb201 = 0,
    /// MobileNetV3 subnets (OFA).
    Mbv3 = 1,
}

/// Called during a search: `stage` 0 while generating (`done` unique candidates of `total`),
/// 1 before ranking (`done` = `total` = candidates). Return 0 to go on, anything else to stop
/// the search with `METAD2A_STATUS_CANCELLED`. Called on the searching thread.
pub type Metad2aProgressFn =
    Option<unsafe extern "C" fn(stage: u32, done: u64, total: u64, user_data: *mut c_void) -> i32>;

/// Storage type of a caller's feature buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metad2aDtype {
    F32 = 0,
    /// IEEE half precision, as `uint16_t` bit patterns.
    F16 = 1,
}

/// Search parameters; get the defaults from [`metad2a_default_search_params`] and change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Metad2aSearchParams {
    /// Same seed, same result.
    pub seed: u64,
    /// Candidates to generate and rank (default 500).
    pub num_archs: u32,
    /// Set samples each score is averaged over (default 10).
    pub resamples: u32,
    /// Candidates kept in the result, best first (default 10; 0 keeps all).
    pub top_k: u32,
    /// Feature rows per class in a set sample (default 20).
    pub per_class: u32,
    /// Non-zero: draw rows with replacement (classes may have fewer than `per_class` rows).
    pub with_replacement: u8,
    /// Non-zero: score all 15,625 NB201 cells instead of generating candidates.
    pub exhaustive: u8,
    /// Stop generating after this many decoded graphs (0: the default cap).
    pub max_decoded: u64,
    /// Keep only cells of at most this many MFLOPs (multiply-adds; 0: no cap).
    pub max_mflops: f64,
    /// Keep only cells of at most this many million parameters (0: no cap).
    pub max_mparams: f64,
    /// Optional progress and cancel hook (NULL: none).
    pub progress: Metad2aProgressFn,
    /// Passed to `progress` unchanged.
    pub progress_user_data: *mut c_void,
}

/// A loaded engine (opaque). Immutable; safe to share between threads.
pub struct Metad2aEngine {
    engine: Engine,
}

/// A feature file loaded into memory (opaque).
pub struct Metad2aDataset {
    data: Dataset,
}

/// The ranked candidates of one search (opaque).
pub struct Metad2aResult {
    archs: Vec<CString>,
    scores: Vec<f32>,
    flops: Vec<u64>,
    params: Vec<u64>,
    decoded: u64,
    total_ms: f64,
    /// (novelty, gate), NaN without a gated cell mix.
    data_fit: (f64, f64),
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn status_of(e: &Error) -> Metad2aStatus {
    match e.kind() {
        ErrorKind::InvalidArgument => Metad2aStatus::InvalidArgument,
        ErrorKind::BadData => Metad2aStatus::Data,
        ErrorKind::Weights => Metad2aStatus::Weights,
        ErrorKind::Io => Metad2aStatus::Io,
        ErrorKind::Device => Metad2aStatus::Device,
        ErrorKind::Internal => Metad2aStatus::Internal,
        ErrorKind::Cancelled => Metad2aStatus::Cancelled,
    }
}

/// Runs `f`, turning errors and panics into a status and the thread's last error.
fn guard(f: impl FnOnce() -> Result<(), Fail>) -> Metad2aStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Metad2aStatus::Ok,
        Ok(Err((status, msg))) => {
            set_error(&msg);
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(&format!(
                "internal error (panic caught at the C boundary): {what}"
            ));
            Metad2aStatus::Panic
        }
    }
}

/// A failed call: its status and message.
type Fail = (Metad2aStatus, String);

fn engine_err(e: Error) -> Fail {
    (status_of(&e), e.to_string())
}

fn invalid(msg: impl Into<String>) -> Fail {
    (Metad2aStatus::InvalidArgument, msg.into())
}

/// # Safety
/// `p` is NULL or a valid NUL-terminated string.
unsafe fn path_arg(p: *const c_char, what: &str) -> Result<PathBuf, Fail> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL (checked above); the caller passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(format!("{what} is not valid UTF-8")))?;
    Ok(PathBuf::from(s))
}

/// A constructor's out-pointer: refused when NULL, else cleared (a failed call leaves NULL
/// behind) and handed back to be filled with [`give`].
///
/// # Safety
/// `out` is NULL or valid for writes, and outlives the returned reference.
unsafe fn out_slot<'a, T>(out: *mut *mut T) -> Result<&'a mut *mut T, Fail> {
    // SAFETY: NULL or valid for writes, by this function's contract.
    let slot = unsafe { out.as_mut() }.ok_or_else(|| invalid("out is NULL"))?;
    *slot = std::ptr::null_mut();
    Ok(slot)
}

/// A required out-pointer for a plain value, refused when NULL.
///
/// # Safety
/// `out` is NULL or valid for writes, and outlives the returned reference.
unsafe fn required<'a, T>(out: *mut T) -> Result<&'a mut T, Fail> {
    // SAFETY: NULL or valid for writes, by this function's contract.
    unsafe { out.as_mut() }.ok_or_else(|| invalid("out is NULL"))
}

/// Hands `value` to the caller through its out-pointer; the caller frees it with the matching
/// `metad2a_*_free`.
fn give<T>(slot: &mut *mut T, value: T) {
    *slot = Box::into_raw(Box::new(value));
}

/// A caller's object, refused when NULL.
///
/// # Safety
/// `p` is NULL or points to a live `T` that outlives the returned reference.
unsafe fn live<'a, T>(p: *const T, what: &str) -> Result<&'a T, Fail> {
    // SAFETY: NULL or live, by this function's contract.
    unsafe { p.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// Writes `value` through an optional out-pointer (NULL: not wanted).
///
/// # Safety
/// `p` is NULL or valid for writes.
unsafe fn put<T>(p: *mut T, value: T) {
    // SAFETY: NULL or valid for writes, by this function's contract.
    if let Some(r) = unsafe { p.as_mut() } {
        *r = value;
    }
}

/// Frees an object a constructor gave and sets the caller's pointer to NULL; NULL, or a
/// pointer to NULL, is a no-op.
///
/// # Safety
/// `p` is NULL or points to the caller's pointer, which is NULL or came from [`give`] with
/// this `T` and is not in use by another thread.
unsafe fn free_given<T>(p: *mut *mut T) -> Metad2aStatus {
    guard(|| {
        // SAFETY: NULL or valid for reads and writes, by this function's contract.
        if let Some(slot) = unsafe { p.as_mut() } {
            if !slot.is_null() {
                // SAFETY: the pointer came from `Box::into_raw` in `give` and is freed once:
                // the caller's copy is set to NULL next.
                drop(unsafe { Box::from_raw(*slot) });
                *slot = std::ptr::null_mut();
            }
        }
        Ok(())
    })
}

/// The library version, e.g. "0.1.0" (static storage; never NULL).
#[no_mangle]
pub extern "C" fn metad2a_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The C interface version of the library ([`METAD2A_ABI_VERSION`] when it was built).
#[no_mangle]
pub extern "C" fn metad2a_abi_version() -> u32 {
    METAD2A_ABI_VERSION
}

/// The message of the last failed call on this thread ("" if none). Valid until the next
/// failing call on this thread.
#[no_mangle]
pub extern "C" fn metad2a_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Loads an engine from a weights directory (`manifest.json`, the two models and, when present,
/// the graph-embedding cache; see README). On success `*out` owns the engine.
///
/// # Safety
/// `dir` is a NUL-terminated path; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn metad2a_engine_load(
    dir: *const c_char,
    out: *mut *mut Metad2aEngine,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let (slot, dir) = unsafe { (out_slot(out)?, path_arg(dir, "dir")?) };
        let engine = Engine::load(&dir).map_err(engine_err)?;
        give(slot, Metad2aEngine { engine });
        Ok(())
    })
}

/// Loads an engine from safetensors images in memory (weights linked into a program):
/// `generator` and `predictor` (the files of a weights directory), and optionally the graph
/// cache (`graph_cache` NULL and `graph_cache_len` 0 for none; searches are then slower).
/// The buffers are NOT copied: they must stay valid and unchanged until the engine is freed.
/// Align each to at least 4 bytes (e.g. `_Alignas(64)`): f32 tensors of a buffer that is not
/// aligned are read correctly, but copied into memory first.
///
/// # Safety
/// Each non-NULL pointer addresses at least its length in readable bytes, for the lifetime of
/// the engine; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn metad2a_engine_load_from_memory(
    generator: *const u8,
    generator_len: usize,
    predictor: *const u8,
    predictor_len: usize,
    graph_cache: *const u8,
    graph_cache_len: usize,
    out: *mut *mut Metad2aEngine,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let slot = unsafe { out_slot(out) }?;
        if generator.is_null() || predictor.is_null() {
            return Err(invalid("generator or predictor buffer is NULL"));
        }
        if generator_len == 0 || predictor_len == 0 {
            return Err(invalid("generator or predictor buffer has length 0"));
        }
        if graph_cache.is_null() != (graph_cache_len == 0) {
            return Err(invalid(
                "graph_cache and graph_cache_len must both be set or both be empty",
            ));
        }
        // SAFETY: not NULL (checked above); the caller keeps the buffers alive and unchanged
        // while the engine exists, and the engine never outlives `metad2a_engine_free`.
        let (g, p) = unsafe {
            (
                std::slice::from_raw_parts(generator, generator_len),
                std::slice::from_raw_parts(predictor, predictor_len),
            )
        };
        // SAFETY: as above, for the optional cache (not NULL when taken).
        let c = (!graph_cache.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(graph_cache, graph_cache_len) });
        let engine = Engine::from_static(g, p, c).map_err(engine_err)?;
        give(slot, Metad2aEngine { engine });
        Ok(())
    })
}

/// Frees an engine and sets `*engine` to NULL. NULL or `*engine == NULL` is a no-op.
///
/// # Safety
/// `*engine` was returned by a `metad2a_engine_load*` call and is not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn metad2a_engine_free(engine: *mut *mut Metad2aEngine) -> Metad2aStatus {
    // SAFETY: this function's contract.
    unsafe { free_given(engine) }
}

/// The width of the feature rows the engine reads.
///
/// # Safety
/// `engine` is a live engine; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_engine_feature_dim(
    engine: *const Metad2aEngine,
    out: *mut usize,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let e = unsafe { live(engine, "engine") }?;
        // SAFETY: this function's contract.
        *unsafe { required(out) }? = e.engine.feature_dim();
        Ok(())
    })
}

/// The search space the engine's weights are for.
///
/// # Safety
/// `engine` is NULL or live; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_engine_space(
    engine: *const Metad2aEngine,
    out: *mut Metad2aSpace,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let e = unsafe { live(engine, "engine") }?;
        // SAFETY: this function's contract.
        *unsafe { required(out) }? = match e.engine.space {
            Space::Nb201 => Metad2aSpace::Nb201,
            Space::Mbv3 => Metad2aSpace::Mbv3,
        };
        Ok(())
    })
}

/// Moves the engine's searches to the first CUDA GPU: set encoding, decoding and NB201 ranking
/// run there from now on, with the same results as on the CPU (up to float rounding).
/// `METAD2A_STATUS_DEVICE`, with the reason in [`metad2a_last_error`], when no GPU is usable or
/// the library was built without feature `cuda`; the engine then keeps searching on the CPU,
/// so a caller may go on either way. When it succeeds, [`metad2a_last_error`] holds the
/// device's name.
///
/// # Safety
/// `engine` is NULL or live and not in use by another thread (call it before sharing the
/// engine).
#[no_mangle]
pub unsafe extern "C" fn metad2a_engine_use_cuda(engine: *mut Metad2aEngine) -> Metad2aStatus {
    guard(|| {
        // SAFETY: NULL or live and not shared, by this function's contract.
        let e = unsafe { engine.as_mut() }.ok_or_else(|| invalid("engine is NULL"))?;
        let name = e
            .engine
            .use_cuda()
            .map_err(|why| (Metad2aStatus::Device, format!("CUDA unavailable: {why}")))?;
        set_error(&name);
        Ok(())
    })
}

/// Checks the engine's weights files against their manifest again, every byte (sizes and
/// whole-file checksums): loading checks each tensor only when a model first reads it, so a
/// damaged tensor that searches never read (the predictor's graph encoder, when the graph cache
/// stands in for it) is found here. An engine loaded from memory has no files to check.
/// `METAD2A_STATUS_WEIGHTS` says the files on disk differ from the manifest; the engine keeps
/// using what it loaded either way.
///
/// # Safety
/// `engine` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn metad2a_engine_verify(engine: *const Metad2aEngine) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let e = unsafe { live(engine, "engine") }?;
        e.engine.verify().map_err(engine_err)?;
        Ok(())
    })
}

/// The default search parameters (official settings: 500 candidates, 10 resamples, 20 rows per
/// class; top 10 kept; no budget).
#[no_mangle]
pub extern "C" fn metad2a_default_search_params() -> Metad2aSearchParams {
    let d = SearchConfig::default();
    Metad2aSearchParams {
        seed: d.seed,
        num_archs: d.num_archs as u32,
        resamples: d.resamples as u32,
        top_k: d.top_k as u32,
        per_class: d.per_class as u32,
        with_replacement: 0,
        exhaustive: 0,
        max_decoded: 0,
        max_mflops: 0.0,
        max_mparams: 0.0,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
    }
}

fn config(p: &Metad2aSearchParams) -> Result<SearchConfig, Fail> {
    let cap = |v: f64, what: &str| -> Result<Option<u64>, Fail> {
        if !v.is_finite() || v < 0.0 {
            return Err(invalid(format!("{what} must be a finite number >= 0")));
        }
        Ok((v > 0.0).then(|| (v * 1e6).round() as u64))
    };
    Ok(SearchConfig {
        seed: p.seed,
        num_archs: p.num_archs as usize,
        resamples: p.resamples as usize,
        top_k: p.top_k as usize,
        per_class: p.per_class as usize,
        with_replacement: p.with_replacement != 0,
        max_decoded: (p.max_decoded > 0).then_some(p.max_decoded as usize),
        exhaustive: p.exhaustive != 0,
        budget: Budget {
            max_flops: cap(p.max_mflops, "max_mflops")?,
            max_params: cap(p.max_mparams, "max_mparams")?,
            ..Default::default()
        },
    })
}

/// # Safety
/// `params` is NULL or points to valid parameters (whose callback, if any, is callable with
/// its user data).
unsafe fn run_search(
    e: &Engine,
    data: &Dataset,
    params: *const Metad2aSearchParams,
    out: &mut *mut Metad2aResult,
) -> Result<(), Fail> {
    // SAFETY: the caller guarantees `params` is NULL or valid.
    let p = match unsafe { params.as_ref() } {
        Some(p) => *p,
        None => metad2a_default_search_params(),
    };
    let cfg = config(&p)?;
    let mut control = |pr: Progress| {
        let Some(f) = p.progress else {
            return ControlFlow::Continue(());
        };
        let (stage, done, total) = match pr {
            Progress::Generating { unique, target, .. } => (0, unique, target),
            Progress::Ranking { candidates } => (1, candidates, candidates),
        };
        // SAFETY: the caller supplied this function and its user data for this search.
        match unsafe { f(stage, done as u64, total as u64, p.progress_user_data) } {
            0 => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        }
    };
    let r = e
        .search_controlled(data, &cfg, &mut control)
        .map_err(engine_err)?;
    let res = Metad2aResult {
        archs: r
            .candidates
            .iter()
            .map(|c| CString::new(c.arch.to_string()).expect("arch strings have no NUL"))
            .collect(),
        scores: r.candidates.iter().map(|c| c.score).collect(),
        flops: r.candidates.iter().map(|c| c.flops).collect(),
        params: r.candidates.iter().map(|c| c.params).collect(),
        decoded: r.counts.decoded as u64,
        total_ms: r.timings.total_ms,
        data_fit: r
            .data_fit
            .map_or((f64::NAN, f64::NAN), |f| (f.novelty as f64, f.gate as f64)),
    };
    give(out, res);
    Ok(())
}

/// Searches on a caller's feature buffer: `rows` rows of `dim` values (row-major, `dtype`) and
/// one class label per row (`0..C`, every class present). `params` may be NULL for the
/// defaults. On success `*out` owns the result. Thread-safe: many threads may search on one
/// engine at once.
///
/// # Safety
/// `features` addresses `rows * dim` values of `dtype`; `labels` addresses `rows` values;
/// `params` is NULL or valid; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_search(
    engine: *const Metad2aEngine,
    features: *const c_void,
    dtype: u32,
    rows: usize,
    dim: usize,
    labels: *const i32,
    params: *const Metad2aSearchParams,
    out: *mut *mut Metad2aResult,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let (slot, e) = unsafe { (out_slot(out)?, live(engine, "engine")?) };
        if features.is_null() || labels.is_null() {
            return Err(invalid("features or labels is NULL"));
        }
        if rows == 0 || dim == 0 {
            return Err(invalid(format!(
                "rows ({rows}) and dim ({dim}) must be positive"
            )));
        }
        let n = rows
            .checked_mul(dim)
            .filter(|&n| n <= isize::MAX as usize / 4)
            .ok_or_else(|| invalid("rows * dim overflows"))?;
        let feats: Vec<f32> = match dtype {
            // SAFETY: not NULL (checked above); `features` holds `rows * dim` values of
            // `dtype` by this function's contract, and `n` does not overflow.
            0 => unsafe { std::slice::from_raw_parts(features as *const f32, n) }.to_vec(),
            // SAFETY: as above.
            1 => unsafe { std::slice::from_raw_parts(features as *const u16, n) }
                .iter()
                .map(|&b| half::f16::from_bits(b).to_f32())
                .collect(),
            d => {
                return Err(invalid(format!(
                    "dtype {d} is neither METAD2A_DTYPE_F32 (0) nor METAD2A_DTYPE_F16 (1)"
                )))
            }
        };
        // SAFETY: not NULL (checked above); `labels` holds `rows` values by this function's
        // contract.
        let labels = unsafe { std::slice::from_raw_parts(labels, rows) };
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0) {
            return Err((
                Metad2aStatus::Data,
                format!("label {l} of row {i} is negative"),
            ));
        }
        let labels: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let data = Dataset::new(feats, dim, labels, None).map_err(engine_err)?;
        // SAFETY: `params` is NULL or valid by this function's contract.
        unsafe { run_search(&e.engine, &data, params, slot) }
    })
}

/// Loads a feature file (safetensors with `features` `[N, D]` and `labels` `[N]`; see README).
///
/// # Safety
/// `path` is a NUL-terminated path; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_dataset_load(
    path: *const c_char,
    out: *mut *mut Metad2aDataset,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let (slot, path) = unsafe { (out_slot(out)?, path_arg(path, "path")?) };
        let data = Dataset::load(&path).map_err(engine_err)?;
        give(slot, Metad2aDataset { data });
        Ok(())
    })
}

/// Rows, width and number of classes of a dataset (any of the out-pointers may be NULL).
///
/// # Safety
/// `dataset` is live; non-NULL out-pointers are writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_dataset_shape(
    dataset: *const Metad2aDataset,
    rows: *mut usize,
    dim: *mut usize,
    classes: *mut usize,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let d = &unsafe { live(dataset, "dataset") }?.data;
        // SAFETY: each out-pointer is NULL or writable, by this function's contract.
        unsafe {
            put(rows, d.num_rows());
            put(dim, d.dim);
            put(classes, d.num_classes());
        }
        Ok(())
    })
}

/// Searches on a loaded dataset (see [`metad2a_search`]). A dataset may be shared by threads.
///
/// # Safety
/// `engine` and `dataset` are live; `params` is NULL or valid; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_search_dataset(
    engine: *const Metad2aEngine,
    dataset: *const Metad2aDataset,
    params: *const Metad2aSearchParams,
    out: *mut *mut Metad2aResult,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        unsafe {
            let slot = out_slot(out)?;
            let e = live(engine, "engine")?;
            let d = live(dataset, "dataset")?;
            run_search(&e.engine, &d.data, params, slot)
        }
    })
}

/// Frees a dataset and sets `*dataset` to NULL (NULL is a no-op).
///
/// # Safety
/// `*dataset` came from `metad2a_dataset_load` and is not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn metad2a_dataset_free(dataset: *mut *mut Metad2aDataset) -> Metad2aStatus {
    // SAFETY: this function's contract.
    unsafe { free_given(dataset) }
}

/// The candidate `i` of a live result, or why not.
///
/// # Safety
/// `r` is NULL or a live result, which outlives the returned reference.
unsafe fn candidate<'a>(r: *const Metad2aResult, i: usize) -> Result<&'a Metad2aResult, Fail> {
    // SAFETY: this function's contract.
    let r = unsafe { live(r, "result") }?;
    if i >= r.archs.len() {
        return Err(invalid(format!(
            "index {i} is out of range: the result has {} candidates",
            r.archs.len()
        )));
    }
    Ok(r)
}

/// Number of candidates in a result (ranked best first).
///
/// # Safety
/// `result` is live; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_result_count(
    result: *const Metad2aResult,
    out: *mut usize,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let r = unsafe { live(result, "result") }?;
        // SAFETY: this function's contract.
        *unsafe { required(out) }? = r.archs.len();
        Ok(())
    })
}

/// Candidate `i`: its NAS-Bench-201 string (owned by the result, valid until it is freed), its
/// predicted score (higher is better), and its network's multiply-adds and parameters (standard
/// NB201 network). Any out-pointer may be NULL.
///
/// # Safety
/// `result` is live; non-NULL out-pointers are writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_result_get(
    result: *const Metad2aResult,
    i: usize,
    arch: *mut *const c_char,
    score: *mut f32,
    flops: *mut u64,
    params: *mut u64,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let r = unsafe { candidate(result, i) }?;
        // SAFETY: each out-pointer is NULL or writable, by this function's contract.
        unsafe {
            put(arch, r.archs[i].as_ptr());
            put(score, r.scores[i]);
            put(flops, r.flops[i]);
            put(params, r.params[i]);
        }
        Ok(())
    })
}

/// Graphs decoded by the generation stage and the wall-clock time of the search (either
/// out-pointer may be NULL).
///
/// # Safety
/// `result` is live; non-NULL out-pointers are writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_result_stats(
    result: *const Metad2aResult,
    decoded: *mut u64,
    total_ms: *mut f64,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let r = unsafe { live(result, "result") }?;
        // SAFETY: each out-pointer is NULL or writable, by this function's contract.
        unsafe {
            put(decoded, r.decoded);
            put(total_ms, r.total_ms);
        }
        Ok(())
    })
}

/// How far the searched data is from the meta-training tasks of weights with a gated cell mix:
/// the novelty of its mean set embedding (in units of the training spread; beyond the weights'
/// radius the data is unlike any training task) and the share of the mix's
/// dataset-dependent part kept at it (near 0: the ranking every dataset gets). Both NaN for
/// weights without a gated mix. Either out-pointer may be NULL.
///
/// # Safety
/// `result` is live; non-NULL out-pointers are writable.
#[no_mangle]
pub unsafe extern "C" fn metad2a_result_data_fit(
    result: *const Metad2aResult,
    novelty: *mut f64,
    gate: *mut f64,
) -> Metad2aStatus {
    guard(|| {
        // SAFETY: this function's contract.
        let r = unsafe { live(result, "result") }?;
        // SAFETY: each out-pointer is NULL or writable, by this function's contract.
        unsafe {
            put(novelty, r.data_fit.0);
            put(gate, r.data_fit.1);
        }
        Ok(())
    })
}

/// Frees a result and sets `*result` to NULL (NULL is a no-op).
///
/// # Safety
/// `*result` came from a search call and is not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn metad2a_result_free(result: *mut *mut Metad2aResult) -> Metad2aStatus {
    // SAFETY: this function's contract.
    unsafe { free_given(result) }
}

/// Panics inside the library on purpose and returns what the boundary makes of it:
/// `METAD2A_STATUS_PANIC`, with the message in `metad2a_last_error`. For integrators' tests of
/// their error handling.
#[no_mangle]
pub extern "C" fn metad2a_selftest_panic() -> Metad2aStatus {
    guard(|| panic!("metad2a_selftest_panic was called"))
}
