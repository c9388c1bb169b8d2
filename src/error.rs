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

    /// Data the engine cannot use: features of the wrong width, too few rows, non-finite
    /// values, unreadable images, malformed tables.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A parameter the caller chose is out of range (zero candidates, an unknown option, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The accelerator failed (driver, kernel launch, transfer).
    #[error("device error: {0}")]
    Device(String),

    /// The caller stopped the work (a progress callback asked to cancel).
    #[error("cancelled by the caller")]
    Cancelled,

    /// A failure inside the engine or in a library it uses (for example candle in the
    /// reference implementations and in training).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What kind of failure an [`Error`] is, for callers that act on it (the C API maps each kind
/// to its own status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A parameter the caller chose is out of range.
    InvalidArgument,
    /// Input data the engine cannot use.
    BadData,
    /// Weights that are missing, damaged or inconsistent.
    Weights,
    /// A file could not be read or written.
    Io,
    /// The accelerator failed.
    Device,
    /// A failure inside the engine.
    Internal,
    /// The caller cancelled the work.
    Cancelled,
}

#[cfg(feature = "reference")]
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Internal(format!("candle: {e}"))
    }
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An `InvalidInput` (bad data) error with this message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    /// An `InvalidArgument` error with this message.
    pub fn argument(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::BadWeightsFile { .. }
            | Error::MissingTensor { .. }
            | Error::ShapeMismatch { .. }
            | Error::UnsupportedDtype { .. }
            | Error::InconsistentModel { .. }
            | Error::Checkpoint { .. }
            | Error::Manifest { .. } => ErrorKind::Weights,
            Error::InvalidInput(_) => ErrorKind::BadData,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Device(_) => ErrorKind::Device,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }
}
