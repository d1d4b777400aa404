//! `sinter`: compile ONNX models for the Sinter NPU, run them on a simulated device and serve them.

mod bench;
mod bench_serve;
mod compile;
mod ctx;
mod interrupt;
mod keys_cmd;
mod maint;
mod models_cmd;
mod npy;
mod progress;
mod report;
mod resolve;
mod run;
mod runs_cmd;
mod serve;
mod serving;
mod table;
mod workspace;

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
    /// Workspace folder (registry database and artifact store). Default: $SINTER_WORKSPACE, else
    /// ./sinter-workspace.
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Print JSON instead of tables and text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the workspace (safe to repeat) and print where it is.
    Init,
    /// Register models and manage their versions, tags and aliases.
    #[command(subcommand)]
    Model(models_cmd::ModelCmd),
    /// Compile an ONNX file or a registered model (NAME[:VERSION|@ALIAS]) into a bundle and print
    /// its layer report.
    Compile(compile::CompileArgs),
    /// Run a bundle or a registered model on a batch of inputs from a .npy file.
    Run(run::RunArgs),
    /// Benchmark a bundle on a device: per-layer cycles next to the compiler's prediction, MAC
    /// utilization, simulated cycles per second and inferences per second.
    Bench(bench::BenchArgs),
    /// Serve a bundle or a registered model over HTTP (Open Inference Protocol v2 and POST
    /// /score).
    Serve(serve::ServeArgs),
    /// Show or regenerate the primary and secondary keys of `serve --auth on`.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCmd),
    /// Load-test a running server (Open Inference Protocol v2) and report throughput and
    /// latency percentiles per concurrency, like perf_analyzer.
    BenchServe(bench_serve::BenchServeArgs),
    /// List and inspect recorded runs.
    #[command(subcommand)]
    Runs(runs_cmd::RunsCmd),
    /// List deployments (servers started from registered models).
    #[command(subcommand)]
    Deployments(runs_cmd::DeploymentsCmd),
    /// Check and tidy the workspace.
    #[command(subcommand)]
    Workspace(maint::WorkspaceCmd),
    /// Print the layer report of a bundle.
    Info {
        /// The bundle.
        model: PathBuf,
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
    let ctx = ctx::Ctx::new(cli.workspace.as_deref(), cli.json);
    // The server handles its own signals (graceful shutdown); every other command ends its
    // recorded runs as killed on Ctrl-C.
    if !matches!(cli.command, Command::Serve(_) | Command::BenchServe(_)) {
        interrupt::install();
    }
    match cli.command {
        Command::Init => models_cmd::init(&ctx),
        Command::Model(c) => models_cmd::main(c, &ctx),
        Command::Compile(a) => compile::main(a, &ctx),
        Command::Run(a) => run::main(a, &ctx),
        Command::Bench(a) => bench::main(a, &ctx),
        Command::Serve(mut a) => {
            a.workspace_dir = Some(ctx.dir.clone());
            serving::main(a, &ctx)
        }
        Command::Keys(c) => keys_cmd::main(c, &ctx),
        Command::BenchServe(a) => bench_serve::main(a, &ctx),
        Command::Runs(c) => runs_cmd::runs(c, &ctx),
        Command::Deployments(c) => runs_cmd::deployments(c, &ctx),
        Command::Workspace(c) => maint::main(c, &ctx),
        Command::Info { model } => {
            let b = open_bundle(&model)?;
            if ctx.json {
                ctx.print_json(&report::summary_json(&b))
            } else {
                print!("{}", report::layer_report(&b));
                Ok(())
            }
        }
        Command::Disasm { model } => {
            let b = open_bundle(&model)?;
            let listing = sinter_isa::insn::disassemble(&b.program);
            if ctx.json {
                ctx.print_json(&listing.lines().collect::<Vec<_>>())
            } else {
                print!("{listing}");
                Ok(())
            }
        }
    }
}
