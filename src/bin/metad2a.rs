//! The `metad2a` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use metad2a::model::{Generator, Predictor};
use metad2a::weights::import::{import_official, ExportDtype, ImportOptions};
use metad2a::weights::WeightStore;

/// MetaD2A: pick a neural architecture for a new dataset from a sample of its features,
/// with no training on that dataset.
#[derive(Parser)]
#[command(name = "metad2a", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert official MetaD2A PyTorch checkpoints into a weights directory.
    ///
    /// Reads two `torch.save(model.state_dict())` files (zip or legacy format; nothing in them
    /// is executed), writes DIR/generator.safetensors, DIR/predictor.safetensors and
    /// DIR/manifest.json (sizes, sha256 of inputs and outputs, dropped tensors), then loads the
    /// result back to check it.
    ///
    /// Example: metad2a import --generator ckpt_400.pt --predictor ckpt_max_corr.pt --out weights/official-nb201
    Import {
        /// Generator checkpoint (official: results/generator/model/ckpt_400.pt).
        #[arg(long, value_name = "G.pt")]
        generator: PathBuf,
        /// Predictor checkpoint (official: results/predictor/model/ckpt_max_corr.pt).
        #[arg(long, value_name = "P.pt")]
        predictor: PathBuf,
        /// Output directory (created if missing; existing files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Storage dtype of the written weights: f32 (exact) or f16 (half the size).
        #[arg(long, default_value = "f32", value_name = "f32|f16")]
        dtype: String,
        /// Keep tensors inference never reads (e.g. the generator's graph encoder), for training.
        #[arg(long)]
        keep_unused: bool,
        /// What the checkpoints were trained on, recorded in the manifest.
        #[arg(
            long,
            default_value = "ImageNet-1K 32x32 subsets (official MetaD2A meta-training)"
        )]
        data: String,
        /// Which features the models expect, recorded in the manifest.
        #[arg(
            long,
            default_value = "ResNet-18 (ImageNet) pooled features of 32x32 images, 512-d"
        )]
        feature_extractor: String,
    },
    /// Print the sizes read from a generator or predictor safetensors file.
    Inspect {
        /// A generator.safetensors or predictor.safetensors file.
        file: PathBuf,
    },
}

fn run(cli: Cli) -> metad2a::Result<()> {
    match cli.command {
        Command::Import {
            generator,
            predictor,
            out,
            dtype,
            keep_unused,
            data,
            feature_extractor,
        } => {
            let opts = ImportOptions {
                generator,
                predictor,
                out,
                dtype: dtype.parse::<ExportDtype>()?,
                keep_unused,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                data,
                feature_extractor,
            };
            let m = import_official(&opts)?;
            println!(
                "wrote {} ({} space, {})",
                opts.out.display(),
                m.space.name(),
                m.dtype
            );
            for e in [&m.generator, &m.predictor] {
                println!(
                    "  {}: {} bytes, sha256 {}, {} unused tensors dropped",
                    e.file,
                    e.bytes,
                    e.sha256,
                    e.dropped.len()
                );
            }
            Ok(())
        }
        Command::Inspect { file } => {
            let store = WeightStore::open(&file)?;
            let dtype = store
                .common_dtype()
                .map_or("mixed".to_string(), |d| d.to_string());
            println!(
                "{}: {} tensors, {dtype}",
                file.display(),
                store.names().count()
            );
            if store.contains("grud.weight_ih") {
                let g = Generator::load(&store)?;
                println!("generator: {:#?}", g.dims);
            } else if store.contains("pred_fc.0.weight") {
                let p = Predictor::load(&store)?;
                println!("predictor: {:#?}", p.dims);
            } else {
                println!(
                    "neither a MetaD2A generator nor a predictor (no grud.* or pred_fc.* tensors)"
                );
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
