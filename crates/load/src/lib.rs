//! `qrgate load`: drive traffic against a loopback server and report its capacity.
//!
//! ```text
//! qrgate load --scenario joins|viral|earnings|packets|codes|approvals|payouts|ws|mixed
//!             [--url http://127.0.0.1:PORT [--paysim http://127.0.0.1:PORT] | --spawn]
//!             [--admin-token T] [--connections 64] [--duration 10] [--requests N]
//!             [--groups N] [--users N] [--scanners 20000] [--faults] [--subscribers 1000]
//!             [--events 200] [--mix join=25,...] [--baseline] [--json] [--plot FILE.svg]
//! ```
//!
//! * `--spawn` starts `qrgate serve` as a child process with a temporary data dir, a
//!   random admin token and rate limits raised out of the way; `--url` targets a running
//!   server (loopback only) with the admin token from `--admin-token`/`QRGATE_ADMIN_TOKEN`.
//! * Setup (users, groups, invitations) goes through the public API and is not measured.
//! * `joins`: request `k` joins group `k % groups` as user `(k % groups + k / groups) % users`:
//!   every (user, group) pair is distinct, each group gets one join per round and the run
//!   stops before any group fills (`groups * 499` requests), so every answer should be
//!   `200 joined`. Bounded by `--duration` (default 10 s) and `--requests`.
//! * `viral`: `--scanners` users scan one invitation of a 500-member group once each;
//!   exactly 499 must be admitted and the rest refused with `409 group_full`.
//!   `--bursts B` repeats this on B groups one after the other (B x scanners
//!   requests), so the figure does not rest on a single sub-second burst.
//! * `approvals`, `payouts`, `mixed`: see [`steps`]; `ws`: see [`ws`].
//! * `--baseline` first drives an in-process empty actix-web handler with the same client,
//!   requests and connections, and reports the scenario as a percentage of it.
//!
//! Failed checks make the command exit 1 after printing the report. The client is one
//! actix System on this thread: `--connections` concurrent loops share one keep-alive
//! `awc::Client`; latencies go to per-loop HDR histograms, merged at the end.
//! A progress bar runs on stderr when stdout is a terminal (not with
//! `--json`); `--plot` draws the run's timeline (see [`plot`]).

mod memory;
mod plot;
mod record;
mod sim;
mod steps;
mod storage;
mod ws;

use actix_web::dev::ServerHandle;
use actix_web::http::{header::HeaderValue, Method};
use bytes::Bytes;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Durable joins spread over many groups.
    Joins,
    /// Many scanners of one invitation into one 500-member group.
    Viral,
    /// Durable earnings (admin token) credited to many users' wallets.
    Earnings,
    /// Red packet claims, each user once, spread over `--packets` campaign
    /// packets (1: one hot packet) that have a share for every claim.
    Packets,
    /// Scan code resolution: `GET /s/{code}` (the HTML page a phone gets)
    /// over `--codes` codes.
    Codes,
    /// Joins into approval-required groups (100 seats) while a quarter of
    /// the connections approve the pending requests (owners, and one in four
    /// by the operator).
    Approvals,
    /// Payouts (Idempotency-Key) of funded, linked users through the
    /// provider simulator; `--faults` turns its fault switches on meanwhile.
    Payouts,
    /// `--subscribers` WebSocket connections hear `--events` joins; push
    /// latency from each join's answer to each delivery.
    Ws,
    /// A weighted mix (`--mix`) of the other scenarios' requests.
    Mixed,
    /// Resident memory of `--groups` groups of `--members` members, all
    /// active and then passivated, and the restart time with them on disk
    /// (`--spawn` only: the memberships are written into its data dir).
    Memory,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Base URL of a running server (loopback addresses only).
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    pub url: Option<String>,
    /// Start a throwaway server as a child process (temporary data dir).
    #[arg(long)]
    pub spawn: bool,
    /// Admin token of the `--url` server.
    #[arg(long, env = "QRGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Concurrent in-flight requests (and connections).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds to run (default 10 for joins; viral runs until every scanner scanned, at most 120 s).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Groups (default 10000 for joins, 1000 for approvals, 100 for mixed).
    #[arg(long)]
    pub groups: Option<usize>,
    /// Users (default 20000; 2000 for approvals and mixed; 200 payees for
    /// payouts).
    #[arg(long)]
    pub users: Option<usize>,
    #[arg(long, default_value_t = 20_000)]
    pub scanners: usize,
    /// viral: run this many bursts, one after the other, each on its own
    /// 500-seat group, so the figure rests on more than one sub-second burst.
    #[arg(long, default_value_t = 1)]
    pub bursts: usize,
    /// packets: how many packets the claims are spread over.
    #[arg(long, default_value_t = 1)]
    pub packets: usize,
    /// codes: how many scan codes the resolutions are spread over.
    #[arg(long, default_value_t = 1000)]
    pub codes: usize,
    /// Also measure an empty actix-web handler and report the ratio.
    #[arg(long)]
    pub baseline: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw latency percentiles and throughput over time into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// payouts, mixed: cycle the simulator's fault switches (timeouts, 5xx,
    /// lost replies, duplicate, out-of-order and forged notifications)
    /// during the run, then turn them off and wait for every payout to end.
    #[arg(long)]
    pub faults: bool,
    /// Control URL of the simulator the `--url` server uses (payouts, mixed).
    #[arg(long)]
    pub paysim: Option<String>,
    /// payouts, mixed: seconds to wait after the run for every payout to
    /// reach a final state.
    #[arg(long, default_value_t = 120)]
    pub settle_timeout: u64,
    /// memory: members per group.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// memory: also seed this many ledger entries (earnings, 1,000 per
    /// wallet), leaving the last writes in the journal, not checkpointed,
    /// so the first start replays a full journal.
    #[arg(long, default_value_t = 0)]
    pub entries: u64,
    /// memory: the server's idle timeout (seconds) before an actor is
    /// passivated; longer than the activation of every group takes.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout: u64,
    /// --spawn: the spawned server's `[storage] cache_mb` (default: the
    /// server's own).
    #[arg(long)]
    pub cache_mb: Option<u64>,
    /// --spawn: switch the spawned server's journal off (`[storage]
    /// journal = false`): nothing reaches the disk, so the figures are the
    /// request and actor path alone. For comparison only.
    #[arg(long)]
    pub no_storage: bool,
    /// --spawn: the spawned server's `[storage] checkpoint_secs`, so that a
    /// run spans several checkpoints (default: the server's own, 30 s).
    #[arg(long)]
    pub checkpoint_secs: Option<u64>,
    /// ws: WebSocket connections (subscribers of the event groups).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// ws: events (joins) to push.
    #[arg(long, default_value_t = 200)]
    pub events: usize,
    /// ws: pause between two events, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub event_interval_ms: u64,
    /// ws: threads reading the subscribers' sockets (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub ws_readers: usize,
    /// mixed: weights of the request kinds (join, request, approve,
    /// earning, payout, claim, scan).
    #[arg(long, default_value = steps::DEFAULT_MIX)]
    pub mix: String,
    /// `--spawn`: the server's anti-abuse mode. `observe` (default) scores
    /// every join but never challenges: the harness's users are brand-new
    /// accounts arriving in bursts, which is what a bot wave looks like.
    #[arg(long, value_enum, default_value_t = RiskMode::Observe)]
    pub risk: RiskMode,
    /// `--spawn`: measure the scenario with risk scoring off and on
    /// (`observe`: every join scored, its signals and analytics kept, but
    /// nobody challenged, so both runs do the same joins), interleaved over
    /// this many pairs of fresh servers, and report what scoring costs
    /// (issue 7's target: at most 10 %).
    #[arg(long, value_name = "PAIRS")]
    pub risk_ab: Option<usize>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskMode {
    Off,
    Observe,
    Enforce,
}

impl RiskMode {
    fn config(self) -> &'static str {
        match self {
            RiskMode::Off => "\n[risk]\nmode = \"off\"\n",
            RiskMode::Observe => "\n[risk]\nmode = \"observe\"\n",
            RiskMode::Enforce => "\n[risk]\nmode = \"enforce\"\n",
        }
    }
}

impl LoadArgs {
    fn groups(&self) -> usize {
        let default = match self.scenario {
            Scenario::Approvals => 1000,
            Scenario::Mixed => 100,
            _ => 10_000,
        };
        self.groups.unwrap_or(default)
    }

    fn users(&self) -> usize {
        let default = match self.scenario {
            Scenario::Approvals | Scenario::Mixed => 2000,
            Scenario::Payouts => 200,
            _ => 20_000,
        };
        self.users.unwrap_or(default)
    }
}

pub fn run(args: LoadArgs) -> Result<(), String> {
    if args.scenario == Scenario::Memory {
        if args.url.is_some() {
            return Err(
                "--scenario memory writes its memberships into the server's data dir: use --spawn"
                    .into(),
            );
        }
        return memory::run(&memory::MemArgs {
            groups: args.groups(),
            members: args.members,
            entries: args.entries,
            idle_timeout: args.idle_timeout,
            cache_mb: args.cache_mb,
            connections: args.connections,
            json: args.json,
        });
    }
    match args.risk_ab {
        None => run_one(&args).map(|_| ()),
        Some(pairs) => risk_ab(args, pairs),
    }
}

/// Throughput with risk scoring off and on, interleaved (off, on, off, on,
/// ...) so that drift of the shared machine hits both alike.
fn risk_ab(args: LoadArgs, pairs: usize) -> Result<(), String> {
    if args.url.is_some() || pairs == 0 {
        return Err("--risk-ab needs --spawn and at least 1 pair".into());
    }
    let mut rps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut base: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for pair in 0..pairs {
        for (k, mode) in [RiskMode::Off, RiskMode::Observe].into_iter().enumerate() {
            let mut a = args.clone();
            a.risk = mode;
            a.risk_ab = None;
            a.plot = None;
            eprintln!("risk A/B: pair {}/{pairs}, risk {mode:?}", pair + 1);
            let out = run_one(&a)?;
            rps[k].push(out.row.successes_per_s);
            if let Some(b) = out.baseline {
                base[k].push(b.throughput_rps);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (off, on) = (mean(&rps[0]), mean(&rps[1]));
    let cost = 100.0 * (1.0 - on / off);
    let summary = json!({
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "pairs": pairs,
        "risk_off_successes_per_s": rps[0],
        "risk_on_successes_per_s": rps[1],
        "baseline_off_rps": base[0],
        "baseline_on_rps": base[1],
        "mean_off": off,
        "mean_on": on,
        "scoring_cost_percent": cost,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "risk scoring A/B over {pairs} pair(s): off {off:.0}/s, on {on:.0}/s: scoring costs {cost:.1} % of the throughput (target <= 10 %)"
        );
    }
    Ok(())
}

fn run_one(args: &LoadArgs) -> Result<Outcome, String> {
    if args.connections == 0
        || args.groups() == 0
        || args.users() == 0
        || args.scanners == 0
        || args.bursts == 0
        || args.packets == 0
        || args.codes == 0
        || args.subscribers == 0
        || args.events == 0
    {
        return Err(
            "--connections, --groups, --users, --scanners, --bursts, --packets, --codes, --subscribers and --events must be at least 1"
                .into(),
        );
    }
    let weights = steps::parse_mix(&args.mix)?;
    // The simulator is needed by payouts, and by mixed unless it sends no payout.
    let wants_sim = match args.scenario {
        Scenario::Payouts => true,
        Scenario::Mixed => weights[4] > 0,
        _ => false,
    };
    // The guards (if any) kill the children and remove their dirs when dropped, also on error.
    let (base, admin, _server, sim_base, _sim) = match &args.url {
        Some(url) => {
            let base = loopback_base(url)?;
            let why = "the admin token is needed for setup: --admin-token or QRGATE_ADMIN_TOKEN";
            let sim_base = match (&args.paysim, wants_sim) {
                (Some(p), true) => Some(loopback_base(p)?),
                (None, true) => {
                    return Err(
                        "this scenario needs the simulator of the --url server: --paysim URL"
                            .into(),
                    )
                }
                _ => None,
            };
            (
                base,
                args.admin_token.clone().ok_or(why)?,
                None,
                sim_base,
                None,
            )
        }
        None => {
            let sim = if wants_sim {
                Some(sim::SpawnedSim::start()?)
            } else {
                None
            };
            let mut extra = match &sim {
                Some(s) => s.server_config()?,
                None => String::new(),
            };
            extra.push_str(args.risk.config());
            extra.push_str(&storage_config(
                args.cache_mb,
                args.no_storage,
                args.checkpoint_secs,
            ));
            let (server, base, admin) = SpawnedServer::start(&extra)?;
            let sim_base = sim.as_ref().map(|s| s.base.clone());
            (base, admin, Some(server), sim_base, sim)
        }
    };
    actix_web::rt::System::new().block_on(async {
        let api = Api {
            c: client(args.connections),
            base: base.clone(),
            admin: admin.clone(),
        };
        let sim_api = match &sim_base {
            Some(b) => Some(sim::SimApi::new(client(16), b)?),
            None => None,
        };
        let out = match args.scenario {
            Scenario::Approvals | Scenario::Payouts | Scenario::Mixed => {
                run_steps(args, &api, &admin, sim_api, weights).await?
            }
            Scenario::Ws => {
                let (baseline, _) = baseline_first(args, Duration::from_secs(10)).await?;
                let wa = ws::WsArgs {
                    subscribers: args.subscribers,
                    events: args.events,
                    interval: Duration::from_millis(args.event_interval_ms),
                    duration: Duration::from_secs(args.duration.unwrap_or(600)),
                    show_bar: record::bar_wanted(args.json),
                    readers: match args.ws_readers {
                        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                        n => n,
                    },
                };
                let (row, checks, extra, timeline) = ws::run(&api, &admin, &wa).await?;
                Outcome {
                    row,
                    baseline,
                    checks,
                    extra: Some(extra),
                    timeline,
                }
            }
            _ => {
                let plan = setup(args, &api, &admin).await?;
                let (baseline, row, timeline) = measure(args, &api, &plan).await?;
                let checks = check(&plan, &row, &api).await?;
                Outcome {
                    row,
                    baseline,
                    checks,
                    extra: None,
                    timeline,
                }
            }
        };
        report(args, &out)?;
        if let Some(path) = &args.plot {
            let b = out.baseline.as_ref().map(|b| b.throughput_rps);
            plot::draw(path, &out.row.name, &out.timeline, b)?;
            eprintln!("load: plot written to {}", path.display());
        }
        match out
            .checks
            .iter()
            .filter(|(_, got, want)| got != want)
            .count()
        {
            0 => Ok(out),
            n => Err(format!("{n} check(s) failed")),
        }
    })
}

/// A finished scenario: its row, the baseline's, the checks, scenario
/// figures beyond the row, and the timeline.
struct Outcome {
    row: Row,
    baseline: Option<Row>,
    checks: Vec<Check>,
    extra: Option<Value>,
    timeline: Vec<record::Point>,
}

/// The baseline (when asked) on its own, for scenarios without a [`Plan`]:
/// `window` clamped to 5..10 s.
async fn baseline_first(
    args: &LoadArgs,
    window: Duration,
) -> Result<(Option<Row>, Duration), String> {
    if !args.baseline {
        return Ok((None, window));
    }
    let plan = Plan {
        name: "baseline",
        auths: vec![HeaderValue::from_static("Bearer baseline")],
        bodies: vec![Bytes::new()],
        limit: u64::MAX,
        duration: window,
        viral: None,
        path: "/",
        earnings: false,
        packets: None,
        admin: String::new(),
        codes: None,
    };
    let window = window.clamp(Duration::from_secs(5), Duration::from_secs(10));
    let (url, handle, thread) = start_baseline()?;
    let conc = args.connections;
    eprintln!("load: baseline, {conc} connections, {} s", window.as_secs());
    let rec = record::Recorder::new("baseline", u64::MAX, window, record::bar_wanted(args.json));
    let row = drive(
        "baseline",
        &format!("{url}/"),
        conc,
        &plan,
        Some(window),
        &rec,
    )
    .await;
    rec.finish();
    handle.stop(false).await;
    let _ = thread.join();
    Ok((Some(row?), window))
}

/// approvals, payouts and mixed: set up the components, measure, settle, check.
async fn run_steps(
    args: &LoadArgs,
    api: &Api,
    admin: &str,
    sim_api: Option<sim::SimApi>,
    weights: [u64; 7],
) -> Result<Outcome, String> {
    let conc = args.connections;
    let run = format!("{:x}", chrono::Utc::now().timestamp_millis());
    let (groups, n_users) = (args.groups(), args.users());
    let mut m = steps::Mixed {
        weights,
        joins: None,
        approvals: None,
        earnings: None,
        payouts: None,
        claims: None,
        scans: None,
    };
    let (name, secs) = match args.scenario {
        Scenario::Approvals => {
            m.weights = [0, 1, 1, 0, 0, 0, 0];
            let users = steps::users(api, admin, "joiner", n_users, conc).await?;
            m.approvals = Some(steps::Approvals::setup(api, admin, groups, users, conc).await?);
            ("approvals", 10)
        }
        Scenario::Payouts => {
            m.weights = [0, 0, 0, 0, 1, 0, 0];
            let sim = sim_api.ok_or("payouts need the simulator")?;
            let users = steps::users(api, admin, "payee", n_users, conc).await?;
            m.payouts = Some(steps::Payouts::setup(api, sim, admin, users, &run, conc).await?);
            ("payouts", 10)
        }
        _ => {
            let users = steps::users(api, admin, "mixed", n_users, conc).await?;
            let w = weights;
            if w[0] > 0 {
                m.joins = Some(steps::Joins::setup(api, admin, groups, users.clone(), conc).await?);
            }
            if w[1] + w[2] > 0 {
                let a = steps::Approvals::setup(api, admin, groups, users.clone(), conc);
                m.approvals = Some(a.await?);
            }
            if w[3] > 0 {
                let earners = steps::users(api, admin, "earner", n_users.min(200), conc).await?;
                m.earnings = Some(steps::Earnings::new(earners, &run));
            }
            if w[4] > 0 {
                let sim = sim_api.ok_or("payouts need the simulator")?;
                let payees = steps::users(api, admin, "payee", n_users.min(100), conc).await?;
                m.payouts = Some(steps::Payouts::setup(api, sim, admin, payees, &run, conc).await?);
            }
            if w[5] > 0 {
                let c = steps::Claims::setup(api, admin, args.packets, users.clone(), conc);
                m.claims = Some(c.await?);
            }
            if w[6] > 0 {
                m.scans = Some(steps::Scans::setup(api, admin, args.codes, conc).await?);
            }
            ("mixed", 10)
        }
    };
    let duration = Duration::from_secs(args.duration.unwrap_or(secs));
    let limit = args.requests.unwrap_or(u64::MAX);
    let (baseline, _) = baseline_first(args, duration).await?;
    let bound = match limit {
        u64::MAX => String::new(),
        n => format!("at most {n} requests / "),
    };
    eprintln!(
        "load: {name}, {conc} connections, {bound}{} s",
        duration.as_secs()
    );
    let rec = record::Recorder::new(name, limit, duration, record::bar_wanted(args.json));
    // approvals: a quarter of the connections (at least one) approve.
    let approvers = if args.scenario == Scenario::Approvals {
        (conc / 4).max(1)
    } else {
        0
    };
    let m = &m;
    let done = Cell::new(false);
    let driven = async {
        let row = steps::drive_steps(
            name,
            conc,
            limit,
            duration,
            Duration::ZERO,
            &rec,
            |w, k| async move {
                match (&m.approvals, w < approvers) {
                    (Some(a), true) => a.approve(api, k).await,
                    (Some(a), false) if args.scenario == Scenario::Approvals => a.join(api).await,
                    _ => m.step(api, admin, k).await,
                }
            },
        )
        .await;
        done.set(true);
        row
    };
    let faults = async {
        match (&m.payouts, args.faults) {
            (Some(p), true) => p.faults(api, &done).await.map(Some),
            _ => Ok(None),
        }
    };
    let (row, phases) = futures_util::future::join(driven, faults).await;
    let (row, phases) = (row?, phases?);
    let timeline = rec.finish();
    let mut checks = Vec::new();
    let mut extra = json!({});
    if let Some(p) = &m.payouts {
        let limit = Duration::from_secs(args.settle_timeout);
        let (open, waited) = p.settle(api, admin, limit).await?;
        eprintln!("load: payouts settled in {waited:.1} s ({open} still open)");
        let (c, e) = p.check(api, conc).await?;
        checks.extend(c);
        extra["payouts"] = e;
        extra["payouts"]["settle_s"] = json!(waited);
        if let Some(n) = phases {
            let (sent, refused) = p.forged.get();
            checks.push(("forged notifications refused", refused, sent));
            extra["payouts"]["fault_phases"] = json!(n);
        }
    }
    if let Some(j) = &m.joins {
        checks.extend(j.check(api).await?);
    }
    if let Some(a) = &m.approvals {
        checks.extend(a.check(api).await?);
    }
    if let Some(e) = &m.earnings {
        checks.extend(e.check(api).await?);
    }
    if let Some(c) = &m.claims {
        checks.extend(c.check(api, admin).await?);
    }
    if let Some(s) = &m.scans {
        checks.extend(s.check(api, admin).await?);
    }
    if m.payouts.is_some() || m.earnings.is_some() || m.claims.is_some() {
        let books = api
            .call(Method::GET, "/v1/admin/ledger/check", admin, Value::Null)
            .await;
        let clean = u64::from(books.is_ok_and(|b| b["findings"] == json!([])));
        checks.push(("ledger check clean", clean, 1));
    }
    let no_transport = row
        .outcomes
        .keys()
        .filter(|k| k.ends_with("transport_error"))
        .count() as u64;
    checks.push(("kinds of request with transport errors", no_transport, 0));
    let extra = (extra != json!({})).then_some(extra);
    Ok(Outcome {
        row,
        baseline,
        checks,
        extra,
        timeline,
    })
}

// ---------------------------------------------------------------- target

/// Accept only `http://` URLs whose host is 127.0.0.0/8, `localhost` or `[::1]`.
fn loopback_base(url: &str) -> Result<String, String> {
    let authority = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next());
    let authority = authority.unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next(),
        None => authority.split(':').next(),
    };
    let host = host.unwrap_or("");
    let v4 = host
        .parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback());
    if !authority.contains('@') && (v4 || host == "::1" || host.eq_ignore_ascii_case("localhost")) {
        return Ok(format!("http://{authority}"));
    }
    Err(format!(
        "refusing {url}: only http:// loopback addresses are accepted"
    ))
}

/// A directory removed (with its contents) on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway data dir and config for a spawned server; removed on drop.
/// The `[storage]` section of a spawned server's config, if not its default.
fn storage_config(cache_mb: Option<u64>, no_storage: bool, checkpoint_secs: Option<u64>) -> String {
    let mut s = String::new();
    if let Some(mb) = cache_mb {
        s.push_str(&format!("cache_mb = {mb}\n"));
    }
    if let Some(secs) = checkpoint_secs {
        s.push_str(&format!("checkpoint_secs = {secs}\n"));
    }
    if no_storage {
        s.push_str("journal = false\n");
    }
    if s.is_empty() {
        s
    } else {
        format!("\n[storage]\n{s}")
    }
}

struct ServerDir {
    dir: TempDir,
    data: PathBuf,
    config: PathBuf,
    admin: String,
}

impl ServerDir {
    /// Write the config (`extra` appended) into a fresh temporary dir.
    fn new(extra: &str) -> Result<ServerDir, String> {
        let dir = std::env::temp_dir().join(format!("qrgate-load-{:016x}", rand::random::<u64>()));
        let dir = TempDir(dir);
        let (data, config) = (dir.0.join("data"), dir.0.join("config.toml"));
        let admin = format!("load-admin-{:032x}", rand::random::<u128>());
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default(); // a valid TOML string
        let text = format!(
            "bind = \"127.0.0.1:0\"\ndata_dir = {}\nadmin_token = {}\n\n[limits]\n\
             group_joins_per_minute = 60000\ngroup_joins_per_minute_max = 60000\n\
             user_joins_per_minute = 1000000\nusers_per_minute_per_ip = 1000000\n\n\
             [packets]\nmax_shares = 1000000\nmax_total_fen = 100000000\n\
             breaker_claims_per_second = 0\nclaims_per_minute_per_user = 1000000\n{extra}",
            q(&data.to_string_lossy()),
            q(&admin)
        );
        std::fs::create_dir_all(&data)
            .and_then(|()| std::fs::write(&config, text))
            .map_err(|e| format!("{}: {e}", dir.0.display()))?;
        Ok(ServerDir {
            dir,
            data,
            config,
            admin,
        })
    }
}

/// A `qrgate serve` child; on drop it is stopped (SIGTERM, then SIGKILL)
/// and its dir (if it owns one) removed.
struct SpawnedServer {
    child: Child,
    _dir: Option<TempDir>,
}

impl SpawnedServer {
    /// Start the server (`extra` is appended to its config); returns it
    /// with its base URL and admin token.
    fn start(extra: &str) -> Result<(SpawnedServer, String, String), String> {
        let dir = ServerDir::new(extra)?;
        let (mut server, base) = SpawnedServer::launch(&dir.config)?;
        server._dir = Some(dir.dir);
        Ok((server, base, dir.admin))
    }

    /// Start `qrgate serve --config config`; returns once it listens.
    fn launch(config: &std::path::Path) -> Result<(SpawnedServer, String), String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve").arg("--config").arg(config);
        for var in ["BIND", "DATA_DIR", "ADMIN_TOKEN", "PUBLIC_BASE_URL"] {
            cmd.env_remove(format!("QRGATE_{var}")); // the config file must win
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let stdout = child.stdout.take();
        let mut server = SpawnedServer { child, _dir: None };
        let stdout = stdout.ok_or("no stdout pipe to the server")?;
        let (tx, rx) = mpsc::channel();
        // Report the listening line, and keep draining so the child never blocks on the pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(base) = line.strip_prefix("qrgate listening on ") {
                    let _ = tx.send(base.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => {
                eprintln!("load: spawned server at {base}");
                Ok((server, base))
            }
            Err(RecvTimeoutError::Timeout) => Err("the server did not start within 60 s".into()),
            Err(RecvTimeoutError::Disconnected) => {
                let status = server.child.wait().map(|s| s.to_string());
                Err(format!(
                    "the server exited before listening ({})",
                    status.unwrap_or_default()
                ))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return; // already gone (and reaped: its pid may be someone else's now)
        }
        let pid = self.child.id().to_string();
        let term = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while term.as_ref().is_ok_and(|s| s.success()) && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The comparison point: an empty handler of `/` (any method) on its own System and thread.
fn start_baseline() -> Result<(String, ServerHandle, JoinHandle<()>), String> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let empty = |_: Bytes| async { HttpResponse::Ok().finish() };
            let bound = HttpServer::new(move || App::new().route("/", web::to(empty)))
                .workers(cores)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .map_err(|e| format!("baseline server: {e}"));
            match bound {
                Err(e) => drop(tx.send(Err(e))),
                Ok(srv) => {
                    let addr = srv.addrs().first().copied().ok_or("no address".to_string());
                    let server = srv.run();
                    let _ = tx.send(addr.map(|a| (a, server.handle())));
                    let _ = server.await;
                }
            }
        })
    });
    let started = rx
        .recv()
        .map_err(|_| "the baseline thread died".to_string());
    let (addr, handle) = started??;
    Ok((format!("http://{addr}"), handle, thread))
}

// ---------------------------------------------------------------- setup

fn client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(connections))
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish()
}

/// Send one request and read the whole answer: (status, body), or a transport error.
async fn send(req: awc::ClientRequest, body: Bytes) -> Result<(u16, Bytes), String> {
    send_limit(req, body, 1 << 20).await
}

/// [`send`] with a larger answer allowed (`limit` bytes).
async fn send_limit(
    req: awc::ClientRequest,
    body: Bytes,
    limit: usize,
) -> Result<(u16, Bytes), String> {
    let mut resp = req.send_body(body).await.map_err(|e| e.to_string())?;
    let bytes = resp.body().limit(limit).await;
    let bytes = bytes.map_err(|e| e.to_string())?;
    Ok((resp.status().as_u16(), bytes))
}

/// The server's public API, for setup and checks.
struct Api {
    c: awc::Client,
    base: String,
    /// The admin token, for `/metrics` (not public by default).
    admin: String,
}

impl Api {
    /// One call as `bearer`, JSON in and out; retries transport errors, 429 and 503.
    async fn call(
        &self,
        m: Method,
        path: &str,
        bearer: &str,
        body: Value,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let body = Bytes::from(match body {
            Value::Null => String::new(),
            b => b.to_string(),
        });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = self.c.request(m.clone(), &url);
            let req = req.insert_header(("Authorization", format!("Bearer {bearer}")));
            // Admin lists (open payouts) can be large: 256 MiB at most.
            let req = req.content_type("application/json");
            let (retry, err) = match send_limit(req, body.clone(), 1 << 28).await {
                Ok((s, b)) if (200..300).contains(&s) => {
                    return serde_json::from_slice(&b).map_err(|e| format!("{m} {path}: {e}"))
                }
                Ok((s, b)) => (
                    s == 429 || s == 503,
                    format!("{s} {}", String::from_utf8_lossy(&b)),
                ),
                Err(e) => (true, e),
            };
            if !retry || attempt >= 5 {
                return Err(format!("{m} {path}: {err}"));
            }
            actix_web::rt::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
    }

    /// One request as `bearer` (JSON body, optional `Idempotency-Key`),
    /// sent once: (status, body) or the transport error. Measured steps use it.
    async fn raw(
        &self,
        m: Method,
        path: &str,
        bearer: &str,
        body: Bytes,
        key: Option<&str>,
    ) -> Result<(u16, Bytes), String> {
        let mut req = self
            .c
            .request(m, format!("{}{path}", self.base))
            .insert_header(("Authorization", format!("Bearer {bearer}")))
            .content_type("application/json");
        if let Some(k) = key {
            req = req.insert_header(("Idempotency-Key", k.to_string()));
        }
        send(req, body).await
    }

    /// A new user (created with the admin token): its session token.
    async fn user(&self, admin: &str, name: String) -> Result<String, String> {
        let v = self.call(Method::POST, "/v1/users", admin, json!({ "name": name }));
        field(&v.await?, "token")
    }

    /// A campaign packet (admin token, merchant `load`) of `count` shares of
    /// 10 fen on average: its id.
    async fn packet(&self, admin: &str, i: usize, count: usize) -> Result<String, String> {
        let body = json!({"total": count * 10, "count": count, "mode": "lucky",
                          "merchant": "load", "ttl_seconds": 86_400});
        let req = self
            .c
            .post(format!("{}/v1/packets", self.base))
            .insert_header(("Authorization", format!("Bearer {admin}")))
            .insert_header((
                "Idempotency-Key",
                format!("load-{}-{i}", chrono::Utc::now().timestamp_millis()),
            ))
            .content_type("application/json");
        let (s, b) = send(req, Bytes::from(body.to_string())).await?;
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        if s != 201 {
            return Err(format!("POST /v1/packets: {s} {v}"));
        }
        field(&v, "id")
    }

    /// A 500-member group owned by `owner` and one invitation: (group id, invitation token).
    async fn group(&self, owner: &str, name: String) -> Result<(String, String), String> {
        let body = json!({ "name": name, "member_limit": 500 });
        let id = field(
            &self.call(Method::POST, "/v1/groups", owner, body).await?,
            "id",
        )?;
        let path = format!("/v1/groups/{id}/invites");
        let invite = self.call(Method::POST, &path, owner, json!({})).await?;
        Ok((id, field(&invite, "token")?))
    }
}

fn field(v: &Value, name: &str) -> Result<String, String> {
    let s = v[name].as_str().map(str::to_string);
    s.ok_or_else(|| format!("no `{name}` in {v}"))
}

/// `f(0..n)` with `conc` in flight, results in index order; progress on stderr.
async fn run_all<T, F, Fut>(label: &str, n: usize, conc: usize, f: F) -> Result<Vec<T>, String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let (next, done, start) = (Cell::new(0), Cell::new(0), Instant::now());
    let last = Cell::new(start);
    let failed = RefCell::new(None::<String>);
    let out = RefCell::new((0..n).map(|_| None).collect::<Vec<Option<T>>>());
    let worker = || async {
        while next.get() < n && failed.borrow().is_none() {
            let i = next.get();
            next.set(i + 1);
            match f(i).await {
                Ok(v) => out.borrow_mut()[i] = Some(v),
                Err(e) => *failed.borrow_mut() = Some(e),
            }
            done.set(done.get() + 1);
            if last.get().elapsed() >= Duration::from_secs(3) {
                last.set(Instant::now());
                let rate = done.get() as f64 / start.elapsed().as_secs_f64();
                eprintln!("setup: {label} {}/{n} ({rate:.0}/s)", done.get());
            }
        }
    };
    join_all((0..conc.min(n)).map(|_| worker())).await;
    if let Some(e) = failed.into_inner() {
        return Err(format!("setup of {label} failed: {e}"));
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("setup: {label} {n}/{n} in {secs:.1} s");
    Ok(out.into_inner().into_iter().flatten().collect())
}

/// What setup produced: request `k` is user `auths[(k % g + k / g) % u]` posting `bodies[k % g]`.
struct Plan {
    name: &'static str,
    auths: Vec<HeaderValue>,
    bodies: Vec<Bytes>,
    limit: u64,
    duration: Duration,
    /// viral: the groups (ids) and their owner's token, for the final check.
    /// Request `k` then goes to group `k / users` (bursts one after the other).
    viral: Option<(Vec<String>, String)>,
    /// The route driven.
    path: &'static str,
    /// earnings: request `k` is made by this (each has its own event id);
    /// `bodies` then holds the wallets' user ids.
    earnings: bool,
    /// packets: the packet ids; request `k` is user `k` claiming packet
    /// `k % packets.len()` (body `{}`).
    packets: Option<Vec<String>>,
    /// The admin token, for the checks.
    admin: String,
    /// codes: the scan codes; request `k` is `GET /s/{codes[k % len]}`.
    codes: Option<Vec<String>>,
}

/// The body of earning `k` (a distinct event, 1 fen, spread over the users).
fn earning_body(run: &str, k: u64, users: &[Bytes]) -> Bytes {
    let user = String::from_utf8_lossy(&users[(k % users.len() as u64) as usize]).into_owned();
    Bytes::from(format!(
        r#"{{"event_id":"load-{run}-{k}","user_id":"{user}","kind":"task_completed","amount":1}}"#
    ))
}

async fn setup(args: &LoadArgs, api: &Api, admin: &str) -> Result<Plan, String> {
    let conc = args.connections;
    let users = |label: &'static str, n: usize| {
        run_all(label, n, conc, move |i| {
            api.user(admin, format!("load-{label}-{i}"))
        })
    };
    let bearers = |tokens: Vec<String>| {
        let hv = tokens.iter().map(|t| format!("Bearer {t}").try_into());
        hv.collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{e}"))
    };
    let body = |token: &str| Bytes::from(json!({ "token": token }).to_string());
    let mut packets = None;
    let mut codes = None;
    let (name, auths, bodies, limit, secs, viral) = match args.scenario {
        Scenario::Joins => {
            let owners = &users("owner", (args.groups() / 50).clamp(1, 300)).await?;
            let owner = |i: usize| &owners[i % owners.len()];
            let groups = run_all("group", args.groups(), conc, |i| {
                api.group(owner(i), format!("load group {i}"))
            });
            let bodies = groups.await?.iter().map(|(_, t)| body(t)).collect();
            let auths = bearers(users("user", args.users()).await?)?;
            let limit = (args.groups() * args.users().min(499)) as u64;
            ("joins", auths, bodies, limit, 10, None)
        }
        Scenario::Viral => {
            let owner = users("owner", 1).await?.pop().ok_or("no owner")?;
            let mut gids = Vec::new();
            let mut bodies = Vec::new();
            for i in 0..args.bursts {
                let (gid, token) = api.group(&owner, format!("load viral {i}")).await?;
                gids.push(gid);
                bodies.push(body(&token));
            }
            let auths = bearers(users("scanner", args.scanners).await?)?;
            let limit = (args.scanners * args.bursts) as u64;
            ("viral", auths, bodies, limit, 120, Some((gids, owner)))
        }
        Scenario::Earnings => {
            let ids = run_all("wallet user", args.users(), conc, |i| async move {
                let v = api
                    .call(
                        Method::POST,
                        "/v1/users",
                        admin,
                        json!({ "name": format!("load-wallet-{i}") }),
                    )
                    .await?;
                field(&v, "user_id")
            })
            .await?;
            let auths = bearers(vec![admin.to_string()])?;
            let bodies = ids.into_iter().map(Bytes::from).collect();
            ("earnings", auths, bodies, u64::MAX, 10, None)
        }
        Scenario::Packets => {
            let auths = bearers(users("claimant", args.users()).await?)?;
            let per = args.users().div_ceil(args.packets);
            let ids = run_all("packet", args.packets, conc, |i| api.packet(admin, i, per));
            packets = Some(ids.await?);
            let bodies = vec![Bytes::from_static(b"{}")];
            ("packets", auths, bodies, args.users() as u64, 60, None)
        }
        Scenario::Codes => {
            let made = run_all("code", args.codes, conc, |i| async move {
                let body = json!({"page": "/landing", "params": {"campaign": "load", "n": i}});
                let v = api.call(Method::POST, "/v1/codes", admin, body).await?;
                field(&v, "code")
            });
            codes = Some(made.await?);
            let auths = bearers(vec![admin.to_string()])?;
            ("codes", auths, vec![Bytes::new()], u64::MAX, 10, None)
        }
        Scenario::Approvals
        | Scenario::Payouts
        | Scenario::Ws
        | Scenario::Mixed
        | Scenario::Memory => {
            return Err(format!("{:?} does not run from a plan", args.scenario));
        }
    };
    let (path, earnings) = match args.scenario {
        Scenario::Earnings => ("/v1/earnings", true),
        Scenario::Packets => ("/v1/packets/{id}/claim", false),
        Scenario::Codes => ("/s/{code}", false),
        _ => ("/v1/join", false),
    };
    Ok(Plan {
        name,
        auths,
        bodies,
        limit: args.requests.map_or(limit, |r| r.min(limit)),
        duration: Duration::from_secs(args.duration.unwrap_or(secs)),
        viral,
        path,
        earnings,
        packets,
        admin: admin.to_string(),
        codes,
    })
}

// ---------------------------------------------------------------- drive

/// One measured run.
#[derive(Serialize)]
struct Row {
    name: String,
    connections: usize,
    requests: u64,
    duration_s: f64,
    throughput_rps: f64,
    successes_per_s: f64,
    latency_ms: Latency,
    outcomes: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_transport_error: Option<String>,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    #[serde(rename = "p99.9")]
    p99_9: f64,
    max: f64,
}

/// `joined`/`pending` (or the status) for 2xx, the problem's `code` or `http_<status>` otherwise.
fn outcome(status: u16, body: &[u8]) -> String {
    let ok = (200..300).contains(&status);
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v[if ok { "status" } else { "code" }].as_str() {
        Some(s) => s.to_string(),
        None if ok => status.to_string(),
        None => format!("http_{status}"),
    }
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())
}

/// One worker's (or a whole run's) answers: latencies, outcomes, successes,
/// the first transport error.
struct Tally {
    hist: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
    ok: u64,
    first_err: Option<String>,
}

impl Tally {
    fn new() -> Result<Tally, String> {
        Ok(Tally {
            hist: histogram()?,
            outcomes: BTreeMap::new(),
            ok: 0,
            first_err: None,
        })
    }

    fn merge(&mut self, other: Tally) -> Result<(), String> {
        self.hist
            .add(&other.hist)
            .map_err(|e| format!("histogram: {e:?}"))?;
        for (code, n) in other.outcomes {
            *self.outcomes.entry(code).or_insert(0) += n;
        }
        self.ok += other.ok;
        self.first_err = self.first_err.take().or(other.first_err);
        Ok(())
    }

    fn into_row(self, name: &str, connections: usize, secs: f64) -> Row {
        let secs = secs.max(1e-9);
        let hist = &self.hist;
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let requests = hist.len();
        Row {
            name: name.to_string(),
            connections,
            requests,
            duration_s: secs,
            throughput_rps: requests as f64 / secs,
            successes_per_s: self.ok as f64 / secs,
            latency_ms: Latency {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p99_9: ms(0.999),
                max: ms(1.0),
            },
            outcomes: self.outcomes,
            first_transport_error: self.first_err,
        }
    }
}

/// The baseline (if asked) then the scenario, both with the plan's requests.
async fn measure(
    args: &LoadArgs,
    api: &Api,
    plan: &Plan,
) -> Result<(Option<Row>, Row, Vec<record::Point>), String> {
    let base = api.base.as_str();
    let (conc, name, limit) = (args.connections, plan.name, plan.limit);
    let secs = plan.duration.as_secs();
    let baseline = if args.baseline {
        let (url, handle, thread) = start_baseline()?;
        eprintln!("load: baseline, {conc} connections, at most {limit} requests / {secs} s");
        // 5 to 10 s of baseline, whatever the request limit: a scenario
        // bounded by its request count (packets, viral) may finish in under a
        // second, too short for a steady figure of an empty handler.
        let window = plan
            .duration
            .clamp(Duration::from_secs(5), Duration::from_secs(10));
        let rec =
            record::Recorder::new("baseline", u64::MAX, window, record::bar_wanted(args.json));
        let row = drive(
            "baseline",
            &format!("{url}/"),
            conc,
            plan,
            Some(window),
            &rec,
        )
        .await;
        rec.finish();
        handle.stop(false).await;
        let _ = thread.join();
        Some(row?)
    } else {
        None
    };
    eprintln!("load: {name}, {conc} connections, at most {limit} requests / {secs} s");
    let before = storage::scrape(api).await;
    let started = Instant::now();
    let rec = record::Recorder::new(name, limit, plan.duration, record::bar_wanted(args.json));
    let row = drive(
        name,
        &format!("{base}{}", plan.path),
        conc,
        plan,
        None,
        &rec,
    )
    .await?;
    let timeline = rec.finish();
    if let (Some(b), Some(a)) = (before, storage::scrape(api).await) {
        eprintln!(
            "load: {}",
            storage::line(b, a, started.elapsed().as_secs_f64())
        );
    }
    Ok((baseline, row, timeline))
}

/// Send the plan's requests to `url` until its limit or duration, `conns` in
/// flight. The baseline passes `at_least`: it runs exactly that long,
/// whatever the plan's request limit.
async fn drive(
    name: &str,
    url: &str,
    conns: usize,
    plan: &Plan,
    at_least: Option<Duration>,
    rec: &record::Recorder,
) -> Result<Row, String> {
    let (c, next, start) = (client(conns), Cell::new(0u64), Instant::now());
    let (limit, duration) = match at_least {
        Some(d) => (u64::MAX, d),
        None => (plan.limit, plan.duration),
    };
    let deadline = start + duration;
    let (groups, users) = (plan.bodies.len() as u64, plan.auths.len() as u64);
    // Event ids of one run never repeat those of an earlier run on the same server.
    let run = format!("{}-{name}", chrono::Utc::now().timestamp_millis());
    let worker = || async {
        let mut t = Tally::new()?;
        while next.get() < limit && Instant::now() < deadline {
            let k = next.get();
            next.set(k + 1);
            let (g, u) = if plan.packets.is_some() {
                (0, k % users)
            } else if plan.viral.is_some() {
                // bursts one after the other: every scanner scans group 0, then group 1, ...
                ((k / users).min(groups - 1), k % users)
            } else {
                (k % groups, (k % groups + k / groups) % users)
            };
            let auth = ("Authorization", plan.auths[u as usize].clone());
            let target = match (&plan.packets, &plan.codes) {
                (Some(ids), _) => url.replace("{id}", &ids[(k % ids.len() as u64) as usize]),
                (_, Some(codes)) => {
                    url.replace("{code}", &codes[(k % codes.len() as u64) as usize])
                }
                _ => url.to_string(),
            };
            let req = if plan.codes.is_some() {
                // What a phone sends after a scan: no token, HTML wanted.
                c.get(target).insert_header(("Accept", "text/html"))
            } else {
                c.post(target)
                    .insert_header(auth)
                    .content_type("application/json")
            };
            let body = if plan.earnings {
                earning_body(&run, k, &plan.bodies)
            } else {
                plan.bodies[g as usize].clone()
            };
            let t0 = Instant::now();
            let res = send(req, body).await;
            let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            t.hist.saturating_record(micros.max(1));
            let (key, ok) = match res {
                Ok((status, b)) => (outcome(status, &b), status == 200 || status == 201),
                Err(e) => {
                    t.first_err.get_or_insert(e);
                    actix_web::rt::time::sleep(Duration::from_millis(10)).await; // no busy loop
                    ("transport_error".to_string(), false)
                }
            };
            t.ok += u64::from(ok);
            rec.record(micros, ok);
            *t.outcomes.entry(key).or_insert(0u64) += 1;
        }
        Ok::<_, String>(t)
    };
    let parts = join_all((0..conns).map(|_| worker())).await;
    let secs = start.elapsed().as_secs_f64();
    let mut all = Tally::new()?;
    for part in parts {
        all.merge(part?)?;
    }
    Ok(all.into_row(name, conns, secs))
}

// ---------------------------------------------------------------- report

/// A check: (what, got, want).
type Check = (&'static str, u64, u64);

/// joins: every answer 200; viral: 499 admitted, the group exactly full, the rest `group_full`.
async fn check(plan: &Plan, row: &Row, api: &Api) -> Result<Vec<Check>, String> {
    let count = |code: &str| row.outcomes.get(code).copied().unwrap_or(0);
    if let Some(codes) = &plan.codes {
        // Scan counts are flushed once a second.
        actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
        let admin = plan.admin.as_str();
        let mut scans = 0;
        for code in codes {
            let v = api
                .call(
                    Method::GET,
                    &format!("/v1/codes/{code}"),
                    admin,
                    Value::Null,
                )
                .await?;
            scans += v["scans"].as_u64().unwrap_or(0);
        }
        return Ok(vec![
            ("200 resolved (every answer)", count("200"), row.requests),
            ("scans counted = resolutions answered", scans, count("200")),
        ]);
    }
    if let Some(ids) = &plan.packets {
        let admin = plan.admin.as_str();
        let (mut recorded, mut within) = (0u64, 0u64);
        for id in ids {
            let p = api
                .call(
                    Method::GET,
                    &format!("/v1/packets/{id}"),
                    admin,
                    Value::Null,
                )
                .await?;
            recorded += p["claimed_count"].as_u64().unwrap_or(0);
            let (claimed, total) = (p["claimed_amount"].as_u64(), p["total"].as_u64());
            within += u64::from(claimed.zip(total).is_some_and(|(c, t)| c <= t));
        }
        let books = api
            .call(Method::GET, "/v1/admin/ledger/check", admin, Value::Null)
            .await;
        let clean = u64::from(books.is_ok_and(|b| b["findings"] == json!([])));
        return Ok(vec![
            ("200 claimed (every answer)", count("200"), row.requests),
            (
                "claims recorded = claims answered 200",
                recorded,
                count("200"),
            ),
            (
                "packets whose claims sum to at most their total",
                within,
                ids.len() as u64,
            ),
            ("ledger check clean", clean, 1),
        ]);
    }
    if plan.earnings {
        let admin = plan.admin.as_str();
        let books = api
            .call(Method::GET, "/v1/admin/ledger/check", admin, Value::Null)
            .await;
        let clean = u64::from(books.is_ok_and(|b| b["findings"] == json!([])));
        return Ok(vec![
            ("201 credited (every answer)", count("201"), row.requests),
            ("ledger check clean", clean, 1),
        ]);
    }
    let Some((gids, owner)) = &plan.viral else {
        return Ok(vec![(
            "200 joined (every answer)",
            count("joined"),
            row.requests,
        )]);
    };
    // Requests are issued in order, so group i got the requests
    // [i * scanners, (i + 1) * scanners) that were sent at all.
    let scanners = plan.auths.len() as u64;
    let (mut joins, mut exact) = (0u64, 0u64);
    for (i, gid) in gids.iter().enumerate() {
        let got = row
            .requests
            .saturating_sub(i as u64 * scanners)
            .min(scanners);
        let want = got.min(499);
        joins += want;
        let path = format!("/v1/groups/{gid}");
        let group = api.call(Method::GET, &path, owner, Value::Null).await?;
        exact += u64::from(group["member_count"].as_u64() == Some(want + 1));
    }
    Ok(vec![
        (
            "groups with exactly owner + admitted members",
            exact,
            gids.len() as u64,
        ),
        ("200 joined", count("joined"), joins),
        ("409 group_full", count("group_full"), row.requests - joins),
    ])
}

fn report(args: &LoadArgs, out: &Outcome) -> Result<(), String> {
    let (row, baseline, checks) = (&out.row, out.baseline.as_ref(), &out.checks);
    let ratio = baseline.map(|b| 100.0 * row.throughput_rps / b.throughput_rps.max(1e-9));
    if args.json {
        let mut v = serde_json::to_value(row).map_err(|e| e.to_string())?;
        v["scenario"] = json!(row.name);
        v["baseline"] = json!(baseline);
        v["ratio_pct"] = json!(ratio);
        if let Some(extra) = &out.extra {
            v["details"] = extra.clone();
        }
        let c = |&(name, got, want): &Check| json!({"name": name, "ok": got == want, "got": got, "want": want});
        v["checks"] = checks.iter().map(c).collect();
        println!("{v}");
        return Ok(());
    }
    let rows = || std::iter::once(row).chain(baseline);
    println!("scenario   conns  requests    secs      req/s       ok/s    p50 ms    p90 ms    p99 ms  p99.9 ms    max ms");
    for r in rows() {
        let (n, c, k, d) = (&r.name, r.connections, r.requests, r.duration_s);
        let (t, s, l) = (r.throughput_rps, r.successes_per_s, &r.latency_ms);
        let (p50, p90, p99, p999, max) = (l.p50, l.p90, l.p99, l.p99_9, l.max);
        println!("{n:<10} {c:>5} {k:>9} {d:>7.2} {t:>10.0} {s:>10.0} {p50:>9.2} {p90:>9.2} {p99:>9.2} {p999:>9.2} {max:>9.2}");
    }
    if let Some(p) = ratio {
        println!("ratio {} / baseline: {p:.1} %", row.name);
    }
    for r in rows() {
        let list: Vec<String> = r.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("outcomes {}: {}", r.name, list.join(", "));
        if let Some(e) = &r.first_transport_error {
            println!("first transport error ({}): {e}", r.name);
        }
    }
    if let Some(extra) = &out.extra {
        if let Some(p) = extra.get("push_latency_ms") {
            let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "push latency ms ({} subscribers, {} events): p50 {:.2}, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}; {} deliveries, {} missing",
                extra["subscribers"], extra["events"], f("p50"), f("p90"), f("p99"), f("p99.9"), f("max"),
                extra["deliveries"], extra["missing"]
            );
        }
        if let Some(p) = extra.get("payouts") {
            println!("payouts: {p}");
        }
    }
    for (name, got, want) in checks {
        let verdict = if got == want { "ok" } else { "FAILED" };
        println!("check {name}: {verdict} (got {got}, want {want})");
    }
    Ok(())
}
