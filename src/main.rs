//! `sinter`: compile ONNX models for the Sinter NPU, run them on a simulated device and serve them.

mod compile;
mod npy;
mod report;
mod run;
mod serve;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sinter_host::DeviceKind;
use sinter_isa::HwConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sinter",
    version,
    about = "ONNX models as int8 programs for the Sinter NPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compile an ONNX model into a bundle (.sntr) and print its layer report.
    Compile(compile::CompileArgs),
    /// Run a bundle on a batch of inputs from a .npy file.
    Run(run::RunArgs),
    /// Serve a bundle over HTTP (Open Inference Protocol v2 and POST /score).
    Serve(serve::ServeArgs),
    /// Print the layer report of a bundle.
    Info {
        /// The bundle.
        model: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the program listing of a bundle.
    Disasm {
        /// The bundle.
        model: PathBuf,
    },
}

/// Options shared by the commands that open a device.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Device: `func` (functional model, cycles predicted) or `rtl` (Verilator, cycles measured).
    #[arg(long, default_value = "func")]
    pub device: DeviceKind,
    /// Wall-clock limit of one device run in milliseconds; a run over it is a hang and resets the
    /// device.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub timeout_ms: u64,
}

impl DeviceArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// Parses `--hw ROWSxCOLS`.
pub fn parse_hw(s: &str) -> Result<HwConfig, String> {
    s.parse::<HwConfig>().map_err(|e| e.to_string())
}

/// Opens a bundle with a message naming the file.
pub fn open_bundle(path: &std::path::Path) -> anyhow::Result<sinter_isa::bundle::Bundle> {
    sinter_isa::bundle::Bundle::open(path)
        .with_context(|| format!("cannot load bundle {}", path.display()))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SINTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Compile(a) => compile::main(a),
        Command::Run(a) => run::main(a),
        Command::Serve(a) => serve::main(a),
        Command::Info { model, json } => {
            let b = open_bundle(&model)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report::summary_json(&b))?
                );
            } else {
                print!("{}", report::layer_report(&b));
            }
            Ok(())
        }
        Command::Disasm { model } => {
            let b = open_bundle(&model)?;
            print!("{}", sinter_isa::insn::disassemble(&b.program));
            Ok(())
        }
    }
}

mod workspace;
