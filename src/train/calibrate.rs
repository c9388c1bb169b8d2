//! Calibration of the cheap training protocol that labels the meta-database: train NB201 cells
//! spread over the benchmark's accuracy range on CIFAR-10 with the protocol, and measure how well
//! the proxy accuracy ranks them against NAS-Bench-201's 200-epoch CIFAR-10 test accuracy.
//!
//! Results are appended one JSON line per cell, so a run that stops resumes where it stopped.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cell_train::{train_cell, ImageSet, TrainConfig};
use crate::error::{Error, Result};
use crate::space::nb201_table::Nb201Table;
use crate::space::Nb201Arch;

/// One calibrated cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellResult {
    pub arch: String,
    pub nb201_index: usize,
    /// NAS-Bench-201 CIFAR-10 test accuracy (200 epochs, seed average), %.
    pub nb201_cifar10: f64,
    /// Accuracy of the proxy protocol on held-out CIFAR-10 images, %.
    pub proxy_acc: f64,
    pub proxy_train_acc: f64,
    pub seconds: f64,
    /// NASWOT score at initialisation, when computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naswot: Option<f64>,
    /// Mean training loss of each epoch (absent in results written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_losses: Option<Vec<f64>>,
    /// The protocol, for the record.
    pub protocol: TrainConfig,
    pub train_per_class: usize,
    pub resolution: usize,
}

/// `n` cells evenly spread over the table's CIFAR-10 accuracy range (quantiles
/// `(i + ½)/n` of the sorted accuracies).
pub fn spread_cells(table: &Nb201Table, n: usize) -> Vec<(Nb201Arch, usize, f64)> {
    let mut all: Vec<(Nb201Arch, usize, f64)> = table
        .entries()
        .into_values()
        .map(|(a, e)| (a, e.index, e.cifar10))
        .collect();
    all.sort_by(|x, y| x.2.total_cmp(&y.2).then(x.1.cmp(&y.1)));
    (0..n)
        .map(|i| all[(((i as f64 + 0.5) / n as f64) * all.len() as f64) as usize])
        .collect()
}

/// Reads the results already in `path` (none if it does not exist).
pub fn read_results(path: &Path) -> Result<Vec<CellResult>> {
    super::read_appended(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::invalid(format!("{}: line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Trains each cell not yet in `out` and appends its result; `log` receives one line per cell.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cells: &[(Nb201Arch, usize, f64)],
    train: &ImageSet,
    valid: &ImageSet,
    cfg: &TrainConfig,
    train_per_class: usize,
    naswot: Option<(usize, &ImageSet)>,
    out: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<CellResult>> {
    let mut done = read_results(out)?;
    for (i, (arch, index, acc)) in cells.iter().enumerate() {
        let s = arch.to_string();
        if done.iter().any(|r| r.arch == s) {
            continue;
        }
        let rep = train_cell(arch, train, valid, cfg)?;
        let nw =
            naswot.map(|(batch, imgs)| super::naswot::score(arch, cfg.net, imgs, batch, cfg.seed));
        let r = CellResult {
            arch: s,
            nb201_index: *index,
            nb201_cifar10: *acc,
            proxy_acc: rep.valid_acc,
            proxy_train_acc: rep.train_acc,
            seconds: rep.seconds,
            naswot: nw,
            epoch_losses: Some(rep.epoch_losses.clone()),
            protocol: cfg.clone(),
            train_per_class,
            resolution: train.resolution,
        };
        super::append_json_line(out, &r)?;
        log(&format!(
            "[{}/{}] {} NB201 {:.2}% proxy {:.2}% in {:.1} s",
            i + 1,
            cells.len(),
            r.arch,
            r.nb201_cifar10,
            r.proxy_acc,
            r.seconds
        ));
        done.push(r);
    }
    Ok(done)
}

/// Agreement of a proxy with the benchmark over calibrated cells.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub cells: usize,
    pub spearman: f64,
    pub kendall: f64,
    /// Share of the benchmark's top 10% (of these cells) that the proxy also puts in its top 10%.
    pub top10_overlap: f64,
    pub median_seconds: f64,
    pub naswot_spearman: Option<f64>,
    /// The same agreement for the proxy's final training accuracy (which ranks better under
    /// short protocols; docs/calibration.md).
    pub train_spearman: f64,
    pub train_kendall: f64,
    pub train_top10_overlap: f64,
    /// Training-speed estimates, when every cell recorded its epoch losses: minus the sum of
    /// the mean training losses over all epochs (SoTL) and over the last epoch alone (SoTL-E,
    /// E = 1).
    pub sotl_spearman: Option<f64>,
    pub sotl_last_spearman: Option<f64>,
    /// The free rankers on the same cells: parameters and multiply-adds of NAS-Bench-201's
    /// network (C16, N5, 32 px).
    pub params_spearman: f64,
    pub flops_spearman: f64,
}

pub fn summarize(results: &[CellResult]) -> Summary {
    let truth: Vec<f64> = results.iter().map(|r| r.nb201_cifar10).collect();
    let proxy: Vec<f64> = results.iter().map(|r| r.proxy_acc).collect();
    let train: Vec<f64> = results.iter().map(|r| r.proxy_train_acc).collect();
    let mut secs: Vec<f64> = results.iter().map(|r| r.seconds).collect();
    secs.sort_by(f64::total_cmp);
    let naswot: Vec<f64> = results.iter().filter_map(|r| r.naswot).collect();
    let naswot_spearman = (naswot.len() == results.len() && !naswot.is_empty()).then(|| {
        // −∞ scores (singular kernels) rank lowest
        let v: Vec<f64> = naswot
            .iter()
            .map(|&x| if x.is_finite() { x } else { -1e300 })
            .collect();
        crate::stats::spearman(&truth, &v)
    });
    Summary {
        cells: results.len(),
        spearman: crate::stats::spearman(&truth, &proxy),
        kendall: crate::stats::kendall(&truth, &proxy),
        top10_overlap: crate::stats::top_overlap(&truth, &proxy, 0.1),
        median_seconds: secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN),
        naswot_spearman,
        train_spearman: crate::stats::spearman(&truth, &train),
        train_kendall: crate::stats::kendall(&truth, &train),
        train_top10_overlap: crate::stats::top_overlap(&truth, &train, 0.1),
        sotl_spearman: loss_score(results, usize::MAX).map(|v| crate::stats::spearman(&truth, &v)),
        sotl_last_spearman: loss_score(results, 1).map(|v| crate::stats::spearman(&truth, &v)),
        params_spearman: crate::stats::spearman(&truth, &cost(results, |c| c.params)),
        flops_spearman: crate::stats::spearman(&truth, &cost(results, |c| c.flops)),
    }
}

/// Minus the sum of each cell's last `last` epoch losses (higher is better), when every cell
/// recorded them.
fn loss_score(results: &[CellResult], last: usize) -> Option<Vec<f64>> {
    results
        .iter()
        .map(|r| {
            let l = r.epoch_losses.as_ref().filter(|l| !l.is_empty())?;
            Some(-l[l.len().saturating_sub(last)..].iter().sum::<f64>())
        })
        .collect()
}

fn cost(results: &[CellResult], f: impl Fn(crate::space::Cost) -> u64) -> Vec<f64> {
    let net = crate::space::Nb201Net::default();
    results
        .iter()
        .map(|r| {
            r.arch
                .parse::<Nb201Arch>()
                .map_or(f64::NAN, |a| f(a.cost(&net)) as f64)
        })
        .collect()
}

/// A scatter plot (SVG) of benchmark accuracy against proxy accuracy.
pub fn scatter_svg(results: &[CellResult], title: &str) -> String {
    let y1 = results.iter().map(|r| r.proxy_acc).fold(10.0f64, f64::max);
    let mut p = super::svg::Plot::new(
        640.0,
        480.0,
        (0.0, 100.0),
        (0.0, (y1 / 10.0).ceil() * 10.0),
        title,
    );
    let ticks: Vec<(f64, String)> = (0..=10)
        .map(|i| (i as f64 * 10.0, format!("{}", i * 10)))
        .collect();
    p.x_ticks(&ticks, "NAS-Bench-201 CIFAR-10 test accuracy (%)");
    p.y_ticks(5, 0, "proxy accuracy (%)");
    for r in results {
        p.circle(r.nb201_cifar10, r.proxy_acc, 3.0, "#1f77b4");
    }
    p.finish()
}
