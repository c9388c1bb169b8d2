//! The MobileNetV3 space of Once-for-All (`ofa_mbv3_d234_e346_k357_w1.0`) as MetaD2A encodes it.
//!
//! A subnet has 5 stages of up to 4 blocks (20 block slots). Each slot has a kernel size
//! `ks ∈ {3, 5, 7}` and an expand ratio `e ∈ {3, 4, 6}`; each stage a depth `d ∈ {2, 3, 4}`
//! (its first `d` blocks run). Slots beyond a stage's depth still carry `ks`/`e` values, which
//! the models see, so an architecture is the full record `{ks: [20], e: [20], d: [5]}`: 3^45
//! records, about 10^19 distinct subnets.
//!
//! The graph is a 22-vertex chain: vertex 0 is START (type 0), vertices 1..=20 the block slots
//! in order, vertex 21 END (type 1). Slot `j` of stage `s = j / 4` has type
//! `2 + 9·(d_s − 2) + 3·idx(ks_j) + idx(e_j)` with `idx(3|5|7) = idx(3|4|6) = 0|1|2`, so every
//! vertex of a stage carries the stage's depth. A decoded graph is an architecture when it is a
//! valid computation DAG of exactly 22 vertices whose four vertices in each stage agree on the
//! depth (the official rule; its edges are not otherwise constrained).
//!
//! Two text forms:
//! - JSON, as the official code writes it: `{"ks": [...], "e": [...], "d": [...]}`;
//! - a readable string: stages separated by `|`, blocks `k<ks>e<e>` in order, the blocks
//!   beyond the stage's depth in brackets, e.g.
//!   `k3e3 k3e6 [k7e6 k3e6] | k3e4 k3e4 k5e6 [k3e3] | ...` (stage depths 2 and 3).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::{Dag, END_TYPE, START_TYPE};
use crate::rng::Rng;

pub const STAGES: usize = 5;
pub const BLOCKS_PER_STAGE: usize = 4;
pub const SLOTS: usize = STAGES * BLOCKS_PER_STAGE;
/// Vertices of an MBv3 graph: START, 20 slots, END.
pub const NUM_VERTICES: usize = SLOTS + 2;
/// Vertex types: START, END and 27 (depth, kernel, expand) combinations.
pub const NUM_TYPES: usize = 29;
pub const KERNELS: [u8; 3] = [3, 5, 7];
pub const EXPANDS: [u8; 3] = [3, 4, 6];
pub const DEPTHS: [u8; 3] = [2, 3, 4];

/// A subnet: kernel size and expand ratio of every slot, depth of every stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mbv3Arch {
    pub ks: [u8; SLOTS],
    pub e: [u8; SLOTS],
    pub d: [u8; STAGES],
}

fn index_of(set: &[u8; 3], v: u8) -> Option<usize> {
    set.iter().position(|&x| x == v)
}

impl Mbv3Arch {
    /// Checks every value against its choices.
    pub fn new(ks: [u8; SLOTS], e: [u8; SLOTS], d: [u8; STAGES]) -> Result<Self> {
        if let Some(j) = ks.iter().position(|&k| index_of(&KERNELS, k).is_none()) {
            return Err(Error::invalid(format!(
                "block {j}: kernel size {} is not one of 3, 5, 7",
                ks[j]
            )));
        }
        if let Some(j) = e.iter().position(|&x| index_of(&EXPANDS, x).is_none()) {
            return Err(Error::invalid(format!(
                "block {j}: expand ratio {} is not one of 3, 4, 6",
                e[j]
            )));
        }
        if let Some(s) = d.iter().position(|&x| index_of(&DEPTHS, x).is_none()) {
            return Err(Error::invalid(format!(
                "stage {s}: depth {} is not one of 2, 3, 4",
                d[s]
            )));
        }
        Ok(Mbv3Arch { ks, e, d })
    }

    /// A uniformly random record.
    pub fn random(rng: &mut Rng) -> Self {
        let mut pick = |set: &[u8; 3]| set[rng.below(3) as usize];
        let ks = std::array::from_fn(|_| pick(&KERNELS));
        let e = std::array::from_fn(|_| pick(&EXPANDS));
        let d = std::array::from_fn(|_| pick(&DEPTHS));
        Mbv3Arch { ks, e, d }
    }

    /// The vertex type of block slot `j`.
    pub fn slot_type(&self, j: usize) -> u8 {
        let d = index_of(&DEPTHS, self.d[j / BLOCKS_PER_STAGE]).expect("checked");
        let k = index_of(&KERNELS, self.ks[j]).expect("checked");
        let e = index_of(&EXPANDS, self.e[j]).expect("checked");
        (2 + 9 * d + 3 * k + e) as u8
    }

    /// The 22 vertex types of the graph.
    pub fn types(&self) -> Vec<u8> {
        let mut t = Vec::with_capacity(NUM_VERTICES);
        t.push(START_TYPE);
        t.extend((0..SLOTS).map(|j| self.slot_type(j)));
        t.push(END_TYPE);
        t
    }

    /// The chain graph MetaD2A builds for this subnet.
    pub fn to_graph(&self) -> Dag {
        let edges: Vec<(usize, usize)> = (0..NUM_VERTICES - 1).map(|v| (v, v + 1)).collect();
        Dag::new(self.types(), &edges)
    }

    /// The subnet a decoded graph stands for, or `None` when it breaks the official rules.
    pub fn from_graph(g: &Dag) -> Option<Self> {
        if g.len() != NUM_VERTICES || !g.is_valid_dag() {
            return None;
        }
        let (mut ks, mut e, mut d) = ([0u8; SLOTS], [0u8; SLOTS], [0u8; STAGES]);
        for j in 0..SLOTS {
            let t = g.types[j + 1];
            if !(2..NUM_TYPES as u8).contains(&t) {
                return None;
            }
            let t = (t - 2) as usize;
            let depth = DEPTHS[t / 9];
            let s = j / BLOCKS_PER_STAGE;
            if j % BLOCKS_PER_STAGE == 0 {
                d[s] = depth;
            } else if d[s] != depth {
                return None;
            }
            ks[j] = KERNELS[t % 9 / 3];
            e[j] = EXPANDS[t % 3];
        }
        Some(Mbv3Arch { ks, e, d })
    }

    /// The JSON object form.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"ks": self.ks, "e": self.e, "d": self.d})
    }

    /// Parses the JSON object form `{"ks": [20], "e": [20], "d": [5]}` (extra keys are errors).
    pub fn from_json(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            ks: Vec<u8>,
            e: Vec<u8>,
            d: Vec<u8>,
        }
        let raw: Raw = serde_json::from_str(text)
            .map_err(|err| Error::invalid(format!("not an MBv3 architecture object ({{\"ks\": [20], \"e\": [20], \"d\": [5]}}): {err}")))?;
        let len = |v: Vec<u8>, n: usize, name: &str| -> Result<Vec<u8>> {
            if v.len() == n {
                Ok(v)
            } else {
                Err(Error::invalid(format!(
                    "\"{name}\" has {} values, an MBv3 architecture has {n}",
                    v.len()
                )))
            }
        };
        let ks = len(raw.ks, SLOTS, "ks")?;
        let e = len(raw.e, SLOTS, "e")?;
        let d = len(raw.d, STAGES, "d")?;
        Self::new(
            ks.try_into().expect("length checked"),
            e.try_into().expect("length checked"),
            d.try_into().expect("length checked"),
        )
    }

    /// The blocks that run: `(stage, kernel, expand)` in order.
    pub fn active_blocks(&self) -> impl Iterator<Item = (usize, u8, u8)> + '_ {
        (0..STAGES).flat_map(move |s| {
            (0..self.d[s] as usize).map(move |b| {
                let j = s * BLOCKS_PER_STAGE + b;
                (s, self.ks[j], self.e[j])
            })
        })
    }
}

impl fmt::Display for Mbv3Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in 0..STAGES {
            if s > 0 {
                f.write_str(" | ")?;
            }
            let d = self.d[s] as usize;
            for b in 0..BLOCKS_PER_STAGE {
                let j = s * BLOCKS_PER_STAGE + b;
                let sep = if b == 0 { "" } else { " " };
                let open = if b == d { "[" } else { "" };
                let close = if b == BLOCKS_PER_STAGE - 1 && d < BLOCKS_PER_STAGE {
                    "]"
                } else {
                    ""
                };
                write!(f, "{sep}{open}k{}e{}{close}", self.ks[j], self.e[j])?;
            }
        }
        Ok(())
    }
}

impl FromStr for Mbv3Arch {
    type Err = Error;

    /// Parses the readable form (see the module documentation) or the JSON object form.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.starts_with('{') {
            return Self::from_json(t);
        }
        let bad = |why: String| {
            Error::invalid(format!("bad MBv3 architecture {s:?}: {why} (expected e.g. \"k3e3 k3e6 [k7e6 k3e6] | ...\" with 5 stages of 4 blocks, or the JSON object)"))
        };
        let stages: Vec<&str> = t.split('|').collect();
        if stages.len() != STAGES {
            return Err(bad(format!("{} stages", stages.len())));
        }
        let (mut ks, mut e, mut d) = ([0u8; SLOTS], [0u8; SLOTS], [0u8; STAGES]);
        for (si, stage) in stages.iter().enumerate() {
            let flat = stage.replace('[', " [ ").replace(']', " ] ");
            let mut inside = false;
            let mut closed = false;
            let mut blocks = 0usize;
            let mut depth = None;
            for tok in flat.split_whitespace() {
                match tok {
                    "[" if !inside && !closed && depth.is_none() => {
                        inside = true;
                        depth = Some(blocks);
                    }
                    "]" if inside => {
                        inside = false;
                        closed = true;
                    }
                    "[" | "]" => return Err(bad(format!("stage {si}: misplaced bracket"))),
                    _ => {
                        if closed || blocks == BLOCKS_PER_STAGE {
                            return Err(bad(format!("stage {si}: blocks after the last")));
                        }
                        let (k, x) = tok
                            .strip_prefix('k')
                            .and_then(|r| r.split_once('e'))
                            .and_then(|(k, x)| Some((k.parse::<u8>().ok()?, x.parse::<u8>().ok()?)))
                            .ok_or_else(|| {
                                bad(format!(
                                    "stage {si}: block {tok:?} is not k<kernel>e<expand>"
                                ))
                            })?;
                        let j = si * BLOCKS_PER_STAGE + blocks;
                        ks[j] = k;
                        e[j] = x;
                        blocks += 1;
                    }
                }
            }
            if inside {
                return Err(bad(format!("stage {si}: unclosed bracket")));
            }
            if blocks != BLOCKS_PER_STAGE {
                return Err(bad(format!("stage {si} has {blocks} blocks")));
            }
            d[si] = depth.unwrap_or(BLOCKS_PER_STAGE) as u8;
        }
        Self::new(ks, e, d).map_err(|err| bad(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_official_table() {
        // official type_dict: '2-3-3' -> 0, '3-5-4' -> 13, '4-7-6' -> 26 (plus 2)
        let mut a = Mbv3Arch {
            ks: [3; SLOTS],
            e: [3; SLOTS],
            d: [2; STAGES],
        };
        assert_eq!(a.slot_type(0), 2);
        a.d[1] = 3;
        a.ks[5] = 5;
        a.e[5] = 4;
        assert_eq!(a.slot_type(5), 2 + 13);
        a.d[4] = 4;
        a.ks[19] = 7;
        a.e[19] = 6;
        assert_eq!(a.slot_type(19), 2 + 26);
        assert_eq!(a.types().len(), NUM_VERTICES);
        assert_eq!(Mbv3Arch::from_graph(&a.to_graph()), Some(a));
    }

    #[test]
    fn text_forms_round_trip() {
        let mut rng = Rng::new(3, 0);
        for _ in 0..200 {
            let a = Mbv3Arch::random(&mut rng);
            let s = a.to_string();
            assert_eq!(s.parse::<Mbv3Arch>().unwrap(), a, "{s}");
            assert_eq!(a.to_json().to_string().parse::<Mbv3Arch>().unwrap(), a);
        }
        let a: Mbv3Arch = "k3e3 k3e6 [k7e6 k3e6] | k3e4 k3e4 k5e6 [k3e3] | k5e3 k5e4 k5e6 k7e6 | k3e3 k3e3 [k3e3 k3e3] | k7e6 k7e6 k7e6 [k7e6]".parse().unwrap();
        assert_eq!(a.d, [2, 3, 4, 2, 3]);
        assert_eq!(a.ks[2], 7);
        assert_eq!(a.e[1], 6);
        for bad in [
            "",
            "k3e3 k3e3 k3e3 k3e3",
            "k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k4e3 k3e3]",
            "k3e3 [k3e3] k3e3 k3e3 | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3]",
            "k3e3 k3e3 [k3e3 k3e3 | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3] | k3e3 k3e3 [k3e3 k3e3]",
            "{\"ks\": [3], \"e\": [3], \"d\": [2]}",
            "{\"ks\": [3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3], \"e\": [3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3], \"d\": [2,2,2,2,5]}",
        ] {
            assert!(bad.parse::<Mbv3Arch>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn graph_rules() {
        let a = Mbv3Arch::random(&mut Rng::new(1, 1));
        let g = a.to_graph();
        // a stage whose vertices disagree on the depth
        let mut t = g.types.clone();
        t[2] = if t[2] >= 11 { t[2] - 9 } else { t[2] + 9 };
        assert_eq!(
            Mbv3Arch::from_graph(&Dag {
                types: t,
                preds: g.preds.clone()
            }),
            None
        );
        // a shorter graph
        let short = Dag::new(
            g.types[..21].to_vec(),
            &(0..20).map(|v| (v, v + 1)).collect::<Vec<_>>(),
        );
        assert_eq!(Mbv3Arch::from_graph(&short), None);
        // an extra skip edge keeps a valid DAG: the same architecture (the rule ignores edges)
        let mut skip = g.clone();
        skip.preds[5] |= 1 << 2;
        assert_eq!(Mbv3Arch::from_graph(&skip), Some(a));
        // a START type in the middle
        let mut t = g.types.clone();
        t[7] = START_TYPE;
        assert_eq!(
            Mbv3Arch::from_graph(&Dag {
                types: t,
                preds: g.preds.clone()
            }),
            None
        );
    }
}
