//! `sinter workspace …`: checks and housekeeping of the workspace itself.

use crate::ctx::Ctx;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand, Debug)]
pub enum WorkspaceCmd {
    /// Re-hash every stored artifact; fails if any is missing or corrupt.
    Verify,
    /// Delete stored files nothing refers to (left by interrupted writes).
    Gc {
        /// Keep temporary files younger than this many seconds (a write may be in progress).
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        min_age: u64,
    },
    /// Time registry operations in a fresh scratch workspace of the given size.
    Bench {
        /// Scratch folder (must not exist; removed afterwards).
        dir: PathBuf,
        /// Runs to record.
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Versions to register.
        #[arg(long, default_value_t = 20)]
        versions: usize,
    },
}

pub fn main(cmd: WorkspaceCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        WorkspaceCmd::Verify => {
            let ws = ctx.open()?;
            let bad = ws.verify_artifacts()?;
            if ctx.json {
                let list: Vec<_> = bad
                    .iter()
                    .map(|(h, e)| json!({ "hash": h, "error": e.to_string() }))
                    .collect();
                ctx.print_json(&json!({ "bad": list }))?;
            } else if bad.is_empty() {
                println!("every artifact of {} is intact", ws.root().display());
            } else {
                for (_, e) in &bad {
                    println!("{e}");
                }
            }
            anyhow::ensure!(
                bad.is_empty(),
                "{} artifact(s) missing or corrupt",
                bad.len()
            );
            Ok(())
        }
        WorkspaceCmd::Gc { min_age } => {
            let ws = ctx.open()?;
            let removed = ws.gc(Duration::from_secs(min_age))?;
            if ctx.json {
                return ctx.print_json(&json!({ "removed": removed }));
            }
            for p in &removed {
                println!("removed {}", p.display());
            }
            println!("{} file(s) removed", removed.len());
            Ok(())
        }
        WorkspaceCmd::Bench {
            dir,
            runs,
            versions,
        } => {
            anyhow::ensure!(
                !dir.exists(),
                "{} exists; give a new scratch folder",
                dir.display()
            );
            let report = crate::workspace::bench::run(&dir, runs, versions);
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            if ctx.json {
                return ctx.print_json(&report);
            }
            println!(
                "{} runs, {} versions: register {:?}, record a run {:?}, resolve {:?}, list newest 50 {:?}, list filtered {:?}",
                report.runs,
                report.versions,
                report.per_register,
                report.per_run_recorded,
                report.per_resolve,
                report.per_list_newest,
                report.per_list_filtered
            );
            Ok(())
        }
    }
}
