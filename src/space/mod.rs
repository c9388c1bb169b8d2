//! Search spaces: how an architecture is a graph for the models, and back.

pub mod mbv3;
pub mod mbv3_cost;
pub mod nb201;
pub mod nb201_cost;
pub mod nb201_table;

pub use mbv3::Mbv3Arch;
pub use mbv3_cost::Mbv3Net;
pub use nb201::Nb201Arch;
pub use nb201_cost::{Cost, Nb201Net};

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::Dag;

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

/// An architecture of either space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    Nb201(Nb201Arch),
    Mbv3(Mbv3Arch),
}

impl From<Nb201Arch> for Arch {
    fn from(a: Nb201Arch) -> Self {
        Arch::Nb201(a)
    }
}

impl From<Mbv3Arch> for Arch {
    fn from(a: Mbv3Arch) -> Self {
        Arch::Mbv3(a)
    }
}

impl Arch {
    pub fn space(&self) -> Space {
        match self {
            Arch::Nb201(_) => Space::Nb201,
            Arch::Mbv3(_) => Space::Mbv3,
        }
    }

    /// The graph the models see.
    pub fn to_graph(&self) -> Dag {
        match self {
            Arch::Nb201(a) => a.to_graph(),
            Arch::Mbv3(a) => a.to_graph(),
        }
    }

    /// The architecture of `space` a decoded graph stands for, if it is valid there.
    pub fn from_graph(space: Space, g: &Dag) -> Option<Self> {
        match space {
            Space::Nb201 => Nb201Arch::from_graph(g).map(Arch::Nb201),
            Space::Mbv3 => Mbv3Arch::from_graph(g).map(Arch::Mbv3),
        }
    }

    /// Parses an architecture of `space`: an NB201 string, or an MBv3 JSON object or readable
    /// string.
    pub fn parse(space: Space, s: &str) -> Result<Self> {
        match space {
            Space::Nb201 => s.trim().parse().map(Arch::Nb201),
            Space::Mbv3 => s.parse().map(Arch::Mbv3),
        }
    }

    /// The JSON form: the NB201 string, or the MBv3 `{ks, e, d}` object.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Arch::Nb201(a) => serde_json::Value::String(a.to_string()),
            Arch::Mbv3(a) => a.to_json(),
        }
    }

    pub fn as_nb201(&self) -> Option<&Nb201Arch> {
        match self {
            Arch::Nb201(a) => Some(a),
            Arch::Mbv3(_) => None,
        }
    }
}

/// Serialised as its text form (the NAS-Bench-201 string, or the readable MobileNetV3 form).
impl Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Nb201(a) => a.fmt(f),
            Arch::Mbv3(a) => a.fmt(f),
        }
    }
}

impl Space {
    /// The space named `name` (`nb201` or `mbv3`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "nb201" => Ok(Space::Nb201),
            "mbv3" => Ok(Space::Mbv3),
            other => Err(Error::argument(format!(
                "unknown search space {other:?} (nb201 or mbv3)"
            ))),
        }
    }
}
