//! NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): a
//! training-free score. For a minibatch, each image's binary code marks which ReLU units are
//! active; `K[i][j] = N_A − hamming(c_i, c_j)` counts the units on which images `i` and `j`
//! agree; the score is `log |det K|` (higher is better), taken at initialisation.

use super::cell_net::{CellNet, NetConfig};
use super::cell_train::ImageSet;
use crate::space::Nb201Arch;

/// `log |det K|` of the codes' agreement kernel (−∞ when `K` is singular).
pub fn score_from_codes(codes: &[Vec<bool>]) -> f64 {
    let n = codes.len();
    let mut k = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let agree = codes[i]
                .iter()
                .zip(&codes[j])
                .filter(|(a, b)| a == b)
                .count();
            let v = agree as f64;
            k[i * n + j] = v;
            k[j * n + i] = v;
        }
    }
    log_abs_det(&mut k, n)
}

/// `log |det A|` by LU decomposition with partial pivoting (A is overwritten).
pub fn log_abs_det(a: &mut [f64], n: usize) -> f64 {
    let mut total = 0.0;
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap_or(col);
        let p = a[piv * n + col];
        if p == 0.0 {
            return f64::NEG_INFINITY;
        }
        if piv != col {
            for c in 0..n {
                a.swap(piv * n + c, col * n + c);
            }
        }
        total += p.abs().ln();
        for r in col + 1..n {
            let f = a[r * n + col] / p;
            if f != 0.0 {
                for c in col..n {
                    a[r * n + c] -= f * a[col * n + c];
                }
            }
        }
    }
    total
}

/// The NASWOT score of `arch` on the first `batch` images of `images`, with the network
/// initialised from `seed`.
pub fn score(arch: &Nb201Arch, net: NetConfig, images: &ImageSet, batch: usize, seed: u64) -> f64 {
    let n = batch.min(images.len());
    let r = images.resolution;
    let mut model = CellNet::new(arch, net, seed);
    let codes = model.relu_codes(&images.data[..n * r * r * 3], n, r, r);
    score_from_codes(&codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_kernels() {
        // codes 10 and 01 agree nowhere: K = [[2, 0], [0, 2]], det 4
        let c = vec![vec![true, false], vec![false, true]];
        assert!((score_from_codes(&c) - 4f64.ln()).abs() < 1e-12);
        // codes 11 and 10 agree on one unit: K = [[2, 1], [1, 2]], det 3
        let c = vec![vec![true, true], vec![true, false]];
        assert!((score_from_codes(&c) - 3f64.ln()).abs() < 1e-12);
        // identical codes: K singular
        let c = vec![vec![true, false, true], vec![true, false, true]];
        assert_eq!(score_from_codes(&c), f64::NEG_INFINITY);
        // three codes of three units: K = [[3,1,1],[1,3,1],[1,1,3]], det 20
        let c = vec![
            vec![true, false, false],
            vec![false, true, false],
            vec![false, false, true],
        ];
        assert!((score_from_codes(&c) - 20f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn lu_log_det_with_pivoting() {
        // [[0, 2], [3, 1]] has det -6
        let mut a = vec![0.0, 2.0, 3.0, 1.0];
        assert!((log_abs_det(&mut a, 2) - 6f64.ln()).abs() < 1e-12);
    }
}
