//! Tests across the workspace modules, including ones with real child processes.

/// In tests, a child process can be told to stop forever at a named point (to be killed there).
pub(crate) fn pause_point(name: &str) {
    if std::env::var("SINTER_WS_TEST_PAUSE").as_deref() == Ok(name) {
        if let Ok(marker) = std::env::var("SINTER_WS_TEST_MARKER") {
            let _ = std::fs::write(marker, b"paused");
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

use super::testutil::TempDir;
use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn onnx(bytes: &[u8]) -> NewVersion<'_> {
    NewVersion::onnx(
        Source::Bytes {
            name: "model.onnx",
            bytes,
        },
        Signature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                shape: vec![None, Some(3), Some(224), Some(224)],
                dtype: "float32".into(),
            }],
            outputs: vec![TensorSpec {
                name: "logits".into(),
                shape: vec![None, Some(1000)],
                dtype: "float32".into(),
            }],
        },
    )
}

fn r(s: &str) -> ModelRef {
    s.parse().unwrap()
}

/// Re-runs this test binary as a child process doing `action` on the workspace in `dir`.
fn spawn_child(action: &str, dir: &Path, env: &[(&str, &str)], quiet: bool) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "workspace::tests::child_entry",
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ])
    .env("SINTER_WS_CHILD", action)
    .env("SINTER_WS_DIR", dir)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if quiet {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    cmd.spawn().unwrap()
}

fn wait_for(marker: &Path) {
    let t = Instant::now();
    while !marker.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "child never reached {}",
            marker.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL: no destructor, no handler runs
    child.wait().unwrap();
}

/// The body of the child processes; does nothing when run as an ordinary test.
#[test]
fn child_entry() {
    let Ok(action) = std::env::var("SINTER_WS_CHILD") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("SINTER_WS_DIR").unwrap());
    let ws = Workspace::open(&dir).unwrap();
    match action.as_str() {
        "serve" => {
            let h = ws
                .start_run(RunKind::Serve, [("port", "8080")], RunInputs::default())
                .unwrap();
            h.log(LogLevel::Info, "listening").unwrap();
            let bundle = ws.store().put(b"bundle").unwrap();
            ws.record_deployment(&NewDeployment {
                model_name: "m",
                model_version: 1,
                bundle_hash: &bundle.hash,
                device: "func",
                address: "127.0.0.1:8080",
                run_id: Some(h.id()),
            })
            .unwrap();
            std::fs::write(std::env::var("SINTER_WS_TEST_MARKER").unwrap(), h.id()).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        "register" => {
            let tag = std::env::var("SINTER_WS_TAG").unwrap();
            for i in 0..15 {
                let bytes = format!("{tag}-{i}").into_bytes();
                ws.register("shared", onnx(&bytes)).unwrap();
            }
        }
        "register-paused" => {
            ws.register("half", onnx(b"half-registered")).unwrap();
        }
        other => panic!("unknown child action {other}"),
    }
}

#[test]
fn init_open_and_newer_schema() {
    let dir = TempDir::new("init");
    let path = dir.path().join("ws");
    let err = Workspace::open(&path).unwrap_err();
    assert!(matches!(err, WorkspaceError::NotInitialised { .. }));
    assert!(err.to_string().contains("sinter init"), "{err}");

    let ws = Workspace::init(&path).unwrap();
    assert!(path.join(DB_FILE).is_file());
    assert!(path.join(ARTIFACTS_DIR).is_dir());
    assert_eq!(ws.schema_version().unwrap(), db::SCHEMA_VERSION);
    drop(ws);
    // init is repeatable and open works.
    Workspace::init(&path).unwrap();
    let ws = Workspace::open(&path).unwrap();
    ws.register("m", onnx(b"x")).unwrap();
    drop(ws);

    let conn = rusqlite::Connection::open(path.join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Workspace::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WorkspaceError::NewerSchema { found: 99, .. }));
    assert!(
        msg.contains("99") && msg.contains(&db::SCHEMA_VERSION.to_string()),
        "{msg}"
    );
}

#[test]
fn resolve_dir_prefers_explicit() {
    assert_eq!(
        Workspace::resolve_dir(Some(Path::new("/x/y"))),
        PathBuf::from("/x/y")
    );
}

#[test]
fn registration_numbers_versions_and_never_reuses_them() {
    let dir = TempDir::new("reg");
    let ws = Workspace::init(dir.path()).unwrap();
    let v1 = ws.register("resnet", onnx(b"one")).unwrap();
    let v2 = ws.register("resnet", onnx(b"two")).unwrap();
    let v3 = ws.register("resnet", onnx(b"two")).unwrap();
    assert_eq!((v1.version, v2.version, v3.version), (1, 2, 3));
    assert_eq!(v2.source_hash, v3.source_hash);
    assert_eq!(v1.framework, "onnx");
    assert_eq!(v1.signature.inputs[0].shape[0], None);
    assert_eq!(v1.source_size, 3);
    assert_eq!(ws.store().read(&v1.source_hash).unwrap(), b"one");
    assert_eq!(ws.resolve(&r("resnet")).unwrap().version, 3);
    assert_eq!(
        ws.resolve(&r("resnet:1")).unwrap().source_hash,
        v1.source_hash
    );
    assert!(matches!(
        ws.resolve(&r("resnet:9")),
        Err(WorkspaceError::UnknownVersion { version: 9, .. })
    ));
    assert!(matches!(
        ws.resolve(&r("vgg")),
        Err(WorkspaceError::UnknownModel { .. })
    ));
    assert!(matches!(
        ws.register("bad name", onnx(b"x")),
        Err(WorkspaceError::InvalidName { .. })
    ));

    ws.delete_version("resnet", 3, false).unwrap();
    // The shared bytes stay: version 2 still references them.
    ws.store().verify(&v2.source_hash).unwrap();
    let v4 = ws.register("resnet", onnx(b"four")).unwrap();
    assert_eq!(v4.version, 4, "a deleted version number is never reused");

    let models = ws.list_models().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].latest_version, Some(4));
    assert_eq!(models[0].version_count, 3);
    let detail = ws.show_model("resnet").unwrap();
    let nums: Vec<u32> = detail.versions.iter().map(|v| v.version).collect();
    assert_eq!(nums, vec![1, 2, 4]);

    // Registering from a file streams it.
    let src = dir.path().join("net.onnx");
    std::fs::write(&src, b"from a file").unwrap();
    let mut nv = onnx(b"");
    nv.source = Source::File(&src);
    nv.description = "exported from torch".into();
    nv.tags.insert("dataset".into(), "imagenet".into());
    let v5 = ws.register("resnet", nv).unwrap();
    assert_eq!(v5.source_name, "net.onnx");
    assert_eq!(v5.description, "exported from torch");
    assert_eq!(v5.tags["dataset"], "imagenet");
}

#[test]
fn registered_versions_are_immutable() {
    let dir = TempDir::new("immut");
    let ws = Workspace::init(dir.path()).unwrap();
    ws.register("m", onnx(b"a")).unwrap();
    let err = ws
        .conn()
        .execute("UPDATE model_versions SET framework = 'tf'", [])
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    ws.set_version_description(&r("m:1"), "fine").unwrap();
    assert_eq!(ws.resolve(&r("m")).unwrap().description, "fine");
}

#[test]
fn tags_and_aliases() {
    let dir = TempDir::new("alias");
    let ws = Workspace::init(dir.path()).unwrap();
    for b in [b"1", b"2", b"3"] {
        ws.register("net", onnx(b)).unwrap();
    }
    ws.set_model_tag("net", "team", "vision").unwrap();
    ws.set_model_tag("net", "team", "edge").unwrap();
    ws.set_version_tag(&r("net:2"), "accuracy", "0.71").unwrap();
    assert_eq!(ws.list_models().unwrap()[0].tags["team"], "edge");
    assert_eq!(ws.resolve(&r("net:2")).unwrap().tags["accuracy"], "0.71");
    assert!(ws.remove_version_tag(&r("net:2"), "accuracy").unwrap());
    assert!(!ws.remove_version_tag(&r("net:2"), "accuracy").unwrap());
    assert!(ws.remove_model_tag("net", "team").unwrap());

    assert_eq!(ws.set_alias("net", "production", 1).unwrap(), None);
    assert_eq!(ws.set_alias("net", "production", 2).unwrap(), Some(1));
    assert_eq!(ws.set_alias("net", "production", 2).unwrap(), Some(2));
    ws.set_alias("net", "staging", 3).unwrap();
    assert_eq!(ws.resolve(&r("net@production")).unwrap().version, 2);
    assert_eq!(ws.resolve(&r("net:2")).unwrap().aliases, vec!["production"]);
    assert!(matches!(
        ws.set_alias("net", "production", 7),
        Err(WorkspaceError::UnknownVersion { .. })
    ));
    assert!(matches!(
        ws.set_alias("net", "latest", 1),
        Err(WorkspaceError::InvalidName { .. })
    ));
    assert!(matches!(
        ws.resolve(&r("net@canary")),
        Err(WorkspaceError::UnknownAlias { .. })
    ));

    // An aliased version is protected.
    let err = ws.delete_version("net", 2, false).unwrap_err();
    assert!(matches!(err, WorkspaceError::AliasInUse { .. }));
    assert!(err.to_string().contains("production"), "{err}");
    assert_eq!(ws.remove_alias("net", "staging").unwrap(), 3);
    ws.delete_version("net", 2, true).unwrap();
    assert!(matches!(
        ws.resolve(&r("net@production")),
        Err(WorkspaceError::UnknownAlias { .. })
    ));

    let moves: Vec<(Option<u32>, Option<u32>)> = ws
        .alias_history("net", Some("production"))
        .unwrap()
        .iter()
        .map(|c| (c.from, c.to))
        .collect();
    assert_eq!(
        moves,
        vec![(None, Some(1)), (Some(1), Some(2)), (Some(2), None)]
    );
    assert_eq!(ws.show_model("net").unwrap().alias_history.len(), 5);

    ws.set_alias("net", "production", 3).unwrap();
    assert!(matches!(
        ws.delete_model("net", false),
        Err(WorkspaceError::AliasInUse { .. })
    ));
    ws.delete_model("net", true).unwrap();
    assert!(ws.list_models().unwrap().is_empty());
}

#[test]
fn deletion_keeps_shared_artifacts() {
    let dir = TempDir::new("gc");
    let ws = Workspace::init(dir.path()).unwrap();
    let a = ws.register("a", onnx(b"same bytes")).unwrap();
    ws.register("b", onnx(b"same bytes")).unwrap();
    let key = BundleKey {
        model: r("a:1"),
        hw_config: "8x8".into(),
        compiler_version: "0.1.0".into(),
        options_hash: options_hash(&serde_json::json!({})),
    };
    let bundle = ws.record_bundle(&key, b"compiled", None).unwrap();

    ws.delete_model("a", false).unwrap();
    ws.store().verify(&a.source_hash).unwrap();
    assert!(!ws.store().contains(&bundle.bundle_hash).unwrap());
    ws.delete_model("b", false).unwrap();
    assert!(!ws.store().contains(&a.source_hash).unwrap());
    assert!(ws.store().list().unwrap().is_empty());
    let rows: i64 = ws
        .conn()
        .query_row("SELECT COUNT(*) FROM artifacts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn bundles_are_reused_by_key() {
    let dir = TempDir::new("bundle");
    let ws = Workspace::init(dir.path()).unwrap();
    ws.register("m", onnx(b"model")).unwrap();
    let opts = serde_json::json!({"calibration": "minmax"});
    let key = BundleKey {
        model: r("m"),
        hw_config: sinter_isa::HwConfig::SMALL.to_string(),
        compiler_version: "0.1.0".into(),
        options_hash: options_hash(&opts),
    };
    assert_eq!(ws.find_bundle(&key).unwrap(), None);
    let first = ws.record_bundle(&key, b"bundle v1", None).unwrap();
    assert_eq!((first.model_name.as_str(), first.model_version), ("m", 1));
    assert_eq!(ws.find_bundle(&key).unwrap(), Some(first.clone()));
    // The same key by another reference to the same version.
    let by_number = BundleKey {
        model: r("m:1"),
        ..key.clone()
    };
    assert_eq!(ws.find_bundle(&by_number).unwrap(), Some(first.clone()));
    // The first record of a key wins.
    let again = ws.record_bundle(&key, b"bundle v1 again", None).unwrap();
    assert_eq!(again.bundle_hash, first.bundle_hash);
    // Any other input is another key.
    for other in [
        BundleKey {
            hw_config: sinter_isa::HwConfig::DEFAULT.to_string(),
            ..key.clone()
        },
        BundleKey {
            compiler_version: "0.2.0".into(),
            ..key.clone()
        },
        BundleKey {
            options_hash: options_hash(&serde_json::json!({"calibration": "entropy"})),
            ..key.clone()
        },
    ] {
        assert_eq!(ws.find_bundle(&other).unwrap(), None);
    }
    // A new version is another key.
    ws.register("m", onnx(b"model 2")).unwrap();
    assert_eq!(ws.find_bundle(&key).unwrap(), None);
    assert_eq!(ws.list_bundles(&r("m:1")).unwrap().len(), 1);
    // A bundle whose file vanished is not offered for reuse.
    std::fs::remove_file(ws.artifact_path(&first.bundle_hash).unwrap()).unwrap();
    assert_eq!(ws.find_bundle(&by_number).unwrap(), None);
}

#[test]
fn run_lifecycle() {
    let dir = TempDir::new("runs");
    let ws = Workspace::init(dir.path()).unwrap();
    let v = ws.register("m", onnx(b"model")).unwrap();
    let mut inputs = RunInputs::for_version(&v);
    inputs.options = serde_json::json!({"hw": "8x8"});
    inputs.calibration_hash = Some(store::sha256_hex(b"calib"));
    let h = ws
        .start_run(RunKind::Compile, [("hw", "8x8"), ("opt", "2")], inputs)
        .unwrap();
    let id = h.id().to_string();
    assert_eq!(id.len(), 13);
    h.log(LogLevel::Info, "tiling conv1").unwrap();
    h.log(LogLevel::Warn, "softmax stays on the CPU").unwrap();
    for step in 0..3 {
        h.metric("loss", 1.0 / (step + 1) as f64, step).unwrap();
    }
    h.metric("cycles", 1234.0, 0).unwrap();
    assert!(h.metric("bad", f64::NAN, 0).is_err());
    let hash = h.artifact("bundle", b"compiled bytes").unwrap();
    assert!(
        h.artifact("bundle", b"other").is_err(),
        "outputs are immutable"
    );
    h.artifact_hash("source", &v.source_hash).unwrap();
    assert_eq!(h.finish().unwrap(), RunStatus::Finished);

    let d = ws.show_run(&id).unwrap();
    assert_eq!(d.summary.status, RunStatus::Finished);
    assert_eq!(d.summary.kind, RunKind::Compile);
    assert_eq!(d.summary.model.as_deref(), Some("m:1"));
    assert!(d.summary.ended.is_some());
    assert_eq!(d.params["opt"], "2");
    assert_eq!(d.artifacts["bundle"], hash);
    assert_eq!(d.inputs.options["hw"], "8x8");
    assert_eq!(d.last_metrics["loss"].step, 2);
    assert!((d.last_metrics["loss"].value - 1.0 / 3.0).abs() < 1e-12);
    let metrics = ws.run_metrics(&id).unwrap();
    assert_eq!(metrics["loss"].len(), 3);
    let logs = ws.run_logs(&id).unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[1].level, LogLevel::Warn);
    // A unique prefix finds the run.
    assert_eq!(ws.resolve_run_id(&id[..11]).unwrap(), id);

    // Parameters and metrics cannot be rewritten.
    assert!(ws
        .conn()
        .execute("UPDATE run_params SET value = '3'", [])
        .is_err());
    assert!(ws
        .conn()
        .execute("UPDATE run_metrics SET value = 0", [])
        .is_err());

    // A dropped handle is a failed run.
    let dropped = ws
        .start_run(RunKind::Bench, [("hw", "16x16")], RunInputs::default())
        .unwrap();
    let dropped_id = dropped.id().to_string();
    drop(dropped);
    let d = ws.show_run(&dropped_id).unwrap();
    assert_eq!(d.summary.status, RunStatus::Failed);
    assert!(d.summary.error.unwrap().contains("without being finished"));

    // fail() records the message as an error log line.
    let failing = ws
        .start_run(RunKind::Run, [("x", "1")], RunInputs::for_version(&v))
        .unwrap();
    let failing_id = failing.id().to_string();
    assert_eq!(failing.fail("device hang").unwrap(), RunStatus::Failed);
    assert_eq!(ws.run_logs(&failing_id).unwrap()[0].message, "device hang");

    // Ctrl-C wins over a later finish().
    let killed = ws
        .start_run(
            RunKind::Serve,
            Vec::<(&str, &str)>::new(),
            RunInputs::default(),
        )
        .unwrap();
    assert!(ws.mark_killed(killed.id()).unwrap());
    assert_eq!(killed.finish().unwrap(), RunStatus::Killed);

    let all = ws.list_runs(&RunFilter::default()).unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].started >= w[1].started));
    let failed = ws
        .list_runs(&RunFilter {
            status: Some(RunStatus::Failed),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(failed.len(), 2);
    let of_model = ws
        .list_runs(&RunFilter {
            model: Some("m".into()),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(of_model.len(), 2);
    let compiles = ws
        .list_runs(&RunFilter {
            kind: Some(RunKind::Compile),
            limit: Some(1),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(compiles[0].id, id);

    let cmp = ws.compare_runs(&[&id, &dropped_id]).unwrap();
    assert_eq!(cmp.runs.len(), 2);
    let hw = cmp.params.iter().find(|p| p.key == "hw").unwrap();
    assert_eq!(
        hw.values,
        vec![Some("8x8".to_string()), Some("16x16".to_string())]
    );
    assert!(hw.differs);
    let loss = cmp.metrics.iter().find(|m| m.key == "loss").unwrap();
    assert_eq!(loss.values[1], None);
    assert!(matches!(
        ws.show_run("zzzzzzzzzzzzz"),
        Err(WorkspaceError::UnknownRun { .. })
    ));
}

#[test]
fn deployments_recorded() {
    let dir = TempDir::new("deploy");
    let ws = Workspace::init(dir.path()).unwrap();
    let b = ws.store().put(b"bundle").unwrap();
    let id = ws
        .record_deployment(&NewDeployment {
            model_name: "m",
            model_version: 1,
            bundle_hash: &b.hash,
            device: "func",
            address: "0.0.0.0:8000",
            run_id: None,
        })
        .unwrap();
    assert_eq!(ws.list_deployments(true).unwrap().len(), 1);
    assert!(ws.mark_deployment_stopped(id).unwrap());
    assert!(!ws.mark_deployment_stopped(id).unwrap());
    assert!(ws.list_deployments(true).unwrap().is_empty());
    let all = ws.list_deployments(false).unwrap();
    assert_eq!(all[0].status, DeploymentStatus::Stopped);
    assert!(all[0].ended.is_some());
    assert!(matches!(
        ws.mark_deployment_stopped(999),
        Err(WorkspaceError::UnknownDeployment { id: 999 })
    ));
    assert!(ws
        .record_deployment(&NewDeployment {
            bundle_hash: &"0".repeat(64),
            ..NewDeployment {
                model_name: "m",
                model_version: 1,
                bundle_hash: "",
                device: "func",
                address: "x",
                run_id: None,
            }
        })
        .is_err());
}

#[test]
fn killed_process_run_is_marked_failed() {
    let dir = TempDir::new("crash");
    Workspace::init(dir.path()).unwrap();
    let marker = dir.path().join("started");
    let child = spawn_child(
        "serve",
        dir.path(),
        &[("SINTER_WS_TEST_MARKER", marker.to_str().unwrap())],
        true,
    );
    wait_for(&marker);
    let run_id = std::fs::read_to_string(&marker).unwrap();

    // While the owner lives, opening leaves its run alone.
    let ws = Workspace::open(dir.path()).unwrap();
    assert_eq!(
        ws.show_run(&run_id).unwrap().summary.status,
        RunStatus::Running
    );
    drop(ws);

    kill(child);
    let ws = Workspace::open(dir.path()).unwrap();
    let d = ws.show_run(&run_id).unwrap();
    assert_eq!(d.summary.status, RunStatus::Failed);
    assert!(d.summary.error.unwrap().contains("crashed"));
    assert!(d.summary.ended.is_some());
    let dep = &ws.list_deployments(false).unwrap()[0];
    assert_eq!(dep.status, DeploymentStatus::Failed);
    let logs = ws.run_logs(&run_id).unwrap();
    assert_eq!(logs.last().unwrap().level, LogLevel::Error);
}

#[test]
fn recycled_pid_does_not_keep_a_run_alive() {
    let dir = TempDir::new("pidreuse");
    let ws = Workspace::init(dir.path()).unwrap();
    let h = ws
        .start_run(RunKind::Run, [("a", "b")], RunInputs::default())
        .unwrap();
    // Our own pid, but a start token of some earlier process that had it.
    ws.conn()
        .execute(
            "UPDATE runs SET start_token = 'another-boot/42' WHERE id = ?1",
            [h.id()],
        )
        .unwrap();
    assert_eq!(ws.recover_crashed_runs().unwrap(), 1);
    assert_eq!(h.finish().unwrap(), RunStatus::Failed);
}

#[test]
fn concurrent_registration_from_processes() {
    let dir = TempDir::new("concurrent");
    Workspace::init(dir.path()).unwrap();
    let children: Vec<Child> = ["a", "b"]
        .iter()
        .map(|tag| spawn_child("register", dir.path(), &[("SINTER_WS_TAG", tag)], false))
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ws = Workspace::open(dir.path()).unwrap();
    let detail = ws.show_model("shared").unwrap();
    let nums: Vec<u32> = detail.versions.iter().map(|v| v.version).collect();
    assert_eq!(nums, (1..=30).collect::<Vec<_>>());
    let mut contents: Vec<Vec<u8>> = detail
        .versions
        .iter()
        .map(|v| ws.store().read(&v.source_hash).unwrap())
        .collect();
    contents.sort();
    contents.dedup();
    assert_eq!(contents.len(), 30, "no registration was lost");
}

#[test]
fn concurrent_registration_from_threads() {
    let dir = TempDir::new("threads");
    Workspace::init(dir.path()).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let ws = Workspace::open(&path).unwrap();
                (0..10)
                    .map(|i| {
                        let bytes = format!("{t}/{i}").into_bytes();
                        ws.register("t", onnx(&bytes)).unwrap().version
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (1..=40).collect::<Vec<_>>());
}

#[test]
fn registration_killed_mid_transaction_leaves_nothing() {
    let dir = TempDir::new("halfreg");
    Workspace::init(dir.path()).unwrap();
    let marker = dir.path().join("paused");
    let child = spawn_child(
        "register-paused",
        dir.path(),
        &[
            ("SINTER_WS_TEST_PAUSE", "register"),
            ("SINTER_WS_TEST_MARKER", marker.to_str().unwrap()),
        ],
        true,
    );
    // The child has written the artifact and all rows, and holds the write lock.
    wait_for(&marker);
    kill(child);

    let ws = Workspace::open(dir.path()).unwrap();
    assert!(ws.list_models().unwrap().is_empty());
    let rows: i64 = ws
        .conn()
        .query_row(
            "SELECT (SELECT COUNT(*) FROM model_versions) + (SELECT COUNT(*) FROM artifacts)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
    // The artifact file was durable before the transaction; it is an orphan, not a dangling row.
    assert_eq!(ws.store().list().unwrap().len(), 1);
    // Garbage collection removes the orphan; registration then writes it again.
    assert_eq!(ws.gc(Duration::from_secs(3600)).unwrap().len(), 1);
    assert!(ws.store().list().unwrap().is_empty());
    // The lock died with the process.
    assert_eq!(
        ws.register("half", onnx(b"half-registered"))
            .unwrap()
            .version,
        1
    );
    assert!(ws.verify_artifacts().unwrap().is_empty());
}

#[test]
fn artifact_verification_reports_corruption() {
    let dir = TempDir::new("verify");
    let ws = Workspace::init(dir.path()).unwrap();
    let v = ws.register("m", onnx(b"good bytes")).unwrap();
    ws.register("m", onnx(b"other bytes")).unwrap();
    assert!(ws.verify_artifacts().unwrap().is_empty());
    std::fs::write(ws.artifact_path(&v.source_hash).unwrap(), b"bad bytes").unwrap();
    let bad = ws.verify_artifacts().unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, v.source_hash);
    assert!(matches!(bad[0].1, WorkspaceError::CorruptArtifact { .. }));
}

#[test]
fn bench_helper_runs() {
    let dir = TempDir::new("bench");
    let report = bench::run(&dir.path().join("ws"), 30, 3).unwrap();
    assert_eq!(report.runs, 30);
    let ws = Workspace::open(&dir.path().join("ws")).unwrap();
    assert_eq!(ws.list_runs(&RunFilter::default()).unwrap().len(), 30);
}

/// Prints the registry timings at 1,000 runs when `SINTER_WS_BENCH` is set; otherwise a no-op.
#[test]
fn bench_report_on_request() {
    if std::env::var_os("SINTER_WS_BENCH").is_none() {
        return;
    }
    let dir = TempDir::new("bench-full");
    let report = bench::run(&dir.path().join("ws"), 1000, 20).unwrap();
    println!("{report:#?}");
}
