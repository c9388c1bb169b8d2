//! Rank and linear correlations for evaluating predictors and proxies.

/// Mean and sample standard deviation (divisor `n - 1`, or 1 for a single value; NaN for no
/// values).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

/// Pearson correlation (NaN when a side is constant or there are fewer than two points).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return f64::NAN;
    }
    let (ma, mb) = (
        a[..n].iter().sum::<f64>() / n as f64,
        b[..n].iter().sum::<f64>() / n as f64,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (a[i] - ma, b[i] - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

/// Ranks starting at 1, ties given their average rank.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson of the average ranks).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// Kendall's tau-b (accounts for ties).
pub fn kendall(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (mut conc, mut disc, mut ta, mut tb) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let (da, db) = (a[i] - a[j], b[i] - b[j]);
            if da == 0.0 && db == 0.0 {
                continue;
            } else if da == 0.0 {
                ta += 1;
            } else if db == 0.0 {
                tb += 1;
            } else if (da > 0.0) == (db > 0.0) {
                conc += 1;
            } else {
                disc += 1;
            }
        }
    }
    let (c, d) = (conc as f64, disc as f64);
    (c - d) / ((c + d + ta as f64) * (c + d + tb as f64)).sqrt()
}

/// Fraction of the top `frac` items by `truth` that are also in the top `frac` by `pred`.
pub fn top_overlap(truth: &[f64], pred: &[f64], frac: f64) -> f64 {
    let n = truth.len().min(pred.len());
    let k = ((n as f64 * frac).round() as usize).max(1);
    let top = |v: &[f64]| {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&i, &j| v[j].total_cmp(&v[i]));
        idx.truncate(k);
        idx
    };
    let (t, p) = (top(truth), top(pred));
    t.iter().filter(|i| p.contains(i)).count() as f64 / k as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_spread() {
        // [2, 4, 4, 4, 5, 5, 7, 9]: mean 5, squared deviations sum to 32, 32 / 7
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[3.0]), (3.0, 0.0));
        assert!(mean_std(&[]).0.is_nan());
    }

    #[test]
    fn known_values() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [2.0, 4.0, 6.0, 8.0, 11.0];
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-12);
        assert!((kendall(&a, &b) - 1.0).abs() < 1e-12);
        let c = [5.0, 4.0, 3.0, 2.0, 1.0];
        assert!((spearman(&a, &c) + 1.0).abs() < 1e-12);
        // one swapped pair of 5: Kendall (9 - 1) / 10
        let d = [1.0, 3.0, 2.0, 4.0, 5.0];
        assert!((kendall(&a, &d) - 0.8).abs() < 1e-12);
        // Spearman 1 - 6*2/(5*24) = 0.9
        assert!((spearman(&a, &d) - 0.9).abs() < 1e-12);
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
        assert!((pearson(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]) - 0.9819805060619657).abs() < 1e-12);
        assert_eq!(top_overlap(&a, &b, 0.4), 1.0);
        assert_eq!(top_overlap(&a, &c, 0.4), 0.0);
    }
}
