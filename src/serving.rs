//! `sinter serve` with the workspace: what is served is recorded as a run and, for a
//! registered model, as a deployment.
//!
//! SIGTERM stops the server gracefully: the run finishes and the deployment is `stopped`.
//! Ctrl-C also drains the requests in flight, but marks the run `killed` (the deployment is
//! `stopped`). A server that dies without either (SIGKILL, a crash) leaves both `running`
//! until the next command opens the workspace and marks them `failed`.

use crate::ctx::Ctx;
use crate::resolve::{Opened, Source};
use crate::serve::{serve_bundle, ServeArgs, Shutdown};
use crate::workspace::{LogLevel, NewDeployment, RunKind};

pub fn main(a: ServeArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let device = a.device.device.to_string();
    let Opened { bundle, ws, source } = crate::resolve::open_target(ctx, &a.model, &a.build)?;
    let inputs = source.run_inputs();
    let served = match source {
        Source::File(path) => Served::File(path),
        Source::Model {
            version,
            bundle_hash,
            ..
        } => Served::Model {
            name: version.name.clone(),
            version: version.version,
            hash: bundle_hash,
        },
    };
    let label = a.model.clone();
    let Some(ws) = ws else {
        serve_bundle(bundle, &label, &a, |_| Ok(()))?;
        return Ok(());
    };
    let run = ws.start_run(
        RunKind::Serve,
        [
            ("model", a.model.clone()),
            ("device", device.clone()),
            ("host", a.host.clone()),
            ("port", a.port.to_string()),
        ],
        inputs,
    )?;
    match &served {
        Served::File(p) => {
            run.artifact_file("bundle", p)?;
        }
        Served::Model { hash, .. } => run.artifact_hash("bundle", hash)?,
    }
    let mut deployment = None;
    let result = serve_bundle(bundle, &label, &a, |addr| {
        let address = addr.to_string();
        run.log(LogLevel::Info, &format!("listening on http://{address}"))?;
        if let Served::Model {
            name,
            version,
            hash,
        } = &served
        {
            let id = ws.record_deployment(&NewDeployment {
                model_name: name,
                model_version: *version,
                bundle_hash: hash,
                device: &device,
                address: &address,
                run_id: Some(run.id()),
            })?;
            deployment = Some(id);
        }
        Ok(())
    });
    match result {
        Ok(why) => {
            if let Some(id) = deployment {
                ws.mark_deployment_stopped(id)?;
            }
            if why == Shutdown::Interrupted {
                ws.mark_killed(run.id())?;
            }
            run.log(LogLevel::Info, &format!("stopped ({why:?})"))?;
            run.finish()?;
            Ok(())
        }
        Err(e) => {
            let msg = format!("{e:#}");
            if let Some(id) = deployment {
                ws.mark_deployment_failed(id, &msg)?;
            }
            run.fail(&msg)?;
            Err(e)
        }
    }
}

/// What is being served.
enum Served {
    File(std::path::PathBuf),
    Model {
        name: String,
        version: u32,
        hash: String,
    },
}
