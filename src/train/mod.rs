//! Training, behind the cargo feature `train` (never in the default build): NAS-Bench-201 cell
//! networks for the meta-database ([`cell_net`], [`cell_train`], [`ops`]), the calibration of
//! their cheap training protocol ([`calibrate`]) and the NASWOT baseline ([`naswot`]).

pub mod build_db;
pub mod calibrate;
pub mod candle_ref;
pub mod cell_net;
pub mod cell_train;
#[cfg(target_arch = "x86_64")]
mod conv_avx2;
pub mod meta;
pub mod meta_test;
pub mod meta_train;
pub mod metadb;
pub mod naswot;
pub mod ops;
pub mod ranker;
pub mod svg;

use std::path::Path;

use crate::error::{Error, Result};

/// Appends `value` as one line to the JSON-lines file `path` (created if missing), written in
/// one piece and flushed to disk, so a kill loses at most the line being written.
pub(crate) fn append_json_line<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let line = serde_json::to_string(value).expect("a record serialises") + "\n";
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| {
            f.write_all(line.as_bytes())?;
            f.sync_data()
        })
        .map_err(|e| Error::io(path, e))
}

/// The text of an append-only file, empty when it has not been started yet.
pub(crate) fn read_appended(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}
