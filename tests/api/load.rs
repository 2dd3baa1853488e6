//! The capacity harness cannot rot: every `qrgate load` scenario runs briefly
//! against a server it spawns itself, prints its JSON report, and passes its
//! own invariant checks (exit status 0).

use serde_json::Value;
use std::process::Command;

fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args(["load", "--spawn", "--json", "--connections", "8"])
        .args(args)
        .output()
        .expect("run qrgate load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "qrgate load {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    assert!(!checks.is_empty(), "{v}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{v}");
    assert!(v["requests"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["latency_ms"]["p99"].as_f64().is_some(), "{v}");
    v
}

#[test]
fn every_load_scenario_runs_and_checks_its_invariants() {
    run(&[
        "--scenario",
        "joins",
        "--groups",
        "20",
        "--users",
        "40",
        "--requests",
        "300",
    ]);
    let v = run(&["--scenario", "viral", "--scanners", "600", "--baseline"]);
    assert!(v["ratio_pct"].as_f64().is_some_and(|r| r > 0.0), "{v}");
    assert_eq!(v["outcomes"]["joined"], 499, "{v}");
    run(&[
        "--scenario",
        "earnings",
        "--users",
        "20",
        "--requests",
        "300",
    ]);
    run(&["--scenario", "packets", "--users", "200", "--packets", "3"]);
    run(&["--scenario", "codes", "--codes", "20", "--requests", "300"]);
}
