//! The real `tritonclient.http` (Python) against a live `sinter serve` of the digits MLP:
//! readiness, metadata, binary and JSON inference with correct answers, errors, statistics and
//! a bounded load test (tests/python/test_tritonclient.py).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PIP: &str = "python3 -m pip install 'tritonclient[http]' numpy";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sinter(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sinter"));
    c.arg("--workspace")
        .arg(dir.join("ws"))
        .env("SINTER_LOG", "warn");
    c
}

#[test]
fn tritonclient_against_the_digits_mlp() {
    // Loud, with the fix, when the client library is missing.
    let probe = Command::new("python3")
        .args(["-c", "import numpy, tritonclient.http"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "python3 cannot import tritonclient.http ({}); install it with: {PIP}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("python3 is not available ({e}); install python3, then: {PIP}"),
    }

    let dir = std::env::temp_dir().join(format!("sinter-tritonclient-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = root().join("fixtures/digits");
    let bundle = dir.join("mlp.sntr");
    let out = sinter(&dir)
        .arg("compile")
        .arg(fixtures.join("mlp.onnx"))
        .arg("--calib")
        .arg(fixtures.join("calib.npy"))
        .arg("-o")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = sinter(&dir)
        .arg("serve")
        .arg(&bundle)
        .args([
            "--port",
            "0",
            "--name",
            "mlp",
            "--max-queue-delay-us",
            "500",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sinter serve");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server printed its address");

    let out = Command::new("python3")
        .arg(root().join("tests/python/test_tritonclient.py"))
        .env("SINTER_URL", &addr)
        .env("SINTER_MODEL", "mlp")
        .env("SINTER_FIXTURES", &fixtures)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "tritonclient tests failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
}
