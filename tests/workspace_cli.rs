//! The workspace through the `sinter` command line: registry, compile-or-reuse by reference,
//! recorded runs and deployments, crash recovery, and the errors users hit.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{fixture, succeeded, text, TempDir};

/// A `sinter` command with the workspace in `dir`, run from `dir`.
fn cmd(dir: &TempDir, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sinter"));
    c.current_dir(&dir.0)
        .arg("--workspace")
        .arg(dir.path("ws"))
        .args(args)
        .env("SINTER_LOG", "warn")
        .env_remove("SINTER_WORKSPACE");
    c
}

fn sinter(dir: &TempDir, args: &[&str]) -> Output {
    cmd(dir, args).output().expect("run sinter")
}

/// Runs a command that must succeed.
fn ok(dir: &TempDir, args: &[&str]) -> String {
    succeeded(args, sinter(dir, args))
}

/// Runs a command with `--json` that must succeed and parses its output.
fn json(dir: &TempDir, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(dir, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("sinter {args:?}: {e}\n{out}"))
}

/// Runs a command that must fail; returns its stderr.
fn fails(dir: &TempDir, args: &[&str]) -> String {
    let o = sinter(dir, args);
    assert!(
        !o.status.success(),
        "sinter {args:?} should have failed:\n{}",
        text(&o.stdout)
    );
    text(&o.stderr)
}

fn init_with_digits(dir: &TempDir, versions: usize) {
    ok(dir, &["init"]);
    for _ in 0..versions {
        ok(
            dir,
            &[
                "model",
                "register",
                &fixture("mlp.onnx"),
                "--name",
                "digits",
            ],
        );
    }
}

fn compile_runs(dir: &TempDir) -> Vec<Value> {
    json(dir, &["runs", "list", "--kind", "compile"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn registry_compile_reuse_run_and_run_queries() {
    let dir = TempDir::new("flow");
    let out = ok(&dir, &["init"]);
    assert!(out.contains("initialised workspace at"), "{out}");
    let again = json(&dir, &["init"]);
    assert_eq!(again["created"], false);
    assert!(again["workspace"].as_str().unwrap().ends_with("ws"));

    // Two registrations of the same file: two versions, with the signature read from the ONNX.
    let v1 = json(
        &dir,
        &[
            "model",
            "register",
            &fixture("mlp.onnx"),
            "--name",
            "digits",
            "--tag",
            "team=vision",
            "--description",
            "8x8 digits MLP",
        ],
    );
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["tags"]["team"], "vision");
    let input = &v1["signature"]["inputs"][0];
    assert_eq!(input["dtype"], "float32");
    assert_eq!(input["shape"][1], 64);
    assert_eq!(v1["signature"]["outputs"][0]["shape"][1], 10);
    let v2 = json(
        &dir,
        &[
            "model",
            "register",
            &fixture("mlp.onnx"),
            "--name",
            "digits",
        ],
    );
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["source_hash"], v1["source_hash"]);

    // Aliases move, and the moves are kept.
    let a = json(&dir, &["model", "alias", "digits", "production", "1"]);
    assert_eq!(a["version"], 1);
    assert!(a["previous"].is_null());
    let a = json(&dir, &["model", "alias", "digits", "production", "2"]);
    assert_eq!(a["previous"], 1);
    assert_eq!(a["version"], 2);
    let shown = json(&dir, &["model", "show", "digits"]);
    let history = shown["alias_history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["from"], 1);
    assert_eq!(history[1]["to"], 2);
    assert_eq!(shown["aliases"]["production"], 2);
    assert_eq!(shown["description"], "8x8 digits MLP");
    let table = ok(&dir, &["model", "show", "digits"]);
    assert!(table.contains("alias history"), "{table}");
    let list = json(&dir, &["model", "list"]);
    assert_eq!(list[0]["name"], "digits");
    assert_eq!(list[0]["latest_version"], 2);

    // Tags on the model and on a version.
    let t = json(&dir, &["model", "tag", "digits", "owner=me"]);
    assert_eq!(t["tags"]["owner"], "me");
    let t = json(
        &dir,
        &["model", "tag", "digits:1", "stage=old", "--remove", "team"],
    );
    assert_eq!(t["tags"], serde_json::json!({ "stage": "old" }));

    // Compile by reference twice: the second reuses the bundle and both are runs.
    let copy = dir.path("copy.sntr");
    let first = json(
        &dir,
        &[
            "compile",
            "digits@production",
            "--calib",
            &fixture("calib.npy"),
        ],
    );
    assert_eq!(first["reused"], false);
    assert_eq!(first["model"], "digits:2");
    let second = json(
        &dir,
        &[
            "compile",
            "digits@production",
            "--calib",
            &fixture("calib.npy"),
            "-o",
            copy.to_str().unwrap(),
        ],
    );
    assert_eq!(second["reused"], true);
    assert_eq!(second["bundle_hash"], first["bundle_hash"]);
    assert_eq!(second["compiled_by"], first["run_id"]);
    assert_ne!(second["run_id"], first["run_id"]);
    let stored = std::fs::read(first["bundle_path"].as_str().unwrap()).unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), stored);
    let text_out = ok(
        &dir,
        &[
            "compile",
            "digits@production",
            "--calib",
            &fixture("calib.npy"),
        ],
    );
    assert!(text_out.contains("reused bundle"), "{text_out}");
    let compiles = compile_runs(&dir);
    assert_eq!(compiles.len(), 3);
    assert!(compiles.iter().all(|r| r["status"] == "finished"));
    assert!(compiles.iter().all(|r| r["model"] == "digits:2"));
    let v2 = json(&dir, &["model", "show", "digits:2"]);
    assert_eq!(v2["bundles"].as_array().unwrap().len(), 1);
    assert_eq!(v2["bundles"][0]["bundle_hash"], first["bundle_hash"]);

    // Run by alias with labels: reuses the bundle (no new compile) and records metrics.
    let r = json(
        &dir,
        &[
            "run",
            "digits@production",
            "-i",
            &fixture("test_x.npy"),
            "--labels",
            &fixture("test_y.npy"),
        ],
    );
    let acc = r["top1_accuracy"].as_f64().unwrap();
    assert!(acc > 90.0, "accuracy {acc}");
    assert_eq!(compile_runs(&dir).len(), 3);
    let runs = json(&dir, &["runs", "list", "--kind", "run"]);
    let run = &runs[0];
    assert_eq!(run["status"], "finished");
    assert_eq!(run["model"], "digits:2");
    let id = run["id"].as_str().unwrap();

    let show = json(&dir, &["runs", "show", id]);
    assert_eq!(show["params"]["model"], "digits@production");
    assert_eq!(show["params"]["device"], "func");
    assert_eq!(show["inputs"]["model_version"], 2);
    assert_eq!(show["artifacts"]["bundle"], first["bundle_hash"]);
    assert!((show["last_metrics"]["accuracy"]["value"].as_f64().unwrap() - acc).abs() < 1e-9);
    let rows = r["rows"].as_u64().unwrap();
    assert_eq!(show["last_metrics"]["rows"]["value"], rows as f64);

    // A shortened id: the shortest prefix no other run shares (runs started within the same
    // millisecond share their time-ordered head).
    let all = json(&dir, &["runs", "list", "--limit", "1000"]);
    let others: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .filter(|o| *o != id)
        .collect();
    let short = (4..=id.len())
        .map(|n| &id[..n])
        .find(|p| others.iter().all(|o| !o.starts_with(p)))
        .unwrap();
    let metrics = json(&dir, &["runs", "metrics", short, "--key", "cycles"]);
    let cycles = metrics["cycles"].as_array().unwrap();
    assert_eq!(cycles.len(), r["runs"].as_array().unwrap().len());
    assert_eq!(cycles.last().unwrap()["step"], cycles.len() as i64 - 1);
    assert!(metrics.get("accuracy").is_none());
    let err = fails(&dir, &["runs", "metrics", id, "--key", "nope"]);
    assert!(err.contains("no metric 'nope'"), "{err}");

    let logs = json(&dir, &["runs", "logs", id]);
    assert!(logs
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"].as_str().unwrap().contains("top-1 accuracy")));

    let ids: Vec<String> = compile_runs(&dir)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let cmp = json(&dir, &["runs", "compare", &ids[2], &ids[1]]);
    assert_eq!(cmp["runs"].as_array().unwrap().len(), 2);
    let reused = cmp["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "reused")
        .unwrap();
    assert_eq!(reused["values"], serde_json::json!([0.0, 1.0]));
    assert_eq!(reused["differs"], true);
    let same = cmp["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "hw")
        .unwrap();
    assert_eq!(same["differs"], false);
    let table = ok(&dir, &["runs", "compare", &ids[2], &ids[1]]);
    assert!(table.contains("* reused"), "{table}");

    // A reference without a recorded calibration says what to do and lists the bundles.
    let err = fails(&dir, &["compile", "digits:1"]);
    assert!(err.contains("pass --calib"), "{err}");
    let err = fails(&dir, &["run", "digits:1", "-i", &fixture("test_x.npy")]);
    assert!(err.contains("no bundles yet"), "{err}");
    // With a different array size, the recorded calibration data of version 2 is reused.
    let r8 = json(&dir, &["compile", "digits:2", "--hw", "8x8"]);
    assert_eq!(r8["reused"], false);
    assert_ne!(r8["bundle_hash"], first["bundle_hash"]);

    // A file still compiles, and is recorded as an unlinked compile run.
    let out = dir.path("file.sntr");
    ok(
        &dir,
        &[
            "compile",
            &fixture("mlp.onnx"),
            "--calib",
            &fixture("calib.npy"),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let newest = &compile_runs(&dir)[0];
    assert!(newest["model"].is_null());
    assert_eq!(newest["status"], "finished");

    // Deleting a version that an alias points to needs --force.
    let err = fails(&dir, &["model", "delete", "digits:2"]);
    assert!(err.contains("production"), "{err}");
    ok(&dir, &["model", "delete", "digits:1"]);
    let left = json(&dir, &["model", "show", "digits"]);
    assert_eq!(left["versions"].as_array().unwrap().len(), 1);
    json(&dir, &["workspace", "verify"]);
}

#[test]
fn files_work_without_a_workspace() {
    let dir = TempDir::new("nows");
    let bundle = dir.path("m.sntr");
    ok(
        &dir,
        &[
            "compile",
            &fixture("mlp.onnx"),
            "--calib",
            &fixture("calib.npy"),
            "-o",
            bundle.to_str().unwrap(),
        ],
    );
    let r = json(
        &dir,
        &[
            "run",
            bundle.to_str().unwrap(),
            "-i",
            &fixture("test_x.npy"),
            "--labels",
            &fixture("test_y.npy"),
        ],
    );
    assert!(r["top1_accuracy"].as_f64().unwrap() > 90.0);
    assert!(!dir.path("ws").exists(), "no workspace may be created");
    let err = fails(&dir, &["runs", "list"]);
    assert!(err.contains("sinter init"), "{err}");
    let err = fails(&dir, &["compile", "missing.onnx", "--calib", "x.npy"]);
    assert!(err.contains("no such file"), "{err}");
}

#[test]
fn concurrent_registrations_get_distinct_versions() {
    let dir = TempDir::new("concurrent");
    ok(&dir, &["init"]);
    let mlp = fixture("mlp.onnx");
    let children: Vec<Child> = (0..2)
        .map(|_| {
            cmd(
                &dir,
                &["--json", "model", "register", &mlp, "--name", "digits"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut versions: Vec<u64> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", text(&o.stderr));
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            v["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(versions, vec![1, 2]);
}

/// A server process and the address it printed.
struct Server {
    child: Child,
}

impl Server {
    fn start(dir: &TempDir, model: &str) -> Server {
        let mut child = cmd(dir, &["serve", model, "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "server did not start");
            match lines.next() {
                Some(Ok(l)) if l.starts_with("listening on") => break,
                Some(_) => {}
                None => panic!("server exited before listening"),
            }
        }
        Server { child }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait(mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a run read straight from the database, without the recovery that every
/// command does when it opens the workspace.
fn raw_run_status(dir: &TempDir, id: &str) -> String {
    let conn = rusqlite::Connection::open_with_flags(
        dir.path("ws").join("sinter.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))
        .unwrap()
}

fn serve_runs(dir: &TempDir) -> Vec<Value> {
    json(dir, &["runs", "list", "--kind", "serve"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn servers_record_deployments_and_crashes_are_recovered() {
    let dir = TempDir::new("serve");
    init_with_digits(&dir, 1);
    ok(&dir, &["model", "alias", "digits", "production", "1"]);
    // Serving a reference with no bundle and no recorded calibration data is refused.
    let err = fails(&dir, &["serve", "digits@production", "--port", "0"]);
    assert!(err.contains("--calib"), "{err}");
    ok(
        &dir,
        &[
            "compile",
            "digits@production",
            "--calib",
            &fixture("calib.npy"),
        ],
    );

    // SIGTERM: a graceful stop.
    let s = Server::start(&dir, "digits@production");
    let deps = json(&dir, &["deployments", "list", "--running"]);
    assert_eq!(deps.as_array().unwrap().len(), 1);
    assert_eq!(deps[0]["model_name"], "digits");
    assert_eq!(deps[0]["model_version"], 1);
    assert!(deps[0]["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(deps[0]["device"], "func");
    assert_eq!(serve_runs(&dir)[0]["status"], "running");
    s.signal("-TERM");
    s.wait();
    assert_eq!(serve_runs(&dir)[0]["status"], "finished");
    assert_eq!(json(&dir, &["deployments", "list"])[0]["status"], "stopped");

    // Ctrl-C: drained, the run is marked killed.
    let s = Server::start(&dir, "digits@production");
    s.signal("-INT");
    s.wait();
    assert_eq!(serve_runs(&dir)[0]["status"], "killed");
    assert_eq!(json(&dir, &["deployments", "list"])[0]["status"], "stopped");

    // SIGKILL: the run stays running until the next command notices its owner is gone.
    let mut s = Server::start(&dir, "digits@production");
    let id = serve_runs(&dir)[0]["id"].as_str().unwrap().to_string();
    let dep = json(&dir, &["deployments", "list"])[0]["id"].clone();
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    assert_eq!(raw_run_status(&dir, &id), "running");
    let deps = json(&dir, &["deployments", "list"]);
    let d = deps
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == dep)
        .unwrap();
    assert_eq!(d["status"], "failed");
    assert!(d["error"].as_str().unwrap().contains("crashed"));
    let show = json(&dir, &["runs", "show", &id]);
    assert_eq!(show["status"], "failed");
    assert_eq!(raw_run_status(&dir, &id), "failed");
}

#[test]
fn a_newer_database_is_refused() {
    let dir = TempDir::new("newer");
    ok(&dir, &["init"]);
    let conn = rusqlite::Connection::open(dir.path("ws").join("sinter.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    for args in [&["runs", "list"][..], &["model", "list"], &["init"]] {
        let err = fails(&dir, args);
        assert!(err.contains("schema version 99"), "{err}");
        assert!(err.contains("upgrade sinter"), "{err}");
    }
}

#[test]
fn invalid_names_and_references_are_rejected() {
    let dir = TempDir::new("names");
    ok(&dir, &["init"]);
    let mlp = fixture("mlp.onnx");
    for bad in ["bad name", "-dash", "a/b", "x@y", ""] {
        let err = fails(&dir, &["model", "register", &mlp, &format!("--name={bad}")]);
        assert!(err.contains("invalid model name"), "{bad}: {err}");
    }
    ok(&dir, &["model", "register", &mlp, "--name", "digits"]);
    let err = fails(&dir, &["model", "alias", "digits", "1st", "1"]);
    assert!(err.contains("invalid alias"), "{err}");
    let err = fails(&dir, &["model", "alias", "digits", "latest", "1"]);
    assert!(err.contains("reserved"), "{err}");
    let err = fails(&dir, &["model", "alias", "digits", "prod", "7"]);
    assert!(err.contains("no version 7"), "{err}");
    let err = fails(&dir, &["model", "show", "digits:0"]);
    assert!(err.contains("versions start at 1"), "{err}");
    let err = fails(&dir, &["model", "show", "nope"]);
    assert!(err.contains("no registered model named 'nope'"), "{err}");
    let err = fails(&dir, &["compile", "digits@nope"]);
    assert!(err.contains("no alias 'nope'"), "{err}");
    let err = fails(&dir, &["model", "tag", "digits", "novalue"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = fails(&dir, &["runs", "list", "--kind", "train"]);
    assert!(err.contains("expected one of compile"), "{err}");
    let err = fails(&dir, &["runs", "show", "zzzz"]);
    assert!(err.contains("no run with id"), "{err}");
    let junk = dir.path("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let err = fails(
        &dir,
        &[
            "model",
            "register",
            junk.to_str().unwrap(),
            "--name",
            "junk",
        ],
    );
    assert!(err.contains("cannot register"), "{err}");
    assert!(json(&dir, &["model", "list"])
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["name"] != "junk"));
}

#[test]
fn ctrl_c_marks_the_run_killed() {
    let dir = TempDir::new("ctrlc");
    init_with_digits(&dir, 1);
    ok(
        &dir,
        &["compile", "digits:1", "--calib", &fixture("calib.npy")],
    );
    // Enough rows that the run is still going when the signal comes.
    let x: ndarray::Array2<f32> = ndarray_npy::read_npy(fixture("test_x.npy")).unwrap();
    let views: Vec<_> = (0..60).map(|_| x.view()).collect();
    let big = ndarray::concatenate(ndarray::Axis(0), &views).unwrap();
    let input = dir.path("big.npy");
    ndarray_npy::write_npy(&input, &big).unwrap();
    let mut child = cmd(&dir, &["run", "digits:1", "-i", input.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        assert!(Instant::now() < deadline, "the run never showed up");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended too soon"
        );
        let running = json(
            &dir,
            &["runs", "list", "--kind", "run", "--status", "running"],
        );
        if let Some(r) = running.as_array().unwrap().first() {
            break r["id"].as_str().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    let show = json(&dir, &["runs", "show", &id]);
    assert_eq!(show["status"], "killed");
    assert_eq!(show["error"], "interrupted");
}
