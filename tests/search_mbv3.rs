//! Search and scoring in the MobileNetV3 space with the official models of the parity fixture
//! (`../shared/parity/mbv3`), and the `score` command for both spaces.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use metad2a::rng::Rng;
use metad2a::search::{Budget, SearchConfig};
use metad2a::space::{Arch, Mbv3Arch, Mbv3Net, Space};
use metad2a::weights::import::ExportDtype;
use metad2a::{Dataset, Engine};

fn weights(shared: &Path, space: &'static str) -> PathBuf {
    static DIRS: OnceLock<std::sync::Mutex<std::collections::HashMap<&'static str, PathBuf>>> =
        OnceLock::new();
    let mut m = DIRS.get_or_init(Default::default).lock().unwrap();
    m.entry(space)
        .or_insert_with(|| {
            let out = common::temp_dir(&format!("weights-{space}"));
            let s = shared.join("parity").join(space);
            common::import_fixture(&s, &out, ExportDtype::F32, false, true);
            out
        })
        .clone()
}

/// `x.c10` of the fixture with 30 rows per class (10 perturbed copies), so set samples differ.
fn data(shared: &Path) -> Dataset {
    let t = common::read_tensors(&shared.join("parity/mbv3/inputs.safetensors"));
    let (shape, v) = &t["x.c10"];
    let d = shape[1];
    let mut rng = Rng::new(3, 3);
    let (mut feats, mut labels) = (Vec::new(), Vec::new());
    for c in 0..10usize {
        for i in 0..30usize {
            let row = &v[(c * 20 + i % 20) * d..(c * 20 + i % 20 + 1) * d];
            feats.extend(row.iter().map(|&x| {
                if i >= 20 {
                    x + 0.05 * rng.normal() as f32
                } else {
                    x
                }
            }));
            labels.push(c as u32);
        }
    }
    Dataset::new(feats, d, labels, None).unwrap()
}

fn cfg(seed: u64) -> SearchConfig {
    SearchConfig {
        seed,
        num_archs: 30,
        resamples: 3,
        top_k: 0,
        max_decoded: Some(3000),
        ..SearchConfig::default()
    }
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn mbv3_search_gives_valid_ranked_subnets_in_both_forms() {
    let shared = need_shared!();
    let e = Engine::load(weights(&shared, "mbv3")).unwrap();
    assert_eq!(e.space, Space::Mbv3);
    assert!(!e.has_graph_cache(), "no cache for MBv3 weights");
    let data = data(&shared);
    let r = e.search(&data, &cfg(1)).unwrap();
    assert_eq!(r.space, Space::Mbv3);
    assert!(r.counts.valid > 0 && !r.candidates.is_empty());
    assert_eq!(r.candidates.len(), r.counts.ranked);
    let mut seen = std::collections::HashSet::new();
    for (i, c) in r.candidates.iter().enumerate() {
        let Arch::Mbv3(a) = c.arch else {
            panic!("{} is not a MobileNetV3 subnet", c.arch)
        };
        let j = c
            .arch_json
            .as_ref()
            .expect("MBv3 candidates carry the JSON form");
        assert_eq!(Mbv3Arch::from_json(&j.to_string()).unwrap(), a);
        assert!(seen.insert(a), "duplicate candidate");
        assert_eq!(c.rank, i + 1);
        let cost = a.cost(&Mbv3Net::default());
        assert_eq!((c.flops, c.params), (cost.flops, cost.params));
        if i > 0 {
            assert!(r.candidates[i - 1].score >= c.score);
        }
    }
    // the same seed gives the same report; scoring the candidates reproduces their scores
    let again = e.search(&data, &cfg(1)).unwrap();
    assert_eq!(
        r.candidates
            .iter()
            .map(|c| (&c.arch, c.score))
            .collect::<Vec<_>>(),
        again
            .candidates
            .iter()
            .map(|c| (&c.arch, c.score))
            .collect::<Vec<_>>()
    );
    let archs: Vec<Arch> = r
        .candidates
        .iter()
        .map(|c| Arch::parse(Space::Mbv3, &c.arch.to_string()).unwrap())
        .collect();
    let s = e.score(&data, &archs, &cfg(1)).unwrap();
    common::assert_close(
        "rescored",
        &s,
        &r.candidates.iter().map(|c| c.score).collect::<Vec<_>>(),
        1e-6,
    );
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn mbv3_budgets_and_unsupported_modes() {
    let shared = need_shared!();
    let e = Engine::load(weights(&shared, "mbv3")).unwrap();
    let data = data(&shared);
    let free = e.search(&data, &cfg(2)).unwrap();
    let mut flops: Vec<u64> = free.candidates.iter().map(|c| c.flops).collect();
    flops.sort_unstable();
    let cap = flops[flops.len() / 2];
    let capped = SearchConfig {
        budget: Budget {
            max_flops: Some(cap),
            ..Budget::default()
        },
        ..cfg(2)
    };
    let r = e.search(&data, &capped).unwrap();
    assert!(!r.candidates.is_empty());
    assert!(r.candidates.iter().all(|c| c.flops <= cap));
    assert!(r.counts.over_budget > 0);
    let err = e
        .search(
            &data,
            &SearchConfig {
                exhaustive: true,
                ..cfg(2)
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("exhaustive"), "{err}");
    // architectures of the other space are refused by name
    let cell: Arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
        .parse::<metad2a::space::Nb201Arch>()
        .unwrap()
        .into();
    let err = e.score(&data, &[cell], &cfg(2)).unwrap_err();
    assert!(err.to_string().contains("nb201"), "{err}");
}

fn run_score(
    weights: &Path,
    features: &Path,
    input: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metad2a"))
        .args(["score", "--archs", "-", "--resamples", "3", "--weights"])
        .arg(weights)
        .arg("--features")
        .arg(features)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    common::outcome(&child.wait_with_output().unwrap())
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn score_command_ranks_given_architectures_in_both_spaces() {
    let shared = need_shared!();
    let dir = common::temp_dir("score-cli");
    let feats = dir.join("c10.safetensors");
    data(&shared).save(&feats, false).unwrap();
    let mut rng = Rng::new(9, 9);
    for space in ["mbv3", "nb201"] {
        let w = weights(&shared, space);
        let e = Engine::load(&w).unwrap();
        let archs: Vec<Arch> = (0..6)
            .map(|i| match space {
                "mbv3" => Mbv3Arch::random(&mut rng).into(),
                _ => metad2a::space::Nb201Arch::from_code(i * 2011)
                    .unwrap()
                    .into(),
            })
            .collect();
        // MBv3 lines alternate between the JSON object and the readable form
        let lines: Vec<String> = archs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if space == "mbv3" && i % 2 == 0 {
                    a.to_json().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let input = format!("# candidates\n\n{}\n", lines.join("\n"));
        let (ok, out, err) = run_score(&w, &feats, &input, &["--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v["archs"].as_array().unwrap();
        assert_eq!(rows.len(), archs.len());
        let want = e
            .score(
                &Dataset::load(&feats).unwrap(),
                &archs,
                &SearchConfig {
                    resamples: 3,
                    ..SearchConfig::default()
                },
            )
            .unwrap();
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row["arch"].as_str().unwrap(), archs[i].to_string());
            assert!(
                (row["score"].as_f64().unwrap() as f32 - want[i]).abs()
                    <= 1e-6 * want[i].abs().max(1.0)
            );
            let better = want.iter().filter(|&&s| s > want[i]).count();
            assert_eq!(row["rank"].as_u64().unwrap() as usize, better + 1);
        }
        // a bad line is reported with its number; the other space's architecture is refused
        let (ok, _, err) = run_score(
            &w,
            &feats,
            &format!("{}\nnot an architecture\n", lines[0]),
            &[],
        );
        assert!(!ok && err.contains("line 2"), "{err}");
        let other = if space == "mbv3" {
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|".to_string()
        } else {
            Mbv3Arch::random(&mut rng).to_json().to_string()
        };
        let (ok, _, err) = run_score(&w, &feats, &other, &[]);
        assert!(!ok && err.contains("line 1"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
