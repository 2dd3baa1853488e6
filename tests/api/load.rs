//! The capacity harness cannot rot: every `qrgate load` scenario runs briefly
//! against a server it spawns itself, prints its JSON report, and passes its
//! own invariant checks (exit status 0).

use super::helpers::{TestApp, ADMIN};
use super::payouts::Sim;
use serde_json::{json, Value};
use std::process::Command;

/// `qrgate load --spawn --json` with `args`: it must succeed; its report.
fn load(args: &[&str]) -> Value {
    let mut all = vec!["--spawn", "--json", "--connections", "8"];
    all.extend_from_slice(args);
    load_with(&all)
}

/// `qrgate load` with `args` (`--json` among them): it must succeed; its
/// report.
pub(super) fn load_with<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Value {
    let (ok, v) = load_report(args);
    assert!(ok, "qrgate load {args:?} failed: {v}");
    v
}

/// `qrgate load` with `args`: whether it exited 0 (every check held), and
/// its JSON report.
pub(super) fn load_report<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    args: &[S],
) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .arg("load")
        .args(args)
        .output()
        .expect("run qrgate load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "qrgate load {args:?}: no JSON report: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn run(args: &[&str]) -> Value {
    let v = load(args);
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

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    let checks = v["checks"].as_array();
    let found = checks.and_then(|c| c.iter().find(|c| c["name"] == name));
    found.unwrap_or_else(|| panic!("no check {name:?} in {v}"))
}

#[test]
fn approvals_payouts_ws_and_mixed_run_and_check_their_invariants() {
    // Approvals: seats fill (100 a group), so some joins are refused
    // group_full; every approval is a member.
    let v = run(&[
        "--scenario",
        "approvals",
        "--groups",
        "5",
        "--users",
        "150",
        "--requests",
        "700",
    ]);
    assert!(v["outcomes"]["approve approved"].as_u64() > Some(0), "{v}");
    assert!(
        v["outcomes"]["request group_full"].as_u64() > Some(0),
        "{v}"
    );
    assert!(check(&v, "approved requests that are members")["got"].as_u64() > Some(0));

    // Payouts under the simulator's faults: every payout final, none paid twice.
    let v = run(&[
        "--scenario",
        "payouts",
        "--faults",
        "--users",
        "6",
        "--duration",
        "2",
    ]);
    let d = &v["details"]["payouts"];
    assert!(d["payouts_acknowledged"].as_u64() > Some(0), "{v}");
    assert!(d["fault_phases"].as_u64() > Some(0), "{v}");
    assert!(d["replays"].as_u64() > Some(0), "{v}");
    assert!(check(&v, "forged notifications refused")["got"].as_u64() > Some(0));
    check(&v, "ledger check clean");

    // WebSocket fan-out: every subscriber hears every event.
    let v = run(&[
        "--scenario",
        "ws",
        "--subscribers",
        "60",
        "--events",
        "30",
        "--event-interval-ms",
        "5",
    ]);
    let d = &v["details"];
    assert_eq!(d["deliveries"], 60 * 30, "{v}");
    assert_eq!(d["missing"], 0, "{v}");
    assert!(d["push_latency_ms"]["p99"].as_f64().is_some(), "{v}");

    // Mixed, with a plot of the run.
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("mixed.svg");
    let svg_arg = svg.to_string_lossy().into_owned();
    let v = run(&[
        "--scenario",
        "mixed",
        "--groups",
        "4",
        "--users",
        "60",
        "--codes",
        "10",
        "--packets",
        "2",
        "--duration",
        "2",
        "--plot",
        &svg_arg,
    ]);
    for kind in ["join", "request", "earning", "payout", "claim", "scan"] {
        let n: u64 = v["outcomes"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.starts_with(&format!("{kind} ")))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        assert!(n > 0, "no {kind} request in {v}");
    }
    let plot = std::fs::read_to_string(&svg).expect("the plot is written");
    assert!(
        plot.starts_with("<svg") && plot.contains("throughput"),
        "{plot:.200}"
    );
}

#[actix_web::test]
async fn a_payout_that_never_ends_fails_the_command() {
    // A server of our own (--url) whose provider accepts transfers but never
    // finishes them: the payouts cannot become final, so the check must fail
    // and the command exit 1.
    let sim = Sim::start();
    let app = TestApp::spawn_with(&sim.config("")).await;
    let (s, v) = sim
        .post("/sim/faults", json!({"auto_complete": false}))
        .await;
    assert!(s < 300, "{v}");
    let out = Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args([
            "load",
            "--json",
            "--connections",
            "4",
            "--scenario",
            "payouts",
        ])
        .args([
            "--url",
            &app.base,
            "--paysim",
            &sim.base,
            "--admin-token",
            ADMIN,
        ])
        .args(["--users", "3", "--requests", "12", "--settle-timeout", "1"])
        .output()
        .expect("run qrgate load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    let c = check(&v, "payouts final (succeeded or failed)");
    assert!(c["ok"] == false && c["want"].as_u64() > Some(0), "{v}");
    assert!(!out.status.success(), "{v}");
}

/// `--risk-ab` measures the join path with risk scoring off and on, on
/// fresh servers, and reports the cost (issue 7's benchmark).
#[test]
fn the_risk_scoring_a_b_run_reports_its_cost() {
    let out = Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args(["load", "--spawn", "--json", "--connections", "8"])
        .args(["--scenario", "joins", "--groups", "20", "--users", "40"])
        .args(["--requests", "200", "--risk-ab", "1"])
        .output()
        .expect("run qrgate load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines.len(), 3, "two reports and the summary: {stdout}");
    let summary = &lines[2];
    assert_eq!(summary["pairs"], 1, "{summary}");
    assert!(summary["mean_off"].as_f64() > Some(0.0), "{summary}");
    assert!(summary["mean_on"].as_f64() > Some(0.0), "{summary}");
    assert!(
        summary["scoring_cost_percent"].as_f64().is_some(),
        "{summary}"
    );
}

/// `--scenario memory` seeds groups straight into the spawned server's data
/// dir, activates them all, waits for the idle actors to be passivated, and
/// restarts after a SIGKILL: every group must come back with its members.
#[test]
fn the_memory_scenario_activates_passivates_and_restarts() {
    let v = load(&[
        "--scenario",
        "memory",
        "--groups",
        "300",
        "--members",
        "20",
        "--idle-timeout",
        "3",
    ]);
    assert_eq!(v["activated_ok"], 300, "{v}");
    assert_eq!(v["memberships"], 6000, "{v}");
    assert_eq!(v["resident_actors_when_active"], 300, "{v}");
    assert_eq!(v["resident_actors_after_idle"], 0, "{v}");
    assert!(v["rss_all_active_bytes"].as_u64() > Some(0), "{v}");
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 4, "{v}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{v}");
}

/// The memory scenario refuses sizes no group can have, before it writes anything.
#[test]
fn the_memory_scenario_refuses_impossible_sizes() {
    for args in [
        ["--members", "501", "--groups", "10"],
        ["--members", "0", "--groups", "10"],
        ["--members", "100", "--groups", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_qrgate"))
            .args(["load", "--spawn", "--scenario", "memory"])
            .args(args)
            .output()
            .expect("run qrgate load");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted: {stderr}");
        assert!(stderr.contains("must be"), "{args:?}: {stderr}");
    }
}
