//! Search spaces: how an architecture is a graph for the models, and back.

pub mod nb201;
pub mod nb201_cost;
pub mod nb201_table;

pub use nb201::Nb201Arch;
pub use nb201_cost::{Cost, Nb201Net};

use serde::{Deserialize, Serialize};

/// The search spaces the engine knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// NAS-Bench-201 cells: 8 vertices, 7 vertex types.
    Nb201,
    /// Once-for-All MobileNetV3 subnets: 22 vertices, 29 vertex types.
    Mbv3,
}

impl Space {
    /// The space whose graphs have `max_n` vertices of `nvt` types, if any.
    pub fn from_graph_sizes(nvt: usize, max_n: usize) -> Option<Self> {
        match (nvt, max_n) {
            (7, 8) => Some(Space::Nb201),
            (29, 22) => Some(Space::Mbv3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Space::Nb201 => "nb201",
            Space::Mbv3 => "mbv3",
        }
    }
}
