//! Deployments: which bundle of which model version is (or was) served where.

use super::clock::Timestamp;
use super::error::{Context, Result, WorkspaceError};
use super::{link_existing_artifact, Workspace};
use rusqlite::{params, TransactionBehavior};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Whether a deployment is serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    Running,
    Stopped,
    /// Ended by an error or by the death of the serving process.
    Failed,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Running => "running",
            DeploymentStatus::Stopped => "stopped",
            DeploymentStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeploymentStatus {
    type Err = WorkspaceError;
    fn from_str(s: &str) -> Result<DeploymentStatus> {
        match s {
            "running" => Ok(DeploymentStatus::Running),
            "stopped" => Ok(DeploymentStatus::Stopped),
            "failed" => Ok(DeploymentStatus::Failed),
            _ => Err(WorkspaceError::BadValue {
                what: "deployment status",
                value: s.to_string(),
            }),
        }
    }
}

/// What to record when a server starts.
#[derive(Clone, Debug)]
pub struct NewDeployment<'a> {
    pub model_name: &'a str,
    pub model_version: u32,
    /// Hash of the bundle being served; it must be in the artifact store.
    pub bundle_hash: &'a str,
    /// Device kind, e.g. `func` or `rtl`.
    pub device: &'a str,
    /// Listening address, e.g. `127.0.0.1:8080`.
    pub address: &'a str,
    /// The `serve` run; when its process dies, recovery marks the deployment failed too.
    pub run_id: Option<&'a str>,
}

/// A recorded deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deployment {
    pub id: i64,
    pub model_name: String,
    pub model_version: u32,
    pub bundle_hash: String,
    pub device: String,
    pub address: String,
    pub status: DeploymentStatus,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    pub run_id: Option<String>,
    pub error: Option<String>,
}

impl Workspace {
    /// Records a deployment that has just started serving; returns its id.
    pub fn record_deployment(&self, d: &NewDeployment<'_>) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| "cannot lock the workspace to record a deployment".into())?;
        link_existing_artifact(&tx, self.store(), d.bundle_hash)?;
        tx.execute(
            "INSERT INTO deployments (model_name, model_version, bundle_hash, device, address,
                                      status, started_ms, run_id)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7)",
            params![
                d.model_name,
                d.model_version,
                d.bundle_hash,
                d.device,
                d.address,
                Timestamp::now().millis(),
                d.run_id
            ],
        )
        .ctx(|| {
            format!(
                "cannot record the deployment of {}:{}",
                d.model_name, d.model_version
            )
        })?;
        let id = tx.last_insert_rowid();
        tx.commit().ctx(|| "cannot record a deployment".into())?;
        Ok(id)
    }

    /// Deployments, newest first; only running ones if `running_only`.
    pub fn list_deployments(&self, running_only: bool) -> Result<Vec<Deployment>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id, model_name, model_version, bundle_hash, device, address, status,
                        started_ms, ended_ms, run_id, error
                 FROM deployments WHERE (?1 = 0 OR status = 'running')
                 ORDER BY started_ms DESC, id DESC",
            )
            .ctx(|| "cannot list deployments".into())?;
        let rows = st
            .query_map([running_only], |r| {
                Ok((
                    Deployment {
                        id: r.get(0)?,
                        model_name: r.get(1)?,
                        model_version: r.get(2)?,
                        bundle_hash: r.get(3)?,
                        device: r.get(4)?,
                        address: r.get(5)?,
                        status: DeploymentStatus::Running,
                        started: Timestamp(r.get(7)?),
                        ended: r.get::<_, Option<i64>>(8)?.map(Timestamp),
                        run_id: r.get(9)?,
                        error: r.get(10)?,
                    },
                    r.get::<_, String>(6)?,
                ))
            })
            .ctx(|| "cannot list deployments".into())?;
        let mut out = Vec::new();
        for row in rows {
            let (mut d, status) = row.ctx(|| "cannot list deployments".into())?;
            d.status = status.parse()?;
            out.push(d);
        }
        Ok(out)
    }

    /// Marks a running deployment stopped; returns whether it was running.
    pub fn mark_deployment_stopped(&self, id: i64) -> Result<bool> {
        self.end_deployment(id, DeploymentStatus::Stopped, None)
    }

    /// Marks a running deployment failed; returns whether it was running.
    pub fn mark_deployment_failed(&self, id: i64, error: &str) -> Result<bool> {
        self.end_deployment(id, DeploymentStatus::Failed, Some(error))
    }

    fn end_deployment(
        &self,
        id: i64,
        status: DeploymentStatus,
        error: Option<&str>,
    ) -> Result<bool> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE deployments SET status = ?2, ended_ms = ?3, error = ?4
                 WHERE id = ?1 AND status = 'running'",
                params![id, status.as_str(), Timestamp::now().millis(), error],
            )
            .ctx(|| format!("cannot end deployment {id}"))?;
        if n == 0 {
            let exists: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM deployments WHERE id = ?1)",
                    [id],
                    |r| r.get(0),
                )
                .ctx(|| format!("cannot read deployment {id}"))?;
            if !exists {
                return Err(WorkspaceError::UnknownDeployment { id });
            }
        }
        Ok(n > 0)
    }
}
