//! The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020) as MetaD2A encodes it.
//!
//! A cell has 4 nodes and an operation on each of its 6 edges `0→1, 0→2, 1→2, 0→3, 1→3, 2→3`,
//! chosen from `none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3`: 5^6 = 15,625
//! cells. MetaD2A turns a cell into an 8-vertex graph with the operations on the vertices:
//! vertex 0 is START (type 0), vertices 1..6 are the cell edges in the order above (type =
//! 2 + operation index), vertex 7 is END (type 1), joined by one fixed set of 11 edges.
//!
//! The string form is NAS-Bench-201's: `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::graph::{Dag, END_TYPE, START_TYPE};

/// Operation names, in type order (type = 2 + index).
pub const OPS: [&str; 5] = [
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
];

/// Vertices of an NB201 graph.
pub const NUM_VERTICES: usize = 8;
/// Vertex types: START, END and the five operations.
pub const NUM_TYPES: usize = 7;
/// Number of cells in the space.
pub const NUM_ARCHS: usize = 15_625;

/// The cell edge `(from node, to node)` that graph vertex `k + 1` stands for.
pub const CELL_EDGES: [(usize, usize); 6] = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)];

/// The fixed edge set of every NB201 graph (the official loader's topology): a chain through
/// all vertices plus the data-flow links between operation vertices.
pub const GRAPH_EDGES: [(usize, usize); 11] = [
    (0, 1),
    (1, 2),
    (1, 3),
    (1, 5),
    (2, 3),
    (2, 6),
    (3, 4),
    (3, 6),
    (4, 5),
    (5, 6),
    (6, 7),
];

/// An NB201 cell: the operation index of each of the 6 cell edges, in [`CELL_EDGES`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nb201Arch {
    pub ops: [u8; 6],
}

impl Nb201Arch {
    /// The cell with enumeration code `code` in `0..15625` (base 5, first edge most
    /// significant). This is the engine's own order, not NAS-Bench-201's benchmark index.
    pub fn from_code(code: usize) -> Option<Self> {
        if code >= NUM_ARCHS {
            return None;
        }
        let mut ops = [0u8; 6];
        let mut c = code;
        for k in (0..6).rev() {
            ops[k] = (c % 5) as u8;
            c /= 5;
        }
        Some(Nb201Arch { ops })
    }

    /// The enumeration code of this cell (inverse of [`from_code`](Self::from_code)).
    pub fn code(&self) -> usize {
        self.ops.iter().fold(0, |c, &o| c * 5 + o as usize)
    }

    /// All 15,625 cells in code order.
    pub fn all() -> impl Iterator<Item = Nb201Arch> {
        (0..NUM_ARCHS).map(|c| Nb201Arch::from_code(c).expect("code in range"))
    }

    /// The 8-vertex graph with the fixed topology.
    pub fn to_graph(&self) -> Dag {
        let mut types = Vec::with_capacity(NUM_VERTICES);
        types.push(START_TYPE);
        types.extend(self.ops.iter().map(|&o| o + 2));
        types.push(END_TYPE);
        Dag::new(types, &GRAPH_EDGES)
    }

    /// The cell a generated graph stands for, under the official rules: a valid computation DAG
    /// (see [`Dag::is_valid_dag`]) with exactly 8 vertices and no START or END type among
    /// vertices 1..6. Only the vertex types matter; the generated edges are not otherwise
    /// checked, as in the official code.
    pub fn from_graph(g: &Dag) -> Option<Self> {
        if g.len() != NUM_VERTICES || !g.is_valid_dag() {
            return None;
        }
        let mut ops = [0u8; 6];
        for (op, &t) in ops.iter_mut().zip(&g.types[1..7]) {
            if t < 2 || t as usize >= NUM_TYPES {
                return None;
            }
            *op = t - 2;
        }
        Some(Nb201Arch { ops })
    }

    /// Operation name on each cell edge.
    pub fn op_names(&self) -> [&'static str; 6] {
        self.ops.map(|o| OPS[o as usize])
    }
}

impl fmt::Display for Nb201Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.op_names();
        write!(
            f,
            "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|",
            n[0], n[1], n[2], n[3], n[4], n[5]
        )
    }
}

impl FromStr for Nb201Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::invalid(format!(
                "`{s}` is not an NB201 cell string ({why}); expected the form |op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op in {}",
                OPS.join(", ")
            ))
        };
        let nodes: Vec<&str> = s.trim().split('+').collect();
        if nodes.len() != 3 {
            return Err(bad(format!("{} node groups instead of 3", nodes.len())));
        }
        let mut ops = [0u8; 6];
        let mut k = 0;
        for (i, node) in nodes.iter().enumerate() {
            let inner = node
                .strip_prefix('|')
                .and_then(|x| x.strip_suffix('|'))
                .ok_or_else(|| bad(format!("group {} is not enclosed in |...|", i + 1)))?;
            let entries: Vec<&str> = inner.split('|').collect();
            if entries.len() != i + 1 {
                return Err(bad(format!(
                    "node {} has {} inputs instead of {}",
                    i + 1,
                    entries.len(),
                    i + 1
                )));
            }
            for (j, e) in entries.iter().enumerate() {
                let (op, from) = e
                    .split_once('~')
                    .ok_or_else(|| bad(format!("`{e}` lacks ~input")))?;
                if from != j.to_string() {
                    return Err(bad(format!("`{e}` should come from node {j}")));
                }
                let o = OPS
                    .iter()
                    .position(|&x| x == op)
                    .ok_or_else(|| bad(format!("unknown operation `{op}`")))?;
                ops[k] = o as u8;
                k += 1;
            }
        }
        Ok(Nb201Arch { ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_round_trip_and_official_example() {
        let s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|";
        let a: Nb201Arch = s.parse().unwrap();
        assert_eq!(a.to_graph().types, vec![0, 5, 5, 5, 3, 5, 5, 1]);
        assert_eq!(a.to_string(), s);
        assert_eq!(Nb201Arch::from_graph(&a.to_graph()), Some(a));
    }

    #[test]
    fn enumeration_is_a_bijection() {
        let all: Vec<Nb201Arch> = Nb201Arch::all().collect();
        assert_eq!(all.len(), NUM_ARCHS);
        let mut strings: Vec<String> = all.iter().map(|a| a.to_string()).collect();
        strings.sort();
        strings.dedup();
        assert_eq!(strings.len(), NUM_ARCHS);
        for a in all.iter().step_by(97) {
            assert_eq!(Nb201Arch::from_code(a.code()), Some(*a));
            assert_eq!(a.to_string().parse::<Nb201Arch>().unwrap(), *a);
        }
        assert_eq!(Nb201Arch::from_code(NUM_ARCHS), None);
    }

    #[test]
    fn fixed_topology_is_a_valid_dag() {
        let g = Nb201Arch::from_code(1234).unwrap().to_graph();
        assert!(g.is_valid_dag());
        assert_eq!(g.edges().len(), 11);
        assert_eq!(g.predecessors(6), vec![2, 3, 5]);
    }

    #[test]
    fn validity_rules_of_generated_graphs() {
        let good = Nb201Arch::from_code(77).unwrap().to_graph();
        // START type inside the cell
        let mut g = good.clone();
        g.types[3] = START_TYPE;
        assert_eq!(Nb201Arch::from_graph(&g), None);
        // END type inside the cell
        let mut g = good.clone();
        g.types[2] = END_TYPE;
        assert_eq!(Nb201Arch::from_graph(&g), None);
        // too short
        let short = Dag::new(vec![0, 3, 1], &[(0, 1), (1, 2)]);
        assert_eq!(Nb201Arch::from_graph(&short), None);
        // other edges are fine as long as the DAG is valid: a plain chain
        let chain = Dag::new(
            good.types.clone(),
            &(0..7).map(|i| (i, i + 1)).collect::<Vec<_>>(),
        );
        assert!(Nb201Arch::from_graph(&chain).is_some());
        // a vertex without an output
        let loose = Dag::new(
            good.types.clone(),
            &[(0, 1), (1, 2), (0, 3), (3, 4), (4, 5), (5, 6), (6, 7)],
        );
        assert_eq!(Nb201Arch::from_graph(&loose), None);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        for (s, needle) in [
            (
                "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                "unknown operation",
            ),
            ("|none~0|+|none~0|none~1|", "2 node groups"),
            (
                "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
                "from node 0",
            ),
            (
                "|none~0|+|none~0|+|none~0|none~1|none~2|",
                "1 inputs instead of 2",
            ),
        ] {
            let e = s.parse::<Nb201Arch>().unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }
}
