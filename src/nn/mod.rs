//! Building blocks on row-major f32 slices: fused CPU kernels for the MAB/SAB/PMA set-attention
//! blocks, the GRU step and the gated message sums, plus composed candle references
//! ([`mod@reference`]) that tests compare them against.

pub mod gated;
pub mod gru;
pub mod linalg;
pub mod linear;
#[cfg(feature = "reference")]
pub mod reference;
pub mod set_attention;

pub use gated::GatedMessage;
pub use gru::GruCell;
pub use linear::Linear;
pub use set_attention::{Mab, SetPool};
