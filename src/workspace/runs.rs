//! Runs: one record per compile, calibration, run, benchmark or server session, with its
//! immutable parameters, append-only metrics, logs, output artifacts and a snapshot of inputs.
//!
//! A run is `running` only while its owning process lives. The process is identified by pid and
//! start token, so the next `Workspace::open` can tell a crashed owner from a live one and mark
//! its runs failed instead of leaving them running forever.

use super::clock::{time_ordered_id, Timestamp};
use super::error::{Context, Result, WorkspaceError};
use super::models::ModelVersion;
use super::names::validate_key;
use super::process::{self, Liveness};
use super::{link_artifact, link_existing_artifact, optional, Workspace};
use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = WorkspaceError;
            fn from_str(s: &str) -> Result<$name> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(WorkspaceError::BadValue { what: $what, value: s.to_string() }),
                }
            }
        }
    };
}

text_enum!(
    /// What a run did.
    RunKind, "run kind" {
        Compile => "compile",
        Calibrate => "calibrate",
        Run => "run",
        Bench => "bench",
        Serve => "serve",
    }
);

text_enum!(
    /// Where a run is in its life. Only `Running` ever changes.
    RunStatus, "run status" {
        Running => "running",
        Finished => "finished",
        /// Ended with an error, or its process vanished.
        Failed => "failed",
        /// Stopped by the user (Ctrl-C).
        Killed => "killed",
    }
);

text_enum!(
    /// Severity of a captured log line.
    LogLevel, "log level" {
        Error => "error",
        Warn => "warn",
        Info => "info",
        Debug => "debug",
        Trace => "trace",
    }
);

/// What a run started from, frozen at its start.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunInputs {
    pub model_name: Option<String>,
    pub model_version: Option<u32>,
    /// sha256 of the calibration data, if any.
    pub calibration_hash: Option<String>,
    /// Options as given, e.g. the CLI flags.
    pub options: serde_json::Value,
}

impl Default for RunInputs {
    fn default() -> RunInputs {
        RunInputs {
            model_name: None,
            model_version: None,
            calibration_hash: None,
            options: serde_json::Value::Object(Default::default()),
        }
    }
}

impl RunInputs {
    /// Inputs naming one resolved model version.
    pub fn for_version(v: &ModelVersion) -> RunInputs {
        RunInputs {
            model_name: Some(v.name.clone()),
            model_version: Some(v.version),
            ..RunInputs::default()
        }
    }
}

/// A line of `runs list`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub kind: RunKind,
    pub status: RunStatus,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    /// `name:version` of the model, if the run had one.
    pub model: Option<String>,
    pub error: Option<String>,
    pub pid: u32,
}

/// Everything about one run except its logs and metric histories.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub params: BTreeMap<String, String>,
    pub inputs: RunInputs,
    /// Output name → artifact hash.
    pub artifacts: BTreeMap<String, String>,
    /// The last point (highest step, then latest) of every metric.
    pub last_metrics: BTreeMap<String, MetricPoint>,
}

/// One value of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MetricPoint {
    pub value: f64,
    pub step: i64,
    pub at: Timestamp,
}

/// One captured log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    pub at: Timestamp,
}

/// Filters of `runs list`; `None` means any.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub kind: Option<RunKind>,
    pub status: Option<RunStatus>,
    /// Model name.
    pub model: Option<String>,
    pub limit: Option<usize>,
}

/// Several runs side by side: one row per parameter or metric key, one column per run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunComparison {
    pub runs: Vec<RunSummary>,
    pub params: Vec<ComparisonRow<String>>,
    /// Last value of each metric.
    pub metrics: Vec<ComparisonRow<f64>>,
}

/// A key and its value in each compared run (`None` where a run lacks it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparisonRow<T> {
    pub key: String,
    pub values: Vec<Option<T>>,
    /// Whether the runs disagree, so a table can highlight what changed.
    pub differs: bool,
}

/// A live run owned by this process. Dropping it before [`finish`](RunHandle::finish) or
/// [`fail`](RunHandle::fail) marks it failed, so an early `?` return or a panic is recorded as
/// what it is.
#[derive(Debug)]
pub struct RunHandle {
    ws: Workspace,
    id: String,
    closed: bool,
}

const SUMMARY_SELECT: &str = "SELECT id, kind, status, started_ms, ended_ms, model_name,
        model_version, error, pid FROM runs";

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawSummary> {
    Ok(RawSummary {
        id: r.get(0)?,
        kind: r.get(1)?,
        status: r.get(2)?,
        started: r.get(3)?,
        ended: r.get(4)?,
        model_name: r.get(5)?,
        model_version: r.get(6)?,
        error: r.get(7)?,
        pid: r.get(8)?,
    })
}

struct RawSummary {
    id: String,
    kind: String,
    status: String,
    started: i64,
    ended: Option<i64>,
    model_name: Option<String>,
    model_version: Option<u32>,
    error: Option<String>,
    pid: u32,
}

impl RawSummary {
    fn parse(self) -> Result<RunSummary> {
        let model = match (self.model_name, self.model_version) {
            (Some(n), Some(v)) => Some(format!("{n}:{v}")),
            (Some(n), None) => Some(n),
            _ => None,
        };
        Ok(RunSummary {
            kind: self.kind.parse()?,
            status: self.status.parse()?,
            started: Timestamp(self.started),
            ended: self.ended.map(Timestamp),
            duration_ms: self.ended.map(|e| e - self.started),
            model,
            error: self.error,
            pid: self.pid,
            id: self.id,
        })
    }
}

fn run_summary(conn: &Connection, id: &str) -> Result<RunSummary> {
    optional(
        conn.query_row(
            &format!("{SUMMARY_SELECT} WHERE id = ?1"),
            [id],
            summary_row,
        ),
        || format!("cannot read run {id}"),
    )?
    .ok_or_else(|| WorkspaceError::UnknownRun { id: id.to_string() })?
    .parse()
}

/// Ends a run that is still running; a run already ended (killed by a signal handler, or
/// failed by recovery) keeps its status. Returns the final status.
fn close(conn: &Connection, id: &str, status: RunStatus, error: Option<&str>) -> Result<RunStatus> {
    let now = Timestamp::now().millis();
    let ctx = || format!("cannot end run {id}");
    conn.execute(
        "UPDATE runs SET status = ?2, ended_ms = ?3, error = ?4
         WHERE id = ?1 AND status = 'running'",
        params![id, status.as_str(), now, error],
    )
    .ctx(ctx)?;
    if let Some(msg) = error {
        conn.execute(
            "INSERT INTO run_logs (run_id, level, message, at_ms) VALUES (?1, 'error', ?2, ?3)",
            params![id, msg, now],
        )
        .ctx(ctx)?;
    }
    let final_status: String = conn
        .query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))
        .ctx(ctx)?;
    final_status.parse()
}

impl Workspace {
    /// Starts a run owned by this process.
    pub fn start_run<I, K, V>(
        &self,
        kind: RunKind,
        params: I,
        inputs: RunInputs,
    ) -> Result<RunHandle>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let params: Vec<(String, String)> = params
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        for (k, _) in &params {
            validate_key("parameter name", k)?;
        }
        if let Some(h) = &inputs.calibration_hash {
            super::store::check_hash(h)?;
        }
        let options = serde_json::to_string(&inputs.options)
            .ctx(|| "cannot encode the run options".into())?;
        let (pid, token) = process::current();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| format!("cannot lock the workspace to start a {kind} run"))?;
        let now = Timestamp::now();
        let mut id = time_ordered_id(now);
        for attempt in 0.. {
            let inserted = tx
                .execute(
                    "INSERT INTO runs (id, kind, status, started_ms, pid, start_token, model_name,
                                       model_version, calibration_hash, options)
                     VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (id) DO NOTHING",
                    params![
                        id,
                        kind.as_str(),
                        now.millis(),
                        pid,
                        token,
                        inputs.model_name,
                        inputs.model_version,
                        inputs.calibration_hash,
                        options
                    ],
                )
                .ctx(|| format!("cannot start a {kind} run"))?;
            if inserted == 1 {
                break;
            }
            if attempt >= 16 {
                return Err(WorkspaceError::BadValue {
                    what: "run id (no free id found)",
                    value: id,
                });
            }
            id = time_ordered_id(now);
        }
        for (k, v) in &params {
            tx.execute(
                "INSERT INTO run_params (run_id, key, value) VALUES (?1, ?2, ?3)",
                params![id, k, v],
            )
            .ctx(|| format!("cannot record parameter '{k}' of run {id} (given twice?)"))?;
        }
        tx.commit().ctx(|| format!("cannot start a {kind} run"))?;
        drop(conn);
        Ok(RunHandle {
            ws: self.clone(),
            id,
            closed: false,
        })
    }

    /// Marks a running run killed (for a Ctrl-C handler, which may run on another thread
    /// while the run's handle is still alive). Returns whether the run was running.
    pub fn mark_killed(&self, id: &str) -> Result<bool> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE runs SET status = 'killed', ended_ms = ?2, error = 'interrupted'
                 WHERE id = ?1 AND status = 'running'",
                params![id, Timestamp::now().millis()],
            )
            .ctx(|| format!("cannot mark run {id} killed"))?;
        Ok(n > 0)
    }

    /// Marks failed every run whose owning process no longer exists, and the deployments
    /// those runs were serving. Called by `open`; returns how many runs it ended.
    pub fn recover_crashed_runs(&self) -> Result<usize> {
        let conn = self.conn();
        let running: Vec<(String, u32, String)> = {
            let mut st = conn
                .prepare("SELECT id, pid, start_token FROM runs WHERE status = 'running'")
                .ctx(|| "cannot list running runs".into())?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .ctx(|| "cannot list running runs".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "cannot list running runs".into())?
        };
        let mut ended = 0;
        for (id, pid, token) in running {
            if process::liveness(pid, &token) != Liveness::Dead {
                continue;
            }
            let msg =
                format!("crashed: the owning process (pid {pid}) exited without ending the run");
            if close(&conn, &id, RunStatus::Failed, Some(&msg))? == RunStatus::Failed {
                ended += 1;
            }
            conn.execute(
                "UPDATE deployments SET status = 'failed', ended_ms = ?2, error = ?3
                 WHERE run_id = ?1 AND status = 'running'",
                params![id, Timestamp::now().millis(), msg],
            )
            .ctx(|| format!("cannot end the deployments of run {id}"))?;
        }
        Ok(ended)
    }

    /// The full id of the run whose id is or starts with `prefix`.
    pub fn resolve_run_id(&self, prefix: &str) -> Result<String> {
        let conn = self.conn();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(WorkspaceError::UnknownRun {
                id: prefix.to_string(),
            });
        }
        let mut st = conn
            .prepare_cached(
                "SELECT id FROM runs WHERE id >= ?1 AND id < ?1 || '~' ORDER BY id LIMIT 6",
            )
            .ctx(|| format!("cannot look up run {prefix}"))?;
        let rows = st
            .query_map([prefix.to_ascii_lowercase()], |r| r.get::<_, String>(0))
            .ctx(|| format!("cannot look up run {prefix}"))?;
        let ids: Vec<String> = rows
            .collect::<rusqlite::Result<_>>()
            .ctx(|| format!("cannot look up run {prefix}"))?;
        match ids.len() {
            0 => Err(WorkspaceError::UnknownRun {
                id: prefix.to_string(),
            }),
            1 => Ok(ids.into_iter().next().unwrap_or_default()),
            _ if ids.iter().any(|i| i == prefix) => Ok(prefix.to_string()),
            _ => Err(WorkspaceError::AmbiguousRun {
                prefix: prefix.to_string(),
                candidates: ids,
            }),
        }
    }

    /// Runs matching a filter, newest first.
    pub fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let conn = self.conn();
        let limit = filter.limit.map(|l| l as i64).unwrap_or(-1);
        let mut st = conn
            .prepare_cached(&format!(
                "{SUMMARY_SELECT}
                 WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR status = ?2)
                   AND (?3 IS NULL OR model_name = ?3)
                 ORDER BY started_ms DESC, id DESC LIMIT ?4"
            ))
            .ctx(|| "cannot list runs".into())?;
        let rows = st
            .query_map(
                params![
                    filter.kind.map(RunKind::as_str),
                    filter.status.map(RunStatus::as_str),
                    filter.model,
                    limit
                ],
                summary_row,
            )
            .ctx(|| "cannot list runs".into())?;
        let raws: Vec<RawSummary> = rows
            .collect::<rusqlite::Result<_>>()
            .ctx(|| "cannot list runs".into())?;
        raws.into_iter().map(RawSummary::parse).collect()
    }

    /// One run (id or unique prefix).
    pub fn show_run(&self, id: &str) -> Result<RunDetail> {
        let id = self.resolve_run_id(id)?;
        let conn = self.conn();
        let summary = run_summary(&conn, &id)?;
        let ctx = || format!("cannot read run {id}");
        let (calibration_hash, options): (Option<String>, String) = conn
            .query_row(
                "SELECT calibration_hash, options FROM runs WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx(ctx)?;
        let (model_name, model_version): (Option<String>, Option<u32>) = conn
            .query_row(
                "SELECT model_name, model_version FROM runs WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx(ctx)?;
        let options = serde_json::from_str(&options)
            .ctx(|| format!("stored options of run {id} are not valid JSON"))?;
        let params = pairs(
            &conn,
            "SELECT key, value FROM run_params WHERE run_id = ?1 ORDER BY key",
            &id,
        )?;
        let artifacts = pairs(
            &conn,
            "SELECT name, hash FROM run_artifacts WHERE run_id = ?1 ORDER BY name",
            &id,
        )?;
        let last_metrics = last_metrics(&conn, &id)?;
        Ok(RunDetail {
            summary,
            params,
            inputs: RunInputs {
                model_name,
                model_version,
                calibration_hash,
                options,
            },
            artifacts,
            last_metrics,
        })
    }

    /// The captured log lines of a run, oldest first.
    pub fn run_logs(&self, id: &str) -> Result<Vec<LogLine>> {
        let id = self.resolve_run_id(id)?;
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT level, message, at_ms FROM run_logs WHERE run_id = ?1 ORDER BY id",
            )
            .ctx(|| format!("cannot read the logs of run {id}"))?;
        let rows = st
            .query_map([&id], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
            })
            .ctx(|| format!("cannot read the logs of run {id}"))?;
        let mut out = Vec::new();
        for row in rows {
            let (level, message, at) = row.ctx(|| format!("cannot read the logs of run {id}"))?;
            out.push(LogLine {
                level: level.parse()?,
                message,
                at: Timestamp(at),
            });
        }
        Ok(out)
    }

    /// Every metric of a run with its points in step order.
    pub fn run_metrics(&self, id: &str) -> Result<BTreeMap<String, Vec<MetricPoint>>> {
        let id = self.resolve_run_id(id)?;
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT key, value, step, at_ms FROM run_metrics WHERE run_id = ?1
                 ORDER BY key, step, id",
            )
            .ctx(|| format!("cannot read the metrics of run {id}"))?;
        let rows = st
            .query_map([&id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    MetricPoint {
                        value: r.get(1)?,
                        step: r.get(2)?,
                        at: Timestamp(r.get(3)?),
                    },
                ))
            })
            .ctx(|| format!("cannot read the metrics of run {id}"))?;
        let mut out: BTreeMap<String, Vec<MetricPoint>> = BTreeMap::new();
        for row in rows {
            let (k, p) = row.ctx(|| format!("cannot read the metrics of run {id}"))?;
            out.entry(k).or_default().push(p);
        }
        Ok(out)
    }

    /// Several runs' parameters and last metrics side by side, in the order given.
    pub fn compare_runs(&self, ids: &[&str]) -> Result<RunComparison> {
        let details = ids
            .iter()
            .map(|id| self.show_run(id))
            .collect::<Result<Vec<_>>>()?;
        let param_keys: BTreeSet<&String> = details.iter().flat_map(|d| d.params.keys()).collect();
        let metric_keys: BTreeSet<&String> =
            details.iter().flat_map(|d| d.last_metrics.keys()).collect();
        let params = param_keys
            .into_iter()
            .map(|k| {
                let values: Vec<Option<String>> =
                    details.iter().map(|d| d.params.get(k).cloned()).collect();
                ComparisonRow {
                    key: k.clone(),
                    differs: values.windows(2).any(|w| w[0] != w[1]),
                    values,
                }
            })
            .collect();
        let metrics = metric_keys
            .into_iter()
            .map(|k| {
                let values: Vec<Option<f64>> = details
                    .iter()
                    .map(|d| d.last_metrics.get(k).map(|p| p.value))
                    .collect();
                ComparisonRow {
                    key: k.clone(),
                    differs: values.windows(2).any(|w| w[0] != w[1]),
                    values,
                }
            })
            .collect();
        Ok(RunComparison {
            runs: details.into_iter().map(|d| d.summary).collect(),
            params,
            metrics,
        })
    }
}

fn pairs(conn: &Connection, sql: &str, id: &str) -> Result<BTreeMap<String, String>> {
    let mut st = conn
        .prepare_cached(sql)
        .ctx(|| format!("cannot read run {id}"))?;
    let rows = st
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx(|| format!("cannot read run {id}"))?;
    rows.collect::<rusqlite::Result<_>>()
        .ctx(|| format!("cannot read run {id}"))
}

fn last_metrics(conn: &Connection, id: &str) -> Result<BTreeMap<String, MetricPoint>> {
    let mut st = conn
        .prepare_cached(
            "SELECT key, value, step, at_ms FROM (
                 SELECT key, value, step, at_ms,
                        row_number() OVER (PARTITION BY key ORDER BY step DESC, id DESC) AS rn
                 FROM run_metrics WHERE run_id = ?1)
             WHERE rn = 1",
        )
        .ctx(|| format!("cannot read the metrics of run {id}"))?;
    let rows = st
        .query_map([id], |r| {
            Ok((
                r.get(0)?,
                MetricPoint {
                    value: r.get(1)?,
                    step: r.get(2)?,
                    at: Timestamp(r.get(3)?),
                },
            ))
        })
        .ctx(|| format!("cannot read the metrics of run {id}"))?;
    rows.collect::<rusqlite::Result<_>>()
        .ctx(|| format!("cannot read the metrics of run {id}"))
}

impl RunHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn workspace(&self) -> &Workspace {
        &self.ws
    }

    /// Captures one log line.
    pub fn log(&self, level: LogLevel, message: &str) -> Result<()> {
        self.ws
            .conn()
            .execute(
                "INSERT INTO run_logs (run_id, level, message, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![self.id, level.as_str(), message, Timestamp::now().millis()],
            )
            .ctx(|| format!("cannot log to run {}", self.id))?;
        Ok(())
    }

    /// Appends one value of a metric at a step (an epoch, a batch index, a request count).
    pub fn metric(&self, key: &str, value: f64, step: i64) -> Result<()> {
        validate_key("metric name", key)?;
        if value.is_nan() {
            return Err(WorkspaceError::BadValue {
                what: "metric value (NaN cannot be stored)",
                value: format!("{key}={value}"),
            });
        }
        self.ws
            .conn()
            .execute(
                "INSERT INTO run_metrics (run_id, key, value, step, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![self.id, key, value, step, Timestamp::now().millis()],
            )
            .ctx(|| format!("cannot record metric '{key}' of run {}", self.id))?;
        Ok(())
    }

    /// Stores bytes as an output of the run; returns their hash.
    pub fn artifact(&self, name: &str, bytes: &[u8]) -> Result<String> {
        let store = self.ws.store();
        let stored = store.put(bytes)?;
        self.link(name, &stored.hash, |tx| {
            link_artifact(tx, store, &stored, || store.put(bytes))
        })?;
        Ok(stored.hash)
    }

    /// Stores a file as an output of the run; returns its hash.
    pub fn artifact_file(&self, name: &str, path: &Path) -> Result<String> {
        let store = self.ws.store();
        let stored = store.put_file(path)?;
        self.link(name, &stored.hash, |tx| {
            link_artifact(tx, store, &stored, || store.put_file(path))
        })?;
        Ok(stored.hash)
    }

    /// Names an artifact already in the store (a reused bundle, say) as an output of the run.
    pub fn artifact_hash(&self, name: &str, hash: &str) -> Result<()> {
        let store = self.ws.store();
        self.link(name, hash, |tx| link_existing_artifact(tx, store, hash))
    }

    /// Records `name → hash` in one transaction with the artifact row, so the output never
    /// points at an unrecorded file. Output names are unique per run: outputs are immutable.
    fn link(
        &self,
        name: &str,
        hash: &str,
        link: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()>,
    ) -> Result<()> {
        validate_key("artifact name", name)?;
        let mut conn = self.ws.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| {
                format!(
                    "cannot lock the workspace to add an artifact to run {}",
                    self.id
                )
            })?;
        link(&tx)?;
        let existing: Option<String> = optional(
            tx.query_row(
                "SELECT hash FROM run_artifacts WHERE run_id = ?1 AND name = ?2",
                params![self.id, name],
                |r| r.get(0),
            ),
            || format!("cannot read the artifacts of run {}", self.id),
        )?;
        if let Some(existing) = existing {
            return Err(WorkspaceError::BadValue {
                what: "artifact name (already used by this run)",
                value: format!("{name} = {existing}"),
            });
        }
        tx.execute(
            "INSERT INTO run_artifacts (run_id, name, hash) VALUES (?1, ?2, ?3)",
            params![self.id, name, hash],
        )
        .ctx(|| format!("cannot add artifact '{name}' to run {}", self.id))?;
        tx.commit()
            .ctx(|| format!("cannot add an artifact to run {}", self.id))?;
        Ok(())
    }

    /// Ends the run successfully. Returns the final status, which is not `Finished` if the run
    /// was meanwhile marked killed.
    pub fn finish(mut self) -> Result<RunStatus> {
        self.closed = true;
        close(&self.ws.conn(), &self.id, RunStatus::Finished, None)
    }

    /// Ends the run as failed with a message (also captured as an error log line).
    pub fn fail(mut self, message: &str) -> Result<RunStatus> {
        self.closed = true;
        close(&self.ws.conn(), &self.id, RunStatus::Failed, Some(message))
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        if !self.closed {
            let msg = if std::thread::panicking() {
                "the run panicked"
            } else {
                "the run ended without being finished"
            };
            if let Err(e) = close(&self.ws.conn(), &self.id, RunStatus::Failed, Some(msg)) {
                tracing::warn!("cannot record the end of run {}: {e}", self.id);
            }
        }
    }
}
