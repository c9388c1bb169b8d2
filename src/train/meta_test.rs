//! The meta-test on a held-out labelled image set with NAS-Bench-201 ground truth (CIFAR-10):
//! for each seed, draw a few test images per class, search with the engine, and compare the
//! benchmark accuracy of what it picks with random search and NASWOT at the same seed.
//!
//! Per seed: our top-1 and the best of our top-30 (the official MetaD2A protocol), the best of
//! 30 random cells, the NASWOT pick among 10 and among 100 random cells (scored on the same
//! images), the predictor's Spearman correlation with the benchmark over every cell, and the
//! search's wall-clock time.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::cell_net::NetConfig;
use super::cell_train::{ImageSet, CIFAR_MEAN, CIFAR_STD};
use super::naswot;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::features::{FeatureExtractor, LabelledImages};
use crate::rng::Rng;
use crate::search::{Engine, SearchConfig};
use crate::space::nb201::NUM_ARCHS;
use crate::space::nb201_table::Nb201Table;
use crate::space::Nb201Arch;
use crate::stats::mean_std;

/// What the meta-test does.
#[derive(Clone, Debug, Serialize)]
pub struct MetaTestConfig {
    pub seeds: Vec<u64>,
    /// Test images drawn per class for each seed.
    pub per_class: usize,
    /// Candidates the search generates and ranks.
    pub num_archs: usize,
    /// Size of the shortlist whose best cell is reported (official: 30).
    pub top: usize,
    /// Random-search sample size.
    pub random: usize,
    /// NASWOT sample sizes (each a prefix of one random draw of the largest).
    pub naswot: Vec<usize>,
    pub naswot_net: NetConfig,
    pub naswot_batch: usize,
    pub naswot_resolution: usize,
    /// NASWOT scores do not depend on the weights under test: a JSON-lines file that keeps
    /// them, keyed by everything they do depend on (seed, network, batch, the exact input
    /// pixels), lets a rerun with new weights skip the slow baseline.
    #[serde(skip)]
    pub naswot_cache: Option<std::path::PathBuf>,
}

impl Default for MetaTestConfig {
    fn default() -> Self {
        MetaTestConfig {
            seeds: (0..10).collect(),
            per_class: 20,
            num_archs: crate::search::DEFAULT_NUM_ARCHS,
            top: 30,
            random: 30,
            naswot: vec![10, 100],
            naswot_net: NetConfig {
                channels: 16,
                cells: 5,
                classes: 10,
            },
            naswot_batch: 128,
            naswot_resolution: 32,
            naswot_cache: None,
        }
    }
}

/// A method's pick at one seed.
#[derive(Clone, Debug, Serialize)]
pub struct Pick {
    pub method: String,
    pub arch: String,
    /// NAS-Bench-201 test accuracy of the pick (for shortlists: of its best member), %.
    pub acc: f64,
}

/// One seed's results.
#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub picks: Vec<Pick>,
    /// Spearman correlation of the predictor's scores with the benchmark over every cell.
    pub predictor_spearman: f64,
    /// The search alone (generation and ranking), milliseconds.
    pub search_ms: f64,
    /// Test images drawn (classes × per-class).
    pub images: usize,
    /// Unique candidates the search ranked.
    pub candidates: usize,
    /// Benchmark accuracy of the best of all ranked candidates: what a perfect predictor would
    /// pick from what the generator proposed (separates the generator from the ranking).
    pub generated_best: f64,
    /// Seconds spent on the NASWOT baseline (all sample sizes).
    pub naswot_seconds: f64,
    /// The search's data fit (weights with a gated cell mix only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_fit: Option<crate::search::DataFit>,
}

/// Mean and spread of one method over the seeds.
#[derive(Clone, Debug, Serialize)]
pub struct MethodSummary {
    pub method: String,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Seeds at which our best-of-top shortlist is at least as good as this method's pick.
    pub ours_at_least_as_good: usize,
    /// Seeds at which our top-1 is at least as good as this method's pick.
    #[serde(default)]
    pub ours_top1_at_least_as_good: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub seeds: usize,
    pub methods: Vec<MethodSummary>,
    pub predictor_spearman_mean: f64,
    pub predictor_spearman_std: f64,
    pub search_ms_median: f64,
    /// Mean over seeds of [`SeedResult::generated_best`].
    pub generated_best_mean: f64,
    /// Mean over seeds of the data fit's novelty and gate (weights with a gated cell mix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_fit_mean: Option<(f64, f64)>,
    /// The benchmark's best accuracy, for reference.
    pub optimum: f64,
    /// Spearman over every cell of the cheap rankers (FLOPs, params, the source benchmark)
    /// with the ground truth.
    pub ranker_spearman: Vec<(String, f64)>,
}

/// The benchmark column used as ground truth.
fn truth(table: &Nb201Table) -> Result<Vec<f64>> {
    table.column(|e| e.cifar10)
}

/// Runs the meta-test; `log` receives one line per seed.
pub fn run(
    engine: &Engine,
    fx: &FeatureExtractor,
    test: &LabelledImages,
    table: &Nb201Table,
    cfg: &MetaTestConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<SeedResult>> {
    let acc = truth(table)?;
    let members = class_members(test, cfg.per_class)?;
    let mut naswot_cached = match &cfg.naswot_cache {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            read_naswot_cache(path)?
        }
        None => HashMap::new(),
    };
    // the cheap baselines do not depend on the seed
    let cheap = cheap_picks(table, cfg.top)?;
    let mut out = Vec::new();
    for &seed in &cfg.seeds {
        // one stream per seed, drawn in this order: images, random cells, NASWOT's sample
        let mut rng = Rng::new(seed, 0x7e57);
        let (images, labels) = seed_images(test, &members, cfg.per_class, &mut rng);
        let data = Dataset::new(
            fx.extract(&images, &mut |_, _| {}),
            crate::features::FEATURE_DIM,
            labels.clone(),
            Some(test.class_names.clone()),
        )?;
        let ours = search_picks(engine, &data, seed, &acc, cfg, log)?;
        let mut picks = ours.picks;
        picks.extend(cheap.iter().cloned());
        let random = random_cells(&mut rng, cfg.random);
        let (arch, a) = best_of(&acc, &random);
        picks.push(Pick {
            method: format!("random-{}", cfg.random),
            arch,
            acc: a,
        });
        let t0 = std::time::Instant::now();
        let naswot = NaswotRun {
            seed,
            images: &images,
            labels: &labels,
            classes: test.class_names.len(),
            cfg,
        };
        picks.extend(naswot.picks(&mut rng, &acc, &mut naswot_cached, log)?);
        let r = SeedResult {
            seed,
            picks,
            predictor_spearman: ours.predictor_spearman,
            search_ms: ours.search_ms,
            images: images.len(),
            candidates: ours.ranked.len(),
            generated_best: best_of(&acc, &ours.ranked).1,
            naswot_seconds: t0.elapsed().as_secs_f64(),
            data_fit: ours.data_fit,
        };
        log(&format!(
            "seed {seed}: {}; best of all {} candidates {:.2}; predictor Spearman {:.3}; search {:.0} ms",
            r.picks
                .iter()
                .map(|p| format!("{} {:.2}", p.method, p.acc))
                .collect::<Vec<_>>()
                .join(", "),
            r.candidates,
            r.generated_best,
            r.predictor_spearman,
            r.search_ms
        ));
        out.push(r);
    }
    Ok(out)
}

/// The test images of each class, refused when a class has fewer than `per_class`.
fn class_members(test: &LabelledImages, per_class: usize) -> Result<Vec<Vec<usize>>> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); test.class_names.len()];
    for (i, &l) in test.labels.iter().enumerate() {
        members[l as usize].push(i);
    }
    if let Some(c) = members.iter().position(|m| m.len() < per_class) {
        return Err(Error::invalid(format!(
            "class {} has {} test images, fewer than --per-class {}",
            test.class_names[c],
            members[c].len(),
            per_class
        )));
    }
    Ok(members)
}

/// A seed's images and labels: `per_class` of each class, drawn without replacement.
fn seed_images(
    test: &LabelledImages,
    members: &[Vec<usize>],
    per_class: usize,
    rng: &mut Rng,
) -> (Vec<crate::features::Image>, Vec<u32>) {
    let (mut scratch, mut pick) = (Vec::new(), Vec::new());
    let mut chosen = Vec::with_capacity(members.len() * per_class);
    for m in members {
        rng.sample_without_replacement(m.len(), per_class, &mut scratch, &mut pick);
        chosen.extend(pick.iter().map(|&k| m[k as usize]));
    }
    (
        chosen.iter().map(|&i| test.images[i].clone()).collect(),
        chosen.iter().map(|&i| test.labels[i]).collect(),
    )
}

/// The best of `archs` by the benchmark: its string and accuracy.
fn best_of(acc: &[f64], archs: &[Nb201Arch]) -> (String, f64) {
    archs.iter().map(|a| (a.to_string(), acc[a.code()])).fold(
        (String::new(), f64::NEG_INFINITY),
        |b, x| if x.1 > b.1 { x } else { b },
    )
}

/// What our search gives for one seed.
struct SearchPicks {
    /// Our top-1 and the best of our top `cfg.top`.
    picks: Vec<Pick>,
    /// Every candidate, best first.
    ranked: Vec<Nb201Arch>,
    /// The predictor's Spearman with the benchmark over every cell.
    predictor_spearman: f64,
    search_ms: f64,
    data_fit: Option<crate::search::DataFit>,
}

fn search_picks(
    engine: &Engine,
    data: &Dataset,
    seed: u64,
    acc: &[f64],
    cfg: &MetaTestConfig,
    log: &mut dyn FnMut(&str),
) -> Result<SearchPicks> {
    let scfg = SearchConfig {
        seed,
        num_archs: cfg.num_archs,
        top_k: cfg.num_archs, // every candidate, in rank order
        ..SearchConfig::default()
    };
    let report = engine.search(data, &scfg)?;
    log(&format!(
        "seed {seed}: searched {} candidates ({} decoded) in {:.1} ms (sets {:.1}, decode {:.1}, rank {:.1})",
        report.counts.ranked,
        report.counts.decoded,
        report.timings.total_ms,
        report.timings.sets_ms,
        report.timings.decode_ms,
        report.timings.rank_ms
    ));
    let ranked: Vec<Nb201Arch> = report
        .candidates
        .iter()
        .map(|c| {
            c.arch
                .as_nb201()
                .copied()
                .ok_or_else(|| Error::invalid("meta-test needs NB201 weights"))
        })
        .collect::<Result<_>>()?;
    let first = ranked
        .first()
        .ok_or_else(|| Error::invalid("the search returned no candidate"))?;
    let (arch, a) = best_of(acc, &ranked[..cfg.top.min(ranked.len())]);
    let picks = vec![
        Pick {
            method: "ours top-1".into(),
            arch: first.to_string(),
            acc: acc[first.code()],
        },
        Pick {
            method: format!("ours best of top-{}", cfg.top),
            arch,
            acc: a,
        },
    ];
    // every cell, in code order (the exhaustive path reuses the cached graph half of the head)
    let all: Vec<crate::space::Arch> = Nb201Arch::all().map(Into::into).collect();
    let scores = engine.score(
        data,
        &all,
        &SearchConfig {
            exhaustive: true,
            ..scfg
        },
    )?;
    let predictor_spearman =
        crate::stats::spearman(acc, &scores.iter().map(|&s| s as f64).collect::<Vec<_>>());
    Ok(SearchPicks {
        picks,
        ranked,
        predictor_spearman,
        search_ms: report.timings.total_ms,
        data_fit: report.data_fit,
    })
}

/// NASWOT on a seed's images at the benchmark's input size.
struct NaswotRun<'a> {
    seed: u64,
    images: &'a [crate::features::Image],
    labels: &'a [u32],
    classes: usize,
    cfg: &'a MetaTestConfig,
}

impl NaswotRun<'_> {
    /// The NASWOT pick among the first k random cells, for each k of `cfg.naswot`; scores come
    /// from `cache` when it has them and are appended to the cache file when computed.
    fn picks(
        &self,
        rng: &mut Rng,
        acc: &[f64],
        cache: &mut HashMap<String, Vec<Option<f64>>>,
        log: &mut dyn FnMut(&str),
    ) -> Result<Vec<Pick>> {
        let (seed, cfg) = (self.seed, self.cfg);
        let t0 = std::time::Instant::now();
        let mut order: Vec<usize> = (0..self.images.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let shuffled: Vec<_> = order.iter().map(|&i| self.images[i].clone()).collect();
        let shuffled_labels: Vec<u32> = order.iter().map(|&i| self.labels[i]).collect();
        let set = ImageSet::new(
            &shuffled,
            &shuffled_labels,
            self.classes,
            cfg.naswot_resolution,
            CIFAR_MEAN,
            CIFAR_STD,
        );
        let largest = cfg.naswot.iter().copied().max().unwrap_or(0);
        let sample = random_cells(rng, largest);
        let mut net = cfg.naswot_net;
        net.classes = self.classes;
        let key = naswot_key(seed, net, cfg.naswot_batch, &sample, &set);
        let cached = cache
            .remove(&key)
            .filter(|s| !sample.is_empty() && s.len() == sample.len());
        let mut nw = Vec::with_capacity(sample.len());
        if let Some(scores) = &cached {
            nw.extend(scores.iter().map(|s| s.unwrap_or(f64::NEG_INFINITY)));
            log(&format!(
                "seed {seed}: NASWOT scores of {} cells read from the cache",
                nw.len()
            ));
        }
        for (i, a) in sample.iter().enumerate().skip(nw.len()) {
            let s = naswot::score(a, net, &set, cfg.naswot_batch, seed);
            nw.push(if s.is_finite() { s } else { f64::NEG_INFINITY });
            if (i + 1) % 20 == 0 || i + 1 == sample.len() {
                log(&format!(
                    "seed {seed}: NASWOT {}/{} cells ({:.1} s)",
                    i + 1,
                    sample.len(),
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
        if let (Some(path), None, false) = (&cfg.naswot_cache, &cached, sample.is_empty()) {
            let scores: Vec<Option<f64>> = nw.iter().map(|s| s.is_finite().then_some(*s)).collect();
            super::append_json_line(path, &NaswotLine { key, scores })?;
        }
        Ok(cfg
            .naswot
            .iter()
            .map(|&k| {
                let best = (0..k).fold(0, |b, i| if nw[i] > nw[b] { i } else { b });
                Pick {
                    method: format!("NASWOT-{k}"),
                    arch: sample[best].to_string(),
                    acc: acc[sample[best].code()],
                }
            })
            .collect())
    }
}

/// Identifies one NASWOT run: the seed, network, batch, the cells in order and a digest of
/// the exact input tensor (so a different image folder or preprocessing never hits).
fn naswot_key(
    seed: u64,
    net: NetConfig,
    batch: usize,
    sample: &[Nb201Arch],
    set: &ImageSet,
) -> String {
    let mut bytes = Vec::with_capacity(set.data.len() * 4 + set.labels.len() * 4);
    bytes.extend(set.data.iter().flat_map(|v| v.to_le_bytes()));
    bytes.extend(set.labels.iter().flat_map(|v| v.to_le_bytes()));
    let codes: Vec<String> = sample.iter().map(|a| a.code().to_string()).collect();
    let cells = crate::weights::sha256_hex(codes.join(",").as_bytes());
    format!(
        "seed {seed}; net C{} N{} classes {}; batch {batch}; {}px; cells {}; input {}",
        net.channels,
        net.cells,
        net.classes,
        set.resolution,
        &cells[..16],
        crate::weights::sha256_hex(&bytes)
    )
}

/// One line of the NASWOT score cache (a score that is not finite is written as null).
#[derive(serde::Serialize, serde::Deserialize)]
struct NaswotLine {
    key: String,
    scores: Vec<Option<f64>>,
}

/// The NASWOT score cache, by key. A last line cut short by a kill is skipped (its run is
/// simply scored again); any other unreadable line is an error.
fn read_naswot_cache(path: &Path) -> Result<HashMap<String, Vec<Option<f64>>>> {
    let text = super::read_appended(path)?;
    let last = text.lines().count();
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<NaswotLine>(line) {
            Ok(l) => {
                map.insert(l.key, l.scores);
            }
            Err(_) if i + 1 == last => {}
            Err(e) => {
                return Err(Error::invalid(format!(
                    "{} line {}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(map)
}

/// A cheap, data-independent ranker: its name, its score of every cell in code order, and
/// whether the best of its top `top` is reported besides its top-1.
pub struct CheapRanker {
    pub name: &'static str,
    pub scores: Vec<f64>,
    pub shortlist: bool,
}

/// The cheap rankers a NAS reviewer asks for: the largest cell by FLOPs and by parameters, and
/// the source benchmark (NAS-Bench-201's ImageNet16-120 accuracies, which the ranker's cell
/// prior is trained on).
pub fn cheap_rankers(table: &Nb201Table) -> Result<Vec<CheapRanker>> {
    let net = crate::space::Nb201Net::default();
    let costs: Vec<crate::space::Cost> = Nb201Arch::all().map(|a| a.cost(&net)).collect();
    let in16 = super::ranker::source_accuracies(table)?;
    Ok(vec![
        CheapRanker {
            name: "max FLOPs",
            scores: costs.iter().map(|c| c.flops as f64).collect(),
            shortlist: false,
        },
        CheapRanker {
            name: "max params",
            scores: costs.iter().map(|c| c.params as f64).collect(),
            shortlist: false,
        },
        CheapRanker {
            name: "ImageNet16-120 table",
            scores: in16,
            shortlist: true,
        },
    ])
}

/// The picks of [`cheap_rankers`]: each one's top cell, and the source benchmark's best of
/// its top `top` too (ties broken by the lower cell code).
fn cheap_picks(table: &Nb201Table, top: usize) -> Result<Vec<Pick>> {
    let acc = truth(table)?;
    let mut picks = Vec::new();
    for CheapRanker {
        name,
        scores: score,
        shortlist,
    } in cheap_rankers(table)?
    {
        let mut order: Vec<usize> = (0..NUM_ARCHS).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
        let cell = |c: usize| Nb201Arch::from_code(c).expect("code in range").to_string();
        picks.push(Pick {
            method: if shortlist {
                format!("{name} top-1")
            } else {
                name.to_string()
            },
            arch: cell(order[0]),
            acc: acc[order[0]],
        });
        if shortlist {
            let best = order[..top.min(NUM_ARCHS)]
                .iter()
                .copied()
                .fold(order[0], |b, c| if acc[c] > acc[b] { c } else { b });
            picks.push(Pick {
                method: format!("{name} best of top-{top}"),
                arch: cell(best),
                acc: acc[best],
            });
        }
    }
    Ok(picks)
}

fn random_cells(rng: &mut Rng, n: usize) -> Vec<Nb201Arch> {
    let (mut scratch, mut pick) = (Vec::new(), Vec::new());
    rng.sample_without_replacement(NUM_ARCHS, n.min(NUM_ARCHS), &mut scratch, &mut pick);
    pick.iter()
        .map(|&c| Nb201Arch::from_code(c as usize).expect("code in range"))
        .collect()
}

pub fn summarize(results: &[SeedResult], table: &Nb201Table) -> Result<Summary> {
    let optimum = truth(table)?.into_iter().fold(f64::NEG_INFINITY, f64::max);
    let methods: Vec<String> = results
        .first()
        .map(|r| r.picks.iter().map(|p| p.method.clone()).collect())
        .unwrap_or_default();
    let ours = |r: &SeedResult| r.picks.get(1).map(|p| p.acc).unwrap_or(f64::NAN);
    let ours1 = |r: &SeedResult| r.picks.first().map(|p| p.acc).unwrap_or(f64::NAN);
    let methods = methods
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let v: Vec<f64> = results.iter().map(|r| r.picks[k].acc).collect();
            let (mean, std) = mean_std(&v);
            MethodSummary {
                method: name.clone(),
                mean,
                std,
                min: v.iter().copied().fold(f64::INFINITY, f64::min),
                max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ours_at_least_as_good: results.iter().filter(|r| ours(r) >= r.picks[k].acc).count(),
                ours_top1_at_least_as_good: results
                    .iter()
                    .filter(|r| ours1(r) >= r.picks[k].acc)
                    .count(),
            }
        })
        .collect();
    let sp: Vec<f64> = results.iter().map(|r| r.predictor_spearman).collect();
    let (spm, sps) = mean_std(&sp);
    let mut ms: Vec<f64> = results.iter().map(|r| r.search_ms).collect();
    ms.sort_by(f64::total_cmp);
    Ok(Summary {
        seeds: results.len(),
        methods,
        predictor_spearman_mean: spm,
        predictor_spearman_std: sps,
        search_ms_median: ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN),
        generated_best_mean: mean_std(
            &results.iter().map(|r| r.generated_best).collect::<Vec<_>>(),
        )
        .0,
        data_fit_mean: {
            let fits: Vec<_> = results.iter().filter_map(|r| r.data_fit).collect();
            (fits.len() == results.len() && !fits.is_empty()).then(|| {
                let n = fits.len() as f64;
                (
                    fits.iter().map(|f| f.novelty as f64).sum::<f64>() / n,
                    fits.iter().map(|f| f.gate as f64).sum::<f64>() / n,
                )
            })
        },
        optimum,
        ranker_spearman: {
            let acc = truth(table)?;
            cheap_rankers(table)?
                .into_iter()
                .map(|r| (r.name.to_string(), crate::stats::spearman(&acc, &r.scores)))
                .collect()
        },
    })
}

/// The summary as a Markdown table: every method's mean, spread and the seeds at which our
/// top-1 and our best-of-top shortlist are at least as good; then the rankers' Spearman.
pub fn markdown(summary: &Summary) -> String {
    let n = summary.seeds;
    let mut t = "| method | mean | std | min | max | seeds our top-1 >= it | seeds our best-of-top >= it |\n|---|---|---|---|---|---|---|\n"
        .to_string();
    for m in &summary.methods {
        t += &format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {}/{n} | {}/{n} |\n",
            m.method,
            m.mean,
            m.std,
            m.min,
            m.max,
            m.ours_top1_at_least_as_good,
            m.ours_at_least_as_good
        );
    }
    t += &format!(
        "| *best of all generated candidates (perfect ranking)* | {:.2} | | | | | |\n\n",
        summary.generated_best_mean
    );
    t += "| ranker | Spearman with the benchmark over all 15,625 cells |\n|---|---|\n";
    t += &format!(
        "| ours (predictor) | {:.3} (std over seeds {:.1e}) |\n",
        summary.predictor_spearman_mean, summary.predictor_spearman_std
    );
    for (name, sp) in &summary.ranker_spearman {
        t += &format!("| {name} | {sp:.3} |\n");
    }
    t += &format!(
        "\nSearch (generation and ranking): median {:.1} ms. Benchmark optimum {:.2}.\n",
        summary.search_ms_median, summary.optimum
    );
    if let Some((novelty, gate)) = summary.data_fit_mean {
        t += &format!(
            "Data fit (mean over seeds): novelty {novelty:.2} against the meta-training tasks, the cell mix's data part kept at {:.1}%.\n",
            100.0 * gate
        );
    }
    t
}

/// A strip plot: each method's pick at every seed, its mean, and the benchmark optimum.
pub fn strip_svg(results: &[SeedResult], summary: &Summary, title: &str) -> String {
    let all: Vec<f64> = results
        .iter()
        .flat_map(|r| r.picks.iter().map(|p| p.acc))
        .collect();
    let lo = all.iter().copied().fold(summary.optimum, f64::min);
    let y0 = (lo - 0.5).floor();
    let y1 = (summary.optimum + 0.5).ceil();
    let k = summary.methods.len() as f64;
    let mut p = super::svg::Plot::new(720.0, 480.0, (0.0, k), (y0, y1), title);
    let ticks: Vec<(f64, String)> = summary
        .methods
        .iter()
        .enumerate()
        .map(|(i, m)| (i as f64 + 0.5, m.method.clone()))
        .collect();
    p.x_ticks(&ticks, "method (one dot per seed; bar: mean)");
    p.y_ticks(
        ((y1 - y0) as usize).clamp(2, 10),
        1,
        "NAS-Bench-201 CIFAR-10 test accuracy (%)",
    );
    p.line(
        (0.0, summary.optimum),
        (k, summary.optimum),
        "#999999",
        true,
    );
    p.text(
        0.05,
        summary.optimum + 0.08,
        &format!("benchmark optimum {:.2}", summary.optimum),
    );
    let colors = [
        "#d62728", "#1f77b4", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ff7f0e", "#7f7f7f",
        "#2ca02c", "#9467bd",
    ];
    for (i, m) in summary.methods.iter().enumerate() {
        let c = colors[i % colors.len()];
        for (j, r) in results.iter().enumerate() {
            let jitter = (j as f64 / results.len().max(1) as f64 - 0.5) * 0.4;
            p.circle(i as f64 + 0.5 + jitter, r.picks[i].acc, 3.5, c);
        }
        p.line((i as f64 + 0.2, m.mean), (i as f64 + 0.8, m.mean), c, false);
    }
    p.finish()
}
