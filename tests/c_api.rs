//! The C API: the committed header is what cbindgen generates, and C programs built with the
//! system C compiler against the static library work, concurrently too, and handle bad input
//! (under valgrind when it is installed).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use metad2a::weights::import::ExportDtype;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn header_is_up_to_date() {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root())
        .with_config(config)
        .generate()
        .expect("cbindgen runs")
        .write(&mut generated);
    let path = root().join("include/metad2a.h");
    if std::env::var_os("METAD2A_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    let define = format!(
        "#define METAD2A_ABI_VERSION {}\n",
        metad2a::ffi::METAD2A_ABI_VERSION
    );
    assert!(
        String::from_utf8_lossy(&generated).contains(&define),
        "cbindgen.toml's after_includes must say `{}`",
        define.trim()
    );
    assert!(
        committed == generated,
        "include/metad2a.h is out of date with src/ffi/mod.rs: regenerate with `METAD2A_BLESS=1 cargo test --test c_api header`"
    );
}

/// The directory with the static library this test binary was built with (target/<profile>).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The system C compiler's link line for a Rust static library (`cargo rustc -- --print
/// native-static-libs` prints it).
const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn compile(src: &str, out: &Path) {
    let lib = lib_dir().join("libmetad2a.a");
    assert!(lib.is_file(), "{} was not built", lib.display());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-O1", "-g", "-Wall", "-Werror", "-I"])
        .arg(root().join("include"))
        .arg(root().join(src))
        .arg(&lib)
        .arg("-Wl,--gc-sections")
        .args(NATIVE_LIBS)
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "compiling {src} failed");
}

struct Fixture {
    weights: PathBuf,
    features: PathBuf,
    bins: PathBuf,
}

fn fixture(shared: &Path) -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = common::temp_dir("c-api");
        let s = shared.join("parity/nb201");
        let weights = dir.join("weights");
        common::import_fixture(&s, &weights, ExportDtype::F32, false, true);
        let t = common::read_tensors(&s.join("inputs.safetensors"));
        let data = metad2a::Dataset::from_contiguous(t["x.c10"].1.clone(), 512, 20).unwrap();
        let features = dir.join("c10.safetensors");
        data.save(&features, false).unwrap();
        let bins = dir.join("bin");
        std::fs::create_dir_all(&bins).unwrap();
        compile("examples/c/search.c", &bins.join("search"));
        compile("tests/c/threads.c", &bins.join("threads"));
        compile("tests/c/bad_input.c", &bins.join("bad_input"));
        Fixture {
            weights,
            features,
            bins,
        }
    })
}

fn run(f: &Fixture, bin: &str, wrapper: &[&str]) -> (bool, String, String) {
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(f.bins.join(bin));
            c
        }
        None => Command::new(f.bins.join(bin)),
    };
    common::outcome(&cmd.arg(&f.weights).arg(&f.features).output().unwrap())
}

/// Runs a C program of the fixture, which must succeed and print `needle`.
fn run_ok(shared: &Path, bin: &str, needle: &str) {
    let (ok, out, err) = run(fixture(shared), bin, &[]);
    assert!(ok && out.contains(needle), "{out}\n{err}");
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn c_example_prints_the_top_five() {
    let shared = need_shared!();
    let f = fixture(&shared);
    let (ok, out, err) = run(f, "search", &[]);
    assert!(ok, "{out}\n{err}");
    let data = metad2a::Dataset::load(&f.features).unwrap();
    same_top_five_as_rust(&out, &f.weights, &data);
}

/// The C example printed the five cells the same search from Rust ranks first, in order.
fn same_top_five_as_rust(stdout: &str, weights: &Path, data: &metad2a::Dataset) {
    let ranked: Vec<&str> = stdout.lines().filter(|l| l.contains("|+|")).collect();
    assert_eq!(ranked.len(), 5, "{stdout}");
    let engine = metad2a::Engine::load(weights).unwrap();
    let cfg = metad2a::SearchConfig {
        top_k: 5,
        ..Default::default()
    };
    let r = engine.search(data, &cfg).unwrap();
    for (line, c) in ranked.iter().zip(&r.candidates) {
        assert!(line.ends_with(&c.arch.to_string()), "{line} vs {}", c.arch);
    }
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn c_threads_agree_and_bad_input_gives_statuses() {
    let shared = need_shared!();
    run_ok(&shared, "threads", "concurrent == sequential");
    run_ok(&shared, "bad_input", "all bad-input checks passed");
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn c_bad_input_under_valgrind() {
    let shared = need_shared!();
    if Command::new("valgrind").arg("--version").output().is_err() {
        if std::env::var_os("CI").is_some() || std::env::var_os("METAD2A_REQUIRE_SHARED").is_some()
        {
            panic!("valgrind is not installed");
        }
        eprintln!("\n*** SKIPPED: valgrind not installed ***\n");
        return;
    }
    let f = fixture(&shared);
    // Definite leaks and invalid accesses fail; the thread pool's threads live until exit by
    // design, so their memory is "possibly lost", not "definitely".
    let (ok, out, err) = run(
        f,
        "bad_input",
        &[
            "valgrind",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
        ],
    );
    assert!(ok, "valgrind reported errors:\n{out}\n{err}");
    assert!(out.contains("all bad-input checks passed"), "{out}");
    assert!(err.contains("ERROR SUMMARY: 0 errors"), "{err}");
}

/// README's documented C build: the library alone, the example linked with `--gc-sections`,
/// stripped, is at most 10 MB, and it runs with the shipped default weights on features of the
/// committed example images, ranking as the Rust API does.
#[test]
fn c_example_is_small_and_runs_with_the_shipped_weights() {
    let dir = common::temp_dir("c-api-shipped");
    let bin = dir.join("search");
    compile("examples/c/search.c", &bin);
    let stripped = dir.join("search-stripped");
    std::fs::copy(&bin, &stripped).unwrap();
    let ok = Command::new("strip")
        .arg(&stripped)
        .status()
        .expect("strip (binutils) is installed beside the C compiler");
    assert!(ok.success());
    let size = std::fs::metadata(&stripped).unwrap().len();
    assert!(size <= 10 << 20, "stripped C example is {size} bytes");

    let images = metad2a::features::readers::read_folder(
        &root().join("examples/data/fashion-mnist"),
        Some(20),
        &mut |_, _| {},
    )
    .unwrap();
    let fx = metad2a::features::FeatureExtractor::builtin(metad2a::features::DEFAULT_RESOLUTION)
        .unwrap();
    let data = fx.dataset(&images, &mut |_, _| {}).unwrap();
    let features = dir.join("fmnist.safetensors");
    data.save(&features, false).unwrap();
    let weights = root().join("weights/nb201-lite0-ranker");
    let out = Command::new(&stripped)
        .arg(&weights)
        .arg(&features)
        .output()
        .unwrap();
    let (ok, stdout, stderr) = common::outcome(&out);
    assert!(ok, "{stdout}\n{stderr}");
    same_top_five_as_rust(&stdout, &weights, &data);
    // the data fit of the default weights' gated mix, as the Rust report gives it
    let engine = metad2a::Engine::load(&weights).unwrap();
    let fit = engine
        .search(&data, &metad2a::SearchConfig::default())
        .unwrap()
        .data_fit
        .expect("the default weights have a gated cell mix");
    let want = format!(
        "data fit: novelty {:.4}, gate {:.4}",
        fit.novelty as f64, fit.gate as f64
    );
    assert!(stdout.contains(&want), "{want} not in\n{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}
