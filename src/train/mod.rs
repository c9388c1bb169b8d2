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
pub mod svg;
