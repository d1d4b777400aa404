//! `sinter runs …` and `sinter deployments …`.

use crate::ctx::Ctx;
use crate::table;
use crate::workspace::{
    Deployment, DeploymentStatus, LogLevel, LogLine, MetricPoint, RunComparison, RunDetail,
    RunFilter, RunKind, RunStatus, RunSummary,
};
use anyhow::Context;
use comfy_table::Cell;
use std::collections::BTreeMap;

#[derive(clap::Subcommand, Debug)]
pub enum RunsCmd {
    /// Recorded runs, newest first.
    List {
        /// Only runs of this kind (compile, calibrate, run, bench, serve).
        #[arg(long)]
        kind: Option<String>,
        /// Only runs with this status (running, finished, failed, killed).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this registered model (name).
        #[arg(long)]
        model: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One run: status, parameters, inputs, artifacts and last metric values.
    Show {
        /// Run id or a unique prefix of it.
        id: String,
    },
    /// The log lines of a run.
    Logs {
        /// Run id or a unique prefix of it.
        id: String,
        /// Only lines at this level or more severe (error, warn, info, debug, trace).
        #[arg(long)]
        level: Option<String>,
    },
    /// The metrics of a run, every step.
    Metrics {
        /// Run id or a unique prefix of it.
        id: String,
        /// Only this metric.
        #[arg(long)]
        key: Option<String>,
    },
    /// Runs side by side: parameters and last metric values.
    Compare {
        /// Two or more run ids (or unique prefixes).
        #[arg(num_args = 2.., required = true)]
        ids: Vec<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum DeploymentsCmd {
    /// Deployments, newest first.
    List {
        /// Only the ones still serving.
        #[arg(long)]
        running: bool,
    },
}

pub fn runs(cmd: RunsCmd, ctx: &Ctx) -> anyhow::Result<()> {
    let ws = ctx.open()?;
    match cmd {
        RunsCmd::List {
            kind,
            status,
            model,
            limit,
        } => {
            let filter = RunFilter {
                kind: kind
                    .as_deref()
                    .map(|k| parse_one(k, RunKind::ALL))
                    .transpose()?,
                status: status
                    .as_deref()
                    .map(|s| parse_one(s, RunStatus::ALL))
                    .transpose()?,
                model,
                limit: Some(limit),
            };
            let runs = ws.list_runs(&filter)?;
            if ctx.json {
                return ctx.print_json(&runs);
            }
            if runs.is_empty() {
                println!("no runs");
                return Ok(());
            }
            print_runs(&runs);
            Ok(())
        }
        RunsCmd::Show { id } => {
            let d: RunDetail = ws.show_run(&id)?;
            if ctx.json {
                return ctx.print_json(&d);
            }
            let s = &d.summary;
            println!("run {} ({})", s.id, s.kind);
            println!("  status   {}", s.status);
            if let Some(e) = &s.error {
                println!("  error    {e}");
            }
            println!("  model    {}", table::opt(s.model.as_deref()));
            println!(
                "  started  {}  ended {}  ({})",
                table::time(s.started),
                table::opt(s.ended.map(table::time)),
                table::duration_ms(s.duration_ms)
            );
            println!("  pid      {}", s.pid);
            if let Some(h) = &d.inputs.calibration_hash {
                println!("  calibration sha256 {h}");
            }
            if d.inputs.options.as_object().is_some_and(|o| !o.is_empty()) {
                println!("  options  {}", d.inputs.options);
            }
            if !d.params.is_empty() {
                let mut t = table::new(&["parameter", "value"]);
                for (k, v) in &d.params {
                    t.add_row(vec![k, v]);
                }
                println!("{t}");
            }
            if !d.last_metrics.is_empty() {
                let mut t = table::new(&["metric", "last value", "step"]);
                for (k, p) in &d.last_metrics {
                    t.add_row(vec![
                        Cell::new(k),
                        table::num(fmt_value(p.value)),
                        table::num(p.step),
                    ]);
                }
                println!("{t}");
            }
            if !d.artifacts.is_empty() {
                let mut t = table::new(&["artifact", "sha256"]);
                for (k, h) in &d.artifacts {
                    t.add_row(vec![k, h]);
                }
                println!("{t}");
            }
            Ok(())
        }
        RunsCmd::Logs { id, level } => {
            let mut logs: Vec<LogLine> = ws.run_logs(&id)?;
            if let Some(l) = level {
                let max = parse_one(&l, LogLevel::ALL)?;
                logs.retain(|line| line.level <= max);
            }
            if ctx.json {
                return ctx.print_json(&logs);
            }
            for l in &logs {
                println!("{} {:<5} {}", l.at, l.level, l.message);
            }
            Ok(())
        }
        RunsCmd::Metrics { id, key } => {
            let mut m: BTreeMap<String, Vec<MetricPoint>> = ws.run_metrics(&id)?;
            if let Some(k) = &key {
                m.retain(|name, _| name == k);
                anyhow::ensure!(!m.is_empty(), "run {id} has no metric '{k}'");
            }
            if ctx.json {
                return ctx.print_json(&m);
            }
            let mut t = table::new(&["metric", "step", "value", "at"]);
            for (k, points) in &m {
                for p in points {
                    t.add_row(vec![
                        Cell::new(k),
                        table::num(p.step),
                        table::num(fmt_value(p.value)),
                        Cell::new(table::time(p.at)),
                    ]);
                }
            }
            println!("{t}");
            Ok(())
        }
        RunsCmd::Compare { ids } => {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let c: RunComparison = ws.compare_runs(&refs)?;
            if ctx.json {
                return ctx.print_json(&c);
            }
            let mut header = vec!["".to_string()];
            header.extend(c.runs.iter().map(|r| format!("{} ({})", r.id, r.kind)));
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
            t.set_header(header);
            let mark = |differs: bool, key: &str| {
                if differs {
                    format!("* {key}")
                } else {
                    format!("  {key}")
                }
            };
            let mut row = vec![Cell::new("  status")];
            row.extend(c.runs.iter().map(|r| Cell::new(r.status)));
            t.add_row(row);
            let mut row = vec![Cell::new("  version")];
            row.extend(
                c.runs
                    .iter()
                    .map(|r| Cell::new(table::opt(r.model.as_deref()))),
            );
            t.add_row(row);
            for p in &c.params {
                let mut row = vec![Cell::new(mark(p.differs, &p.key))];
                row.extend(p.values.iter().map(|v| Cell::new(table::opt(v.as_deref()))));
                t.add_row(row);
            }
            for m in &c.metrics {
                let mut row = vec![Cell::new(mark(m.differs, &m.key))];
                row.extend(
                    m.values
                        .iter()
                        .map(|v| table::num(table::opt(v.map(fmt_value)))),
                );
                t.add_row(row);
            }
            println!("{t}");
            println!("* differs between the runs");
            Ok(())
        }
    }
}

pub fn deployments(cmd: DeploymentsCmd, ctx: &Ctx) -> anyhow::Result<()> {
    let ws = ctx.open()?;
    let DeploymentsCmd::List { running } = cmd;
    let list: Vec<Deployment> = ws
        .list_deployments(running)
        .context("cannot list deployments")?;
    if ctx.json {
        return ctx.print_json(&list);
    }
    if list.is_empty() {
        println!("no deployments");
        return Ok(());
    }
    let mut t = table::new(&[
        "id", "model", "status", "address", "device", "bundle", "started", "ended", "run",
    ]);
    for d in &list {
        t.add_row(vec![
            table::num(d.id),
            Cell::new(format!("{}:{}", d.model_name, d.model_version)),
            Cell::new(d.status),
            Cell::new(&d.address),
            Cell::new(&d.device),
            Cell::new(table::short(&d.bundle_hash)),
            Cell::new(table::time(d.started)),
            Cell::new(table::opt(d.ended.map(table::time))),
            Cell::new(table::opt(d.run_id.as_deref())),
        ]);
    }
    println!("{t}");
    if list.iter().any(|d| d.status == DeploymentStatus::Failed) {
        for d in list.iter().filter(|d| d.error.is_some()) {
            println!(
                "deployment {}: {}",
                d.id,
                d.error.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn print_runs(runs: &[RunSummary]) {
    let mut t = table::new(&[
        "id", "kind", "status", "model", "started", "duration", "error",
    ]);
    for r in runs {
        let err = r
            .error
            .as_deref()
            .map(|e| {
                if e.chars().count() > 60 {
                    format!("{}…", e.chars().take(60).collect::<String>())
                } else {
                    e.to_string()
                }
            })
            .unwrap_or_default();
        t.add_row(vec![
            Cell::new(&r.id),
            Cell::new(r.kind),
            Cell::new(r.status),
            Cell::new(table::opt(r.model.as_deref())),
            Cell::new(table::time(r.started)),
            table::num(table::duration_ms(r.duration_ms)),
            Cell::new(err),
        ]);
    }
    println!("{t}");
}

/// One of a closed set of values; the error lists them all.
fn parse_one<T: Copy + std::fmt::Display + std::str::FromStr>(
    s: &str,
    all: &[T],
) -> anyhow::Result<T> {
    s.parse().map_err(|_| {
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid value '{s}': expected one of {}", names.join(", "))
    })
}

/// Metric values: whole numbers without decimals, others with up to 6 significant places.
fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}
