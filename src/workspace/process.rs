//! Is the process that owns a run still alive?
//!
//! A pid alone is not enough: pids are recycled, so a run whose owner died could look alive
//! because an unrelated process got the same pid. Each run therefore also records a start
//! token — the boot id and the process start time from `/proc/<pid>/stat` — and a process only
//! counts as the owner if both match.

use std::fs;

/// What is known about a recorded owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Cannot tell on this platform; the run is left alone.
    Unknown,
}

/// The start token of a process, or an empty string where the platform has no `/proc`.
pub fn start_token(pid: u32) -> String {
    match (boot_id(), start_time(pid)) {
        (Some(b), Some(t)) => format!("{b}/{t}"),
        _ => String::new(),
    }
}

/// This process's pid and start token.
pub fn current() -> (u32, String) {
    let pid = std::process::id();
    (pid, start_token(pid))
}

/// Whether the process recorded as (`pid`, `token`) still runs.
pub fn liveness(pid: u32, token: &str) -> Liveness {
    if !cfg!(target_os = "linux") {
        return Liveness::Unknown;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Liveness::Dead;
    };
    let Some(fields) = fields_after_comm(&stat) else {
        return Liveness::Unknown;
    };
    // A zombie has finished running; only its parent has not collected it yet.
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return Liveness::Dead;
    }
    if token.is_empty() {
        return Liveness::Alive;
    }
    if start_token(pid) == token {
        Liveness::Alive
    } else {
        Liveness::Dead
    }
}

/// The id of the current boot: start times are only comparable within one boot.
fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at field 3 (state); start time is field 22.
    fields_after_comm(&stat)?.get(22 - 3)?.parse().ok()
}

/// The fields after `(comm)`, which may itself contain spaces and parentheses.
fn fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        let (pid, token) = current();
        if cfg!(target_os = "linux") {
            assert!(!token.is_empty());
            assert_eq!(liveness(pid, &token), Liveness::Alive);
            // Same pid, different start: a recycled pid.
            assert_eq!(liveness(pid, "other-boot/1"), Liveness::Dead);
            assert_eq!(liveness(u32::MAX - 1, &token), Liveness::Dead);
        }
    }

    #[test]
    fn parses_comm_with_spaces() {
        let f = fields_after_comm("12 (a (b) c) S 1 2").unwrap();
        assert_eq!(f, vec!["S", "1", "2"]);
    }
}
