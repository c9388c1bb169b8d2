//! The one error type of the engine. Every fallible entry point returns [`Result`]; variants are
//! structured so that callers (and the C API) can tell what went wrong without parsing text.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A weights file that is not a readable safetensors file (truncated, corrupt header, ...).
    #[error("{file}: not a valid safetensors file: {reason}")]
    BadWeightsFile { file: String, reason: String },

    /// A tensor the model needs is absent.
    #[error("{file}: missing tensor `{name}`")]
    MissingTensor { file: String, name: String },

    /// A tensor has the wrong shape.
    #[error("{file}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        file: String,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor is stored in a dtype the engine does not read.
    #[error("{file}: tensor `{name}` is stored as {dtype}; the engine reads F32, F16 or BF16")]
    UnsupportedDtype {
        file: String,
        name: String,
        dtype: String,
    },

    /// Sizes read from the weights do not fit together (e.g. heads that do not divide a width).
    #[error("{file}: inconsistent model sizes: {reason}")]
    InconsistentModel { file: String, reason: String },

    /// A PyTorch checkpoint that cannot be imported.
    #[error("{file}: cannot import checkpoint: {reason}")]
    Checkpoint { file: String, reason: String },

    /// A manifest that is missing, unreadable or disagrees with the weights.
    #[error("{file}: bad manifest: {reason}")]
    Manifest { file: String, reason: String },

    /// A bad argument or input value from the caller.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// An error from candle (reference implementations, features, training).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An `InvalidInput` error with this message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
}
