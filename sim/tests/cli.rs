//! The `employes-sim` binary: listening line, serving, --dump.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_prints_its_listening_line_and_serves() {
    let child = Command::new(env!("CARGO_BIN_EXE_employes-sim"))
        .args([
            "--port",
            "0",
            "--employees",
            "30",
            "--rps",
            "0",
            "--token",
            "t0k",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .strip_prefix("employes-sim listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{line}"));
    let (port, rest) = rest.split_once("/v4 ").unwrap();
    let port: u16 = port.parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(
        rest.trim_end(),
        "company=5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11 employees=30"
    );
    let url = format!("http://127.0.0.1:{port}/v4/5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11/employees");
    let r = common::get_auth(&url, Some("Bearer t0k"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["total"], 30);
}

#[test]
fn dump_writes_the_dataset_and_data_serves_it() {
    let dir = std::env::temp_dir().join(format!("employes-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ds.json");
    let status = Command::new(env!("CARGO_BIN_EXE_employes-sim"))
        .args(["--employees", "12", "--seed", "4", "--dump"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let want = employes_sim::generate(
        12,
        4,
        chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        "5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11",
    );
    assert_eq!(v, want);

    let child = Command::new(env!("CARGO_BIN_EXE_employes-sim"))
        .args(["--port", "0", "--data"])
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.trim_end().ends_with("employees=12"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_documents_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_employes-sim"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--port",
        "--bind",
        "--employees",
        "--seed",
        "--token",
        "--company-id",
        "--rps",
        "--latency-ms",
        "--jitter-ms",
        "--start-date",
        "--per-page-default",
        "--data",
        "--dump",
    ] {
        assert!(text.contains(opt), "{opt} missing from --help");
    }
}
