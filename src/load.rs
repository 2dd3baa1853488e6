//! `qrgate load`: drive join traffic against a loopback server and report its capacity.
//!
//! ```text
//! qrgate load --scenario joins|viral [--url http://127.0.0.1:PORT | --spawn] [--admin-token T]
//!             [--connections 64] [--duration 10] [--requests N] [--groups 10000]
//!             [--users 20000] [--scanners 20000] [--baseline] [--json]
//! ```
//!
//! * `--spawn` starts `qrgate serve` as a child process with a temporary data dir, a
//!   random admin token and rate limits raised out of the way; `--url` targets a running
//!   server (loopback only) with the admin token from `--admin-token`/`QRGATE_ADMIN_TOKEN`.
//! * Setup (users, groups, invitations) goes through the public API and is not measured.
//! * `joins`: request `k` joins group `k % groups` as user `(k % groups + k / groups) % users`,
//!   so every (user, group) pair is distinct and no group ever fills (the run stops at
//!   `groups * 499` requests): every answer should be `200 joined`.
//! * `viral`: `--scanners` users scan one invitation of a 500-member group; exactly 499
//!   must be admitted and the rest refused with `409 group_full` (checked, exit 1 if not).
//! * `--baseline` first drives an in-process empty actix-web handler with the same client,
//!   requests and connections, and reports the scenario as a percentage of it.
//!
//! The client is one actix System on this thread: `--connections` concurrent loops share
//! one keep-alive `awc::Client`; latencies go to per-loop HDR histograms, merged at the end.

use actix_web::http::header::HeaderValue;
use actix_web::http::Method;
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
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Durable joins spread over many groups.
    Joins,
    /// Many scanners of one invitation into one 500-member group.
    Viral,
}

#[derive(clap::Args, Debug)]
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
    #[arg(long, default_value_t = 10_000)]
    pub groups: usize,
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    #[arg(long, default_value_t = 20_000)]
    pub scanners: usize,
    /// Also measure an empty actix-web handler and report the ratio.
    #[arg(long)]
    pub baseline: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LoadArgs) -> Result<(), String> {
    if args.connections == 0 || args.groups == 0 || args.users == 0 || args.scanners == 0 {
        return Err("--connections, --groups, --users and --scanners must be at least 1".into());
    }
    // The guard (if any) kills the child and removes its data dir when dropped, also on error.
    let (base, admin, _server) = match &args.url {
        Some(url) => {
            let base = loopback_base(url)?;
            let why = "the admin token is needed for setup: --admin-token or QRGATE_ADMIN_TOKEN";
            (base, args.admin_token.clone().ok_or(why)?, None)
        }
        None => {
            let (server, base, admin) = SpawnedServer::start()?;
            (base, admin, Some(server))
        }
    };
    actix_web::rt::System::new().block_on(scenario(&args, &base, &admin))
}

// ---------------------------------------------------------------- target

/// Accept only `http://` URLs whose host is 127.0.0.0/8, `localhost` or `[::1]`.
fn loopback_base(url: &str) -> Result<String, String> {
    let refuse = || {
        Err(format!(
            "refusing {url}: only http:// loopback addresses are accepted"
        ))
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return refuse();
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return refuse();
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let ok = host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.octets()[0] == 127);
    if !ok {
        return refuse();
    }
    Ok(format!("http://{authority}"))
}

/// A `qrgate serve` child with its temporary directory; both go away on drop.
struct SpawnedServer {
    child: Child,
    dir: PathBuf,
}

impl SpawnedServer {
    fn start() -> Result<(SpawnedServer, String, String), String> {
        let dir = std::env::temp_dir().join(format!("qrgate-load-{:016x}", rand::random::<u64>()));
        let admin = format!("load-admin-{:032x}", rand::random::<u128>());
        let created = Self::write_config(&dir, &admin);
        let child = created.and_then(|config| {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let mut cmd = Command::new(exe);
            cmd.arg("serve").arg("--config").arg(config);
            for var in ["BIND", "DATA_DIR", "ADMIN_TOKEN", "PUBLIC_BASE_URL"] {
                cmd.env_remove(format!("QRGATE_{var}")); // the config file must win
            }
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            cmd.spawn()
                .map_err(|e| format!("cannot start the server: {e}"))
        });
        let mut server = match child {
            Ok(child) => SpawnedServer { child, dir },
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let stdout = server.child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Forward stdout lines, then keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(base) = line.strip_prefix("qrgate listening on ") {
                        eprintln!(
                            "load: spawned server at {base} (data in {})",
                            server.dir.display()
                        );
                        return Ok((server, base.trim().to_string(), admin));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err("the server did not start within 60 s".into())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server
                        .child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    return Err(format!("the server exited before listening ({status})"));
                }
            }
        }
    }

    fn write_config(dir: &std::path::Path, admin: &str) -> Result<PathBuf, String> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let text = format!(
            "bind = \"127.0.0.1:0\"\ndata_dir = {}\nadmin_token = {}\n\n[limits]\n\
             group_joins_per_minute = 60000\ngroup_joins_per_minute_max = 60000\n\
             user_joins_per_minute = 1000000\nusers_per_minute_per_ip = 1000000\n",
            quoted(&data.to_string_lossy()),
            quoted(admin)
        );
        let path = dir.join("config.toml");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        while termed && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Baseline = (
    String,
    actix_web::dev::ServerHandle,
    std::thread::JoinHandle<()>,
);

/// The comparison point: an empty `POST /` handler on its own System and thread.
fn start_baseline() -> Result<Baseline, String> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let empty = |_: Bytes| async { HttpResponse::Ok().finish() };
            let bound = HttpServer::new(move || App::new().route("/", web::post().to(empty)))
                .workers(cores)
                .disable_signals()
                .bind(("127.0.0.1", 0));
            match bound {
                Err(e) => {
                    let _ = tx.send(Err(format!("baseline bind: {e}")));
                }
                Ok(srv) => {
                    let addr = srv.addrs().first().copied();
                    let server = srv.run();
                    let _ = tx.send(
                        addr.map(|a| (a, server.handle()))
                            .ok_or("no address".into()),
                    );
                    let _ = server.await;
                }
            }
        })
    });
    let (addr, handle) = rx
        .recv()
        .map_err(|_| "the baseline server thread died".to_string())??;
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

/// One setup call; retries transport errors, 429 and 503 a few times.
async fn api(
    c: &awc::Client,
    method: Method,
    url: &str,
    bearer: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = c
            .request(method.clone(), url)
            .insert_header(("Authorization", format!("Bearer {bearer}")));
        let sent = match &body {
            Some(b) => r.send_json(b).await,
            None => r.send().await,
        };
        let (status, bytes) = match sent {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body().limit(1 << 20).await.map_err(|e| e.to_string()),
            ),
            Err(e) => (0, Err(e.to_string())),
        };
        let retry = status == 0 || status == 429 || status == 503 || bytes.is_err();
        if retry && attempt < 6 {
            actix_web::rt::time::sleep(Duration::from_millis(200 * attempt)).await;
            continue;
        }
        let bytes = bytes.map_err(|e| format!("{method} {url}: {e}"))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(format!(
                "{method} {url}: {status} {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        return Ok(value);
    }
}

fn field(v: &Value, name: &str) -> Result<String, String> {
    v[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no `{name}` in {v}"))
}

async fn new_user(
    c: &awc::Client,
    base: &str,
    admin: &str,
    name: String,
) -> Result<String, String> {
    let body = Some(json!({ "name": name }));
    field(
        &api(c, Method::POST, &format!("{base}/v1/users"), admin, body).await?,
        "token",
    )
}

/// A 500-member group owned by `owner` and one invitation: (group id, invitation token).
async fn new_group(
    c: &awc::Client,
    base: &str,
    owner: &str,
    name: String,
) -> Result<(String, String), String> {
    let (url, body) = (
        format!("{base}/v1/groups"),
        json!({ "name": name, "member_limit": 500 }),
    );
    let id = field(&api(c, Method::POST, &url, owner, Some(body)).await?, "id")?;
    let url = format!("{base}/v1/groups/{id}/invites");
    let inv = api(c, Method::POST, &url, owner, Some(json!({}))).await?;
    Ok((id, field(&inv, "token")?))
}

/// Run `f(0..n)` with `conc` in flight, in order of index; progress on stderr.
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
                Err(e) => {
                    failed.borrow_mut().get_or_insert(e);
                }
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
    eprintln!(
        "setup: {label} {n}/{n} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(out.into_inner().into_iter().flatten().collect())
}

fn bearer(token: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())
}

fn join_body(token: &str) -> Bytes {
    Bytes::from(json!({ "token": token }).to_string())
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
    latency_ms: BTreeMap<&'static str, f64>,
    outcomes: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_transport_error: Option<String>,
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

/// Send `req(k)` for k = 0.. until `limit` or `dur`, `conns` in flight, to `url`.
async fn drive(
    name: &str,
    url: &str,
    conns: usize,
    limit: u64,
    dur: Duration,
    req: &dyn Fn(u64) -> (HeaderValue, Bytes),
) -> Result<Row, String> {
    let c = client(conns);
    let next = Cell::new(0u64);
    let start = Instant::now();
    let deadline = start + dur;
    let worker = || async {
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
        let (mut outcomes, mut ok, mut first_err) = (BTreeMap::<String, u64>::new(), 0u64, None);
        while next.get() < limit && Instant::now() < deadline {
            let (auth, body) = req(next.get());
            next.set(next.get() + 1);
            let t0 = Instant::now();
            let sent = c
                .post(url)
                .insert_header(("Authorization", auth))
                .content_type("application/json");
            let res = match sent.send_body(body).await {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    r.body()
                        .limit(1 << 20)
                        .await
                        .map(|b| (status, b))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            hist.saturating_record(
                u64::try_from(t0.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
            let key = match res {
                Ok((status, b)) => {
                    ok += u64::from(status == 200);
                    outcome(status, &b)
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                    actix_web::rt::time::sleep(Duration::from_millis(10)).await;
                    "transport_error".to_string()
                }
            };
            *outcomes.entry(key).or_default() += 1;
        }
        Ok::<_, String>((hist, outcomes, ok, first_err))
    };
    let parts = join_all((0..conns).map(|_| worker())).await;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
    let (mut outcomes, mut ok, mut first_transport_error) = (BTreeMap::new(), 0, None);
    for part in parts {
        let (h, o, k, e) = part?;
        hist.add(&h).map_err(|e| format!("histogram: {e:?}"))?;
        for (code, n) in o {
            *outcomes.entry(code).or_default() += n;
        }
        ok += k;
        first_transport_error = first_transport_error.or(e);
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let latency_ms = BTreeMap::from([
        ("p50", ms(0.5)),
        ("p90", ms(0.9)),
        ("p99", ms(0.99)),
        ("p99.9", ms(0.999)),
        ("max", hist.max() as f64 / 1000.0),
    ]);
    let requests = hist.len();
    Ok(Row {
        name: name.to_string(),
        connections: conns,
        requests,
        duration_s: secs,
        throughput_rps: requests as f64 / secs,
        successes_per_s: ok as f64 / secs,
        latency_ms,
        outcomes,
        first_transport_error,
    })
}

/// Setup, optional baseline, the measured run, checks and the report.
async fn scenario(args: &LoadArgs, base: &str, admin: &str) -> Result<(), String> {
    let (conc, c) = (args.connections, client(args.connections));
    let (c, admin) = (&c, admin);
    let mk_users = |label: &'static str, n: usize| {
        run_all(label, n, conc, move |i| {
            new_user(c, base, admin, format!("load-{label}-{i}"))
        })
    };
    let (name, limit, default_secs, viral_group);
    let (auths, bodies): (Vec<HeaderValue>, Vec<Bytes>);
    match args.scenario {
        Scenario::Joins => {
            let owners = mk_users("owner", (args.groups / 50).clamp(1, 300)).await?;
            let owners = &owners;
            let groups = run_all("group", args.groups, conc, |i| {
                new_group(
                    c,
                    base,
                    &owners[i % owners.len()],
                    format!("load group {i}"),
                )
            })
            .await?;
            let users = mk_users("user", args.users).await?;
            auths = users.iter().map(|t| bearer(t)).collect::<Result<_, _>>()?;
            bodies = groups.iter().map(|(_, t)| join_body(t)).collect();
            let capacity = (args.groups * args.users.min(499)) as u64;
            (name, limit, default_secs, viral_group) = ("joins", capacity, 10, None);
        }
        Scenario::Viral => {
            let owner = mk_users("owner", 1).await?.pop().ok_or("no owner")?;
            let (gid, token) = new_group(c, base, &owner, "load viral".into()).await?;
            auths = mk_users("scanner", args.scanners)
                .await?
                .iter()
                .map(|t| bearer(t))
                .collect::<Result<_, _>>()?;
            bodies = vec![join_body(&token)];
            (name, limit, default_secs, viral_group) =
                ("viral", args.scanners as u64, 120, Some((gid, owner)));
        }
    }
    let (groups, users) = (bodies.len() as u64, auths.len() as u64);
    // joins: group k % groups, one join per group per round, a new user each round.
    let req = |k: u64| {
        let g = k % groups;
        let u = (g + k / groups) % users;
        (auths[u as usize].clone(), bodies[g as usize].clone())
    };
    let limit = args.requests.map_or(limit, |r| r.min(limit));
    let dur = Duration::from_secs(args.duration.unwrap_or(default_secs));

    let baseline = if args.baseline {
        let (url, handle, thread) = start_baseline()?;
        eprintln!("load: baseline (empty handler) with {conc} connections...");
        let row = drive("baseline", &format!("{url}/"), conc, limit, dur, &req).await;
        handle.stop(false).await;
        let _ = thread.join();
        Some(row?)
    } else {
        None
    };
    eprintln!(
        "load: {name} with {conc} connections, at most {limit} requests / {} s...",
        dur.as_secs()
    );
    let row = drive(name, &format!("{base}/v1/join"), conc, limit, dur, &req).await?;

    let count = |code: &str| row.outcomes.get(code).copied().unwrap_or(0);
    let mut checks = Vec::new();
    let mut check = |name, got: u64, want: u64| checks.push((name, got == want, got, want));
    match viral_group {
        None => check("200 joined (every answer)", count("joined"), row.requests),
        Some((gid, owner)) => {
            let url = format!("{base}/v1/groups/{gid}");
            let g = api(c, Method::GET, &url, &owner, None).await?;
            let joins = row.requests.min(499);
            check(
                "member_count",
                g["member_count"].as_u64().unwrap_or(0),
                joins + 1,
            );
            check("200 joined", count("joined"), joins);
            check("409 group_full", count("group_full"), row.requests - joins);
        }
    }
    report(args, &row, baseline.as_ref(), &checks)?;
    match checks.iter().filter(|c| !c.1).count() {
        0 => Ok(()),
        n => Err(format!("{n} check(s) failed")),
    }
}

// ---------------------------------------------------------------- report

fn report(
    args: &LoadArgs,
    row: &Row,
    baseline: Option<&Row>,
    checks: &[(&str, bool, u64, u64)],
) -> Result<(), String> {
    let ratio = baseline.map(|b| 100.0 * row.throughput_rps / b.throughput_rps.max(1e-9));
    if args.json {
        let mut v = serde_json::to_value(row).map_err(|e| e.to_string())?;
        v["scenario"] = json!(row.name);
        v["baseline"] = json!(baseline);
        v["ratio_pct"] = json!(ratio);
        v["checks"] = checks
            .iter()
            .map(|(n, ok, got, want)| json!({"name": n, "ok": ok, "got": got, "want": want}))
            .collect();
        println!("{v}");
        return Ok(());
    }
    const QS: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];
    let head: String = QS
        .iter()
        .map(|q| format!(" {:>9}", format!("{q} ms")))
        .collect();
    println!("scenario   conns  requests    secs      req/s       ok/s{head}");
    for r in std::iter::once(row).chain(baseline) {
        let lat: String = QS
            .iter()
            .map(|q| format!(" {:>9.2}", r.latency_ms[q]))
            .collect();
        let (n, c, k, d) = (&r.name, r.connections, r.requests, r.duration_s);
        let (t, s) = (r.throughput_rps, r.successes_per_s);
        println!("{n:<10} {c:>5} {k:>9} {d:>7.2} {t:>10.0} {s:>10.0}{lat}");
    }
    if let Some(p) = ratio {
        println!("ratio {} / baseline: {p:.1} %", row.name);
    }
    for r in std::iter::once(row).chain(baseline) {
        let list: Vec<String> = r.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("outcomes {}: {}", r.name, list.join(", "));
        if let Some(e) = &r.first_transport_error {
            println!("first transport error ({}): {e}", r.name);
        }
    }
    for (name, ok, got, want) in checks {
        let verdict = if *ok { "ok" } else { "FAILED" };
        println!("check {name}: {verdict} (got {got}, want {want})");
    }
    Ok(())
}
