//! Meta-training (feature `train`): the official losses and their gradients on the recorded
//! batch of `../shared/parity/nb201`.
#![cfg(feature = "train")]

mod common;

use candle_core::{Device, Tensor};
use metad2a::space::Nb201Arch;
use metad2a::train::meta::{
    generator_loss, mse_sum, predictor_forward, rel_max, set_embeddings, Params,
};
use serde_json::Value;

struct Batch {
    xs: Vec<Tensor>,
    graphs: Vec<metad2a::model::Dag>,
    y: Tensor,
    json: Value,
    expected: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

fn batch(shared: &std::path::Path) -> Batch {
    let dir = shared.join("parity/nb201");
    let inputs = common::read_tensors(&dir.join("inputs.safetensors"));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (shape, x) = &inputs["train.x"];
    let per = shape[1] * shape[2];
    let xs = (0..shape[0])
        .map(|i| {
            Tensor::from_vec(
                x[i * per..(i + 1) * per].to_vec(),
                (shape[1], shape[2]),
                &Device::Cpu,
            )
            .unwrap()
        })
        .collect();
    let graphs = json["train_archs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse::<Nb201Arch>().unwrap().to_graph())
        .collect();
    let y = Tensor::from_vec(inputs["train.y"].1.clone(), shape[0], &Device::Cpu).unwrap();
    Batch {
        xs,
        graphs,
        y,
        json,
        expected: common::read_tensors(&dir.join("expected.safetensors")),
    }
}

fn check_grad(
    name: &str,
    params: &Params,
    grads: &candle_core::backprop::GradStore,
    b: &Batch,
    prefix: &str,
) -> f32 {
    let var = &params.vars[name];
    let got = grads
        .get(var)
        .unwrap_or_else(|| panic!("no gradient for {name}"))
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = &b.expected[&format!("{prefix}{name}")].1;
    let e = rel_max(&got, want);
    assert!(e <= 1e-3, "{prefix}{name}: relative error {e}");
    e
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn generator_losses_and_gradients_match_the_official_code() {
    let shared = need_shared!();
    let b = batch(&shared);
    let params = Params::load(&shared.join("parity/nb201/generator.safetensors")).unwrap();
    let w = params.weights();
    let v = set_embeddings(&w, &b.xs, 20, 4).unwrap();
    let (mu, logvar) = (w.linear("fc1", &v).unwrap(), w.linear("fc2", &v).unwrap());
    let (total, recon, kld) = generator_loss(&w, &mu, &logvar, &b.graphs, 7, 8, None).unwrap();
    let want = &b.json["gen.loss"];
    for (got, key) in [(&total, "total"), (&recon, "recon"), (&kld, "kld")] {
        let g = got.to_scalar::<f32>().unwrap() as f64;
        let w = want[key].as_f64().unwrap();
        assert!(
            (g - w).abs() <= 1e-4 * w.abs(),
            "gen.loss.{key}: {g} vs {w}"
        );
    }
    let grads = total.backward().unwrap();
    let mut worst = 0f32;
    for name in [
        "add_edge.0.weight",
        "fc1.bias",
        "fc3.weight",
        "grud.weight_ih",
        "intra_setpool.enc.0.mab.fc_q.weight",
    ] {
        worst = worst.max(check_grad(name, &params, &grads, &b, "gen.grad."));
    }
    eprintln!("generator: losses match, worst gradient error {worst:e}");
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn predictor_loss_and_gradients_match_the_official_code() {
    let shared = need_shared!();
    let b = batch(&shared);
    let params = Params::load(&shared.join("parity/nb201/predictor.safetensors")).unwrap();
    let w = params.weights();
    let y = predictor_forward(&w, &b.xs, &b.graphs, 20, 4, 7, 8).unwrap();
    let loss = mse_sum(&y, &b.y).unwrap();
    let g = loss.to_scalar::<f32>().unwrap() as f64;
    let want = b.json["pred.loss_mse_sum"].as_f64().unwrap();
    assert!(
        (g - want).abs() <= 1e-4 * want.abs(),
        "pred.loss_mse_sum: {g} vs {want}"
    );
    let grads = loss.backward().unwrap();
    let mut worst = 0f32;
    for name in [
        "grue_forward.weight_hh",
        "hg_unify.0.bias",
        "inter_setpool.dec.0.S",
        "pred_fc.0.weight",
    ] {
        worst = worst.max(check_grad(name, &params, &grads, &b, "pred.grad."));
    }
    eprintln!("predictor: loss matches, worst gradient error {worst:e}");
}

/// A meta-database with a planted rule: a task's statistic `s` (the mean of its classes'
/// feature-0 centres) decides whether cell A (s > 0) or cell B (s < 0) is best; accuracies
/// also rise with `s` for every cell.
fn planted_db() -> (metad2a::train::metadb::MetaDb, Vec<f64>) {
    use metad2a::rng::Rng;
    use metad2a::train::metadb::{MetaDb, Record, Split, Task};
    let (dim, classes, rows) = (16, 60, 30);
    let mut rng = Rng::new(11, 0);
    // feature 0 carries the planted statistic and varies most
    let centres: Vec<Vec<f32>> = (0..classes)
        .map(|_| {
            (0..dim)
                .map(|j| rng.normal() as f32 * if j == 0 { 3.0 } else { 1.0 })
                .collect()
        })
        .collect();
    let mut features = Vec::new();
    let mut class_offsets = vec![0];
    for c in &centres {
        for _ in 0..rows {
            features.extend(c.iter().map(|&m| m + 0.3 * rng.normal() as f32));
        }
        class_offsets.push(class_offsets.last().unwrap() + rows);
    }
    let (a, b, c) = (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
        "|avg_pool_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|avg_pool_3x3~2|",
    );
    let (mut tasks, mut records, mut stats) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..200 {
        let mut scratch = Vec::new();
        let mut cls = Vec::new();
        rng.sample_without_replacement(classes, 5, &mut scratch, &mut cls);
        let s = cls
            .iter()
            .map(|&k| centres[k as usize][0] as f64)
            .sum::<f64>()
            / 5.0;
        stats.push(s);
        tasks.push(Task {
            classes: cls,
            source: "planted".into(),
            split: if t < 160 { Split::Train } else { Split::Valid },
        });
        // A gains most from a high statistic, so it is best when s > 0, B when s < 0
        for (arch, acc) in [
            (a, 60.0 + 10.0 * s),
            (b, 60.0 + 3.0 * s),
            (c, 45.0 + 5.0 * s),
        ] {
            records.push(Record {
                task: t,
                arch: arch.into(),
                acc: acc + 0.2 * rng.normal(),
                ..Default::default()
            });
        }
    }
    let db = MetaDb {
        features,
        dim,
        class_offsets,
        class_names: (0..classes).map(|c| format!("c{c}")).collect(),
        feature_extractor: "synthetic".into(),
        tasks,
        records,
        label: metad2a::train::metadb::Label::Valid,
    };
    (db, stats)
}

#[test]
fn learns_a_planted_rule() {
    use metad2a::model::dims::PredictorDims;
    use metad2a::model::inventory;
    use metad2a::train::meta_train::{init_params, train, Kind, MetaTrainConfig};
    let (db, stats) = planted_db();
    // the database survives a save/load round trip
    let dir = common::temp_dir("planted");
    db.save(&dir.join("db")).unwrap();
    let db = metad2a::train::metadb::MetaDb::load(&dir.join("db")).unwrap();
    let out = dir.join("weights");
    let cfg = MetaTrainConfig {
        epochs: 30,
        lr: 2e-3,
        per_class: 8,
        seed: 1,
        ..MetaTrainConfig::default()
    };
    let t = std::time::Instant::now();
    let glog = train(
        Kind::Generator,
        &db,
        init_params(Kind::Generator, db.dim, 1).unwrap(),
        &cfg,
        &out,
        &mut |_| {},
    )
    .unwrap();
    eprintln!(
        "generator: {:.1} s, first/last train loss {:.2} / {:.2}",
        t.elapsed().as_secs_f64(),
        glog[0].train_loss,
        glog.last().unwrap().train_loss
    );
    // A second run over a finished checkpoint resumes it: nothing retrains, same history.
    let again = train(
        Kind::Generator,
        &db,
        init_params(Kind::Generator, db.dim, 1).unwrap(),
        &cfg,
        &out,
        &mut |_| panic!("a finished run trained again"),
    )
    .unwrap();
    assert_eq!(again.len(), glog.len());
    assert_eq!(
        again.last().unwrap().train_loss,
        glog.last().unwrap().train_loss
    );
    // a smaller predictor than the official one keeps the test short
    let pd = PredictorDims {
        hs: 32,
        ..metad2a::train::meta_train::predictor_dims(db.dim)
    };
    let pinit = metad2a::train::meta::Params::from_values(&inventory::pytorch_init(
        &inventory::predictor(&pd),
        2,
    ))
    .unwrap();
    let t = std::time::Instant::now();
    let plog = train(
        Kind::Predictor,
        &db,
        pinit,
        &MetaTrainConfig {
            epochs: 15,
            lr: 3e-3,
            ..cfg.clone()
        },
        &out,
        &mut |_| {},
    )
    .unwrap();
    let best = plog
        .iter()
        .filter_map(|l| l.valid_spearman)
        .fold(f64::NEG_INFINITY, f64::max);
    eprintln!(
        "predictor: {:.1} s, best held-out Spearman {best:.3}",
        t.elapsed().as_secs_f64()
    );

    // The exported weights load in the runtime; held-out tasks decode to the planted best cell.
    let g = metad2a::model::Generator::load_file(out.join("generator.safetensors")).unwrap();
    let p = metad2a::model::Predictor::load_file(out.join("predictor.safetensors")).unwrap();
    let mut rng = metad2a::rng::Rng::new(5, 5);
    let (mut right, mut total) = (0, 0);
    for (ti, task) in db
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.split == metad2a::train::metadb::Split::Valid)
    {
        if stats[ti].abs() < 0.3 {
            continue; // too close to the boundary to call
        }
        let x = db.sample_task(ti, 8, &mut rng);
        let (mu, _) = g.latent(&x, 1, task.classes.len(), 8).unwrap();
        let dag = &g
            .decode(&mu, metad2a::model::DecodeMode::Argmax, &mut [])
            .unwrap()[0];
        let want = if stats[ti] > 0.0 { 5 } else { 3 };
        total += 1;
        if Nb201Arch::from_graph(dag).is_some_and(|a| a.ops.iter().all(|&o| o + 2 == want)) {
            right += 1;
        } else {
            eprintln!(
                "task {ti} (s = {:.2}) decoded to {:?}",
                stats[ti], dag.types
            );
        }
    }
    eprintln!("held-out tasks decoded to the planted best cell: {right}/{total}");
    assert!(
        total >= 25 && right as f64 >= 0.8 * total as f64,
        "{right}/{total}"
    );
    // predictor: Spearman over held-out records with the exported (best) predictor
    let (mut pred, mut truth) = (Vec::new(), Vec::new());
    for i in db.records_of(metad2a::train::metadb::Split::Valid) {
        let r = &db.records[i];
        let task = &db.tasks[r.task];
        let x = db.sample_task(r.task, 8, &mut rng);
        let d = p.set_encoder.encode(&x, 1, task.classes.len(), 8).unwrap();
        let a: Nb201Arch = r.arch.parse().unwrap();
        let ge = p.graph_embedding(&[a.to_graph()]).unwrap();
        pred.push(p.predict(&d, &ge).unwrap()[0] as f64);
        truth.push(r.acc);
    }
    let rho = metad2a::stats::spearman(&truth, &pred);
    eprintln!("runtime predictor on held-out records: Spearman {rho:.3}");
    assert!(rho > 0.8, "held-out Spearman {rho}");
    assert!(best > 0.8);
}

/// Leave-one-source-out on the committed meta-database: one row per source, the rows cover
/// every task, the held-out source never trains, and a database of one source is refused.
/// Task folds cover the same tasks, with the same baselines source by source.
#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn leave_one_source_out_covers_every_source() {
    use metad2a::train::ranker::{leave_one_source_out, RankerConfig};
    let shared = need_shared!();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut db = metad2a::train::metadb::MetaDb::load(&root.join("data/metadb-nb201")).unwrap();
    let table =
        metad2a::space::nb201_table::Nb201Table::load(shared.join("data/nb201/nats_bench.csv"))
            .unwrap();
    let engine = metad2a::Engine::load(root.join("weights/nb201-lite0")).unwrap();
    let all: Vec<metad2a::space::Arch> = metad2a::space::Nb201Arch::all().map(Into::into).collect();
    let g_all = engine.graph_embeddings(&all).unwrap();
    let cfg = RankerConfig {
        prior: false,
        epochs: 1,
        samples: 2,
        ..RankerConfig::default()
    };
    let loso = |db: &metad2a::train::metadb::MetaDb| {
        let inputs = metad2a::train::ranker::HeadInputs {
            db,
            base: &engine.predictor,
            g_all: &g_all,
            prior_all: None,
            table: &table,
        };
        leave_one_source_out(inputs, &cfg, &mut |_| {})
    };
    let rows = loso(&db).unwrap();
    // the same tasks held out by folds instead: each task measured once, the same baselines
    let inputs = metad2a::train::ranker::HeadInputs {
        db: &db,
        base: &engine.predictor,
        g_all: &g_all,
        prior_all: None,
        table: &table,
    };
    // with the cell mix and the source-benchmark pairs, which change the scores, not the tasks
    let mixed = RankerConfig {
        mix: true,
        mix_gate: Some(0.4),
        source_pairs: 0.5,
        ..cfg.clone()
    };
    let folds = metad2a::train::ranker::task_folds(inputs, &mixed, 3, &mut |_| {}).unwrap();
    assert!(metad2a::train::ranker::task_folds(inputs, &cfg, 1, &mut |_| {}).is_err());
    assert_eq!(folds.len(), rows.len());
    for (f, r) in folds.iter().zip(&rows) {
        assert_eq!((&f.source, f.tasks, f.last.epoch), (&r.source, r.tasks, 1));
        assert!(f.last.spearman.is_finite() && f.last.per_task.iter().all(|m| m.novelty >= 0.0));
        let (a, b) = (&f.baselines, &r.baselines);
        assert!((a.source_benchmark - b.source_benchmark).abs() < 1e-12);
        assert!((a.params - b.params).abs() < 1e-12 && (a.flops - b.flops).abs() < 1e-12);
    }
    let sources: std::collections::BTreeSet<&str> =
        db.tasks.iter().map(|t| t.source.as_str()).collect();
    assert_eq!(
        rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>(),
        sources.iter().copied().collect::<Vec<_>>()
    );
    assert_eq!(rows.iter().map(|r| r.tasks).sum::<usize>(), db.tasks.len());
    // nested validation: the kept epoch's measures are the held-out tasks' at that epoch
    for r in rows.iter().chain(&folds) {
        assert_eq!(r.kept.per_task.len(), r.tasks);
        let at = if r.kept.epoch == 1 { &r.last } else { &r.start };
        assert_eq!(r.kept.spearman, at.spearman, "{}", r.source);
        assert_eq!(r.kept.source_spearman, at.source_spearman, "{}", r.source);
    }
    // and the valid split's other tasks choose the epoch without training
    let fold = RankerConfig {
        holdout_fold: Some((1, 3)),
        ..cfg.clone()
    };
    let report = metad2a::train::ranker::train_head(inputs, &fold, None, &mut |_| {})
        .unwrap()
        .report;
    let choosing = (0..db.tasks.len())
        .filter(|&t| t % 3 != 1 && db.tasks[t].split == metad2a::train::metadb::Split::Valid)
        .count();
    assert!(choosing > 0);
    assert_eq!(report.choosing_tasks, choosing);
    assert_eq!(
        report.valid_tasks,
        (0..db.tasks.len()).filter(|t| t % 3 == 1).count()
    );
    assert_eq!(
        report.train_tasks + report.valid_tasks + report.choosing_tasks,
        db.tasks.len()
    );
    for r in &rows {
        assert_eq!(r.last.epoch, 1);
        assert!(r.last.spearman.is_finite() && r.baselines.params.is_finite());
        assert_eq!(r.last.by_source.keys().collect::<Vec<_>>(), [&r.source]);
    }
    let md = metad2a::train::ranker::loso_markdown(&rows, "held-out source");
    assert_eq!(md.lines().count(), 2 + rows.len() + 1, "{md}");
    for t in &mut db.tasks {
        t.source = "one".into();
    }
    assert!(loso(&db).is_err());
}
