//! Ctrl-C for the commands other than `serve`: the runs this process has open are marked
//! killed before it exits, so an interrupted compile never shows up as running or failed.

use crate::workspace::{RunHandle, Workspace};
use std::sync::Mutex;

/// Runs currently open in this process.
static OPEN: Mutex<Vec<(Workspace, String)>> = Mutex::new(Vec::new());

/// Exit status of a process ended by SIGINT, as shells report it.
const INTERRUPTED: i32 = 130;

/// Installs the handler. Failing to install it only loses the "killed" status (the run is then
/// marked failed by the next command's recovery), so it is a warning.
pub fn install() {
    if let Err(e) = ctrlc::set_handler(on_interrupt) {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}

fn on_interrupt() {
    let open = OPEN
        .lock()
        .map(|g| g.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    for (ws, id) in open {
        match ws.mark_killed(&id) {
            Ok(_) => eprintln!("interrupted: run {id} marked killed"),
            Err(e) => eprintln!("interrupted: cannot mark run {id} killed: {e}"),
        }
    }
    std::process::exit(INTERRUPTED);
}

/// Keeps a run on the list of open runs while alive.
#[must_use]
pub struct Tracked {
    id: String,
}

/// Puts a run on the list until the returned guard is dropped.
pub fn track(run: &RunHandle) -> Tracked {
    let mut g = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    g.push((run.workspace().clone(), run.id().to_string()));
    Tracked {
        id: run.id().to_string(),
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut g = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|(_, id)| *id != self.id);
    }
}
