//! Architectures as the models see them: small DAGs whose vertices carry a type and whose
//! vertices are numbered in a topological order (vertex 0 is the START/input vertex).

use std::fmt;

/// Vertex type of the input vertex in every search space.
pub const START_TYPE: u8 = 0;
/// Vertex type of the output vertex in every search space.
pub const END_TYPE: u8 = 1;

/// Most vertices a graph may have (predecessor sets are 64-bit masks).
pub const MAX_VERTICES: usize = 64;

/// A DAG with typed vertices. `preds[v]` is the bit set of `v`'s predecessors.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Dag {
    pub types: Vec<u8>,
    pub preds: Vec<u64>,
}

impl Dag {
    /// A graph with the given vertex types and directed edges `(from, to)`.
    ///
    /// # Panics
    /// If a vertex index is out of range or there are more than [`MAX_VERTICES`] vertices.
    pub fn new(types: Vec<u8>, edges: &[(usize, usize)]) -> Self {
        assert!(types.len() <= MAX_VERTICES, "too many vertices");
        let mut preds = vec![0u64; types.len()];
        for &(u, v) in edges {
            assert!(
                u < types.len() && v < types.len(),
                "edge ({u},{v}) out of range"
            );
            preds[v] |= 1 << u;
        }
        Dag { types, preds }
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    pub fn has_edge(&self, u: usize, v: usize) -> bool {
        self.preds[v] >> u & 1 == 1
    }

    /// Predecessors of `v` in increasing order.
    pub fn predecessors(&self, v: usize) -> Vec<usize> {
        (0..self.len()).filter(|&u| self.has_edge(u, v)).collect()
    }

    /// Successors of `v` in increasing order.
    pub fn successors(&self, v: usize) -> Vec<usize> {
        (0..self.len()).filter(|&w| self.has_edge(v, w)).collect()
    }

    /// Bit set of the successors of `v`.
    pub fn successor_mask(&self, v: usize) -> u64 {
        let mut m = 0;
        for (w, &p) in self.preds.iter().enumerate() {
            if p >> v & 1 == 1 {
                m |= 1 << w;
            }
        }
        m
    }

    /// All edges `(from, to)`, ordered by target then source.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut e = Vec::new();
        for v in 0..self.len() {
            for u in self.predecessors(v) {
                e.push((u, v));
            }
        }
        e
    }

    /// Adjacency matrix, row = source, column = target.
    pub fn adjacency(&self) -> Vec<Vec<u8>> {
        let n = self.len();
        let mut a = vec![vec![0u8; n]; n];
        for (u, v) in self.edges() {
            a[u][v] = 1;
        }
        a
    }

    /// True when the edges admit a topological order.
    pub fn is_acyclic(&self) -> bool {
        // Kahn's rule on bit sets: remove, pass by pass, every vertex whose predecessors are
        // all removed; the edges admit an order when every vertex goes. (A predecessor bit
        // naming no vertex is never removed: such a graph has no order, as with counting.)
        let n = self.len();
        let mut removed = 0u64;
        let mut left = n;
        loop {
            let before = left;
            for (v, &p) in self.preds.iter().enumerate() {
                if removed >> v & 1 == 0 && p & !removed == 0 {
                    removed |= 1 << v;
                    left -= 1;
                }
            }
            if left == 0 {
                return true;
            }
            if left == before {
                return false;
            }
        }
    }

    /// The official validity rule for a computation DAG: acyclic, exactly one START and one END
    /// vertex, every non-START vertex has an input and every non-END vertex an output.
    pub fn is_valid_dag(&self) -> bool {
        let n = self.len();
        // Bit u: vertex u has a successor.
        let has_succ = self.preds.iter().fold(0u64, |a, &p| a | p);
        let (mut starts, mut ends) = (0, 0);
        for v in 0..n {
            let t = self.types[v];
            if t == START_TYPE {
                starts += 1;
            } else if t == END_TYPE {
                ends += 1;
            }
            if self.preds[v] == 0 && t != START_TYPE {
                return false;
            }
            if has_succ >> v & 1 == 0 && t != END_TYPE {
                return false;
            }
        }
        starts == 1 && ends == 1 && self.is_acyclic()
    }
}

impl fmt::Debug for Dag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dag{{types: {:?}, edges: {:?}}}",
            self.types,
            self.edges()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_rules() {
        let chain = Dag::new(vec![0, 3, 1], &[(0, 1), (1, 2)]);
        assert!(chain.is_valid_dag());
        // a vertex without input
        assert!(!Dag::new(vec![0, 3, 1], &[(0, 2), (1, 2)]).is_valid_dag());
        // a loose end
        assert!(!Dag::new(vec![0, 3, 1], &[(0, 1), (0, 2)]).is_valid_dag());
        // two START vertices
        assert!(!Dag::new(vec![0, 0, 1], &[(0, 1), (1, 2)]).is_valid_dag());
        // a cycle
        let cyc = Dag::new(vec![0, 3, 4, 1], &[(0, 1), (1, 2), (2, 1), (2, 3)]);
        assert!(!cyc.is_acyclic() && !cyc.is_valid_dag());
        assert_eq!(chain.successors(0), vec![1]);
        assert_eq!(chain.adjacency()[1][2], 1);
    }

    /// Kahn's algorithm with in-degree counts and successor lists, and the validity rule
    /// spelled out vertex by vertex: the reference for the bit-set versions.
    fn reference(g: &Dag) -> (bool, bool) {
        let n = g.len();
        let succ: Vec<Vec<usize>> = (0..n).map(|u| g.successors(u)).collect();
        let mut indeg: Vec<usize> = (0..n).map(|v| g.predecessors(v).len()).collect();
        let mut ready: Vec<usize> = (0..n).filter(|&v| indeg[v] == 0).collect();
        let mut seen = 0;
        while let Some(u) = ready.pop() {
            seen += 1;
            for &w in &succ[u] {
                indeg[w] -= 1;
                if indeg[w] == 0 {
                    ready.push(w);
                }
            }
        }
        let acyclic = seen == n;
        let count = |t: u8| g.types.iter().filter(|&&x| x == t).count();
        let valid = acyclic
            && count(START_TYPE) == 1
            && count(END_TYPE) == 1
            && (0..n).all(|v| g.types[v] == START_TYPE || !g.predecessors(v).is_empty())
            && (0..n).all(|v| g.types[v] == END_TYPE || !succ[v].is_empty());
        (acyclic, valid)
    }

    #[test]
    fn bit_set_checks_agree_with_the_reference_on_random_graphs() {
        let mut rng = crate::rng::Rng::new(11, 0);
        let (mut cyclic, mut valid) = (0, 0);
        for case in 0..20_000 {
            let n = 1 + case % 9;
            let types: Vec<u8> = (0..n)
                .map(|v| match (v, rng.next_f64()) {
                    (0, x) if x < 0.9 => START_TYPE,
                    (v, x) if v == n - 1 && x < 0.9 => END_TYPE,
                    (_, x) => (x * 5.0) as u8,
                })
                .collect();
            // Mostly forward edges (as decoded graphs have), some backward ones and loops.
            let mut edges = Vec::new();
            for u in 0..n {
                for v in 0..n {
                    let p = if u < v { 0.4 } else { 0.03 };
                    if rng.next_f64() < p {
                        edges.push((u, v));
                    }
                }
            }
            let g = Dag::new(types, &edges);
            let (a, v) = reference(&g);
            assert_eq!((g.is_acyclic(), g.is_valid_dag()), (a, v), "{g:?}");
            cyclic += usize::from(!a);
            valid += usize::from(v);
        }
        assert!(
            cyclic > 1000 && valid > 500,
            "cyclic {cyclic}, valid {valid}"
        );
    }
}
