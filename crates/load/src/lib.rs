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

mod drive;
mod memory;
mod plot;
mod record;
mod report;
mod setup;
mod sim;
mod steps;
mod storage;
mod target;
mod ws;

use drive::*;
use report::*;
use setup::*;
use target::*;

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
    /// Scan code resolution: `GET /s/{code}` as a phone's browser sends it
    /// (answered 302 to the code's page) over `--codes` codes.
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
    /// Base URL of a running server (loopback addresses only). Repeat it
    /// for the nodes of a cluster: the measured requests go round-robin
    /// over them (the ws scenario's subscribers connect to the first);
    /// setup and the checks use the first, once it has applied what every
    /// node had when the run ended.
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    pub url: Vec<String>,
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
    /// (the target: at most 10 %).
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
        if !args.url.is_empty() {
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
    if !args.url.is_empty() || pairs == 0 {
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
    let mut spread = Vec::new();
    for url in &args.url {
        spread.push(loopback_base(url)?);
    }
    let (base, admin, _server, sim_base, _sim) = match spread.first() {
        Some(base) => {
            let base = base.clone();
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
            spread.push(base.clone());
            let sim_base = sim.as_ref().map(|s| s.base.clone());
            (base, admin, Some(server), sim_base, sim)
        }
    };
    actix_web::rt::System::new().block_on(async {
        let api = Api {
            c: client(args.connections),
            base: base.clone(),
            spread: spread.clone(),
            admin: admin.clone(),
            turn: Default::default(),
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
                api.converge(Duration::from_secs(30)).await?;
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
    let conc = args.connections;
    eprintln!("load: baseline, {conc} connections, {} s", window.as_secs());
    let row = baseline(conc, &plan, window, args.json).await?;
    Ok((Some(row), window))
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
    api.converge(Duration::from_secs(30)).await?;
    let mut checks = Vec::new();
    let mut extra = json!({});
    if let Some(p) = &m.payouts {
        let limit = Duration::from_secs(args.settle_timeout);
        p.settle_lost(api).await?;
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
        checks.extend(e.check(api, admin).await?);
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
