//! The shipped default weights `weights/nb201-lite0`: they load (which checks both model files
//! against the manifest's sha256), their manifest names the meta-database files they were
//! trained on with those files' current sha256, and README's main command (a search on the
//! committed example images with no --weights) runs on them.

mod common;

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn manifest_names_the_committed_meta_database() {
    let dir = root().join("weights/nb201-lite0");
    let engine = metad2a::Engine::load(&dir).unwrap();
    engine.verify().unwrap();
    let m = metad2a::weights::Manifest::read(&dir).unwrap();
    let p = &m.provenance;
    assert!(p.command.contains("train generator") && p.command.contains("train predictor"));
    assert!(p.commit.as_ref().is_some_and(|c| c.len() == 40));
    assert!(p.licence.contains("CC0") && p.licence.contains("BSD-3-Clause"));
    let names: Vec<&str> = p.inputs.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "data/metadb-nb201/tasks.jsonl",
            "data/metadb-nb201/records.jsonl",
            "data/metadb-nb201/features.safetensors"
        ]
    );
    for i in &p.inputs {
        let bytes = std::fs::read(root().join(&i.path)).unwrap();
        assert_eq!(bytes.len() as u64, i.bytes, "{}", i.path);
        assert_eq!(metad2a::weights::sha256_hex(&bytes), i.sha256, "{}", i.path);
    }
    assert!(
        m.extra.contains_key("generator_training") && m.extra.contains_key("predictor_training")
    );
}

#[test]
fn readme_main_command_searches_the_example_images() {
    let out = common::output_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_metad2a"))
            .current_dir(root())
            .env_remove("METAD2A_WEIGHTS")
            .args([
                "search",
                "--images",
                "examples/data/fashion-mnist",
                "--json",
                "--top-k",
                "5",
            ]),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = v["candidates"].as_array().unwrap();
    assert_eq!(c.len(), 5);
    let scores: Vec<f64> = c.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for c in c {
        c["arch"]
            .as_str()
            .unwrap()
            .parse::<metad2a::space::Nb201Arch>()
            .unwrap();
    }
}
