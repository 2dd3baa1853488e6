//! Commands that talk to a running server: `qrgate reconcile` and
//! `qrgate report large-transactions` (admin API), and `qrgate
//! verify-packet` (public API; anyone can run it).
//!
//! The server holds the database open, so these commands do not read it
//! themselves: they call the admin routes with the admin token (from
//! `--admin-token`, `QRGATE_ADMIN_TOKEN`, or the config file).

use serde_json::{json, Value};
use std::path::PathBuf;

use crate::config::Config;
use crate::domain::reconcile::{table, Report};

#[derive(clap::Args, Debug)]
pub struct Target {
    /// Base URL of the running server (default: http://{bind} from the config).
    #[arg(long)]
    pub url: Option<String>,
    /// Admin token (default: QRGATE_ADMIN_TOKEN, then the config's).
    #[arg(long, env = "QRGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Config file for the defaults above.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// The bill's business day, YYYY-MM-DD.
    #[arg(long)]
    pub date: String,
    /// The provider's bill; without it the server downloads the bill itself.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReportKind {
    /// Transfers and daily payout totals at or above payouts.large_transaction_fen, as CSV.
    LargeTransactions {
        /// First business day, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last business day (default: --from).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Where the backup goes, on the server's host: a new or empty
    /// directory outside the data dir (a relative path is taken from here).
    pub dir: PathBuf,
    /// Give up waiting after this many seconds (the backup itself goes on).
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args, Debug)]
pub struct VerifyPacketArgs {
    /// The packet's landing URL (`http://host/p/rp_…`), or its id with `--url`.
    pub packet: String,
    /// Base URL of the server, when `packet` is an id.
    #[arg(long)]
    pub url: Option<String>,
}

fn resolve(t: &Target) -> Result<(String, String), String> {
    let cfg = Config::load(t.config.as_deref()).map_err(|e| e.to_string())?;
    let url = t
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.bind))
        .trim_end_matches('/')
        .to_string();
    let token = match t.admin_token.clone() {
        Some(t) => t,
        None if cfg.admin_token.is_empty() => {
            crate::keys::admin_token(&cfg.data_dir, false)
                .map_err(|e| {
                    format!("no admin token: none configured and {e}; pass --admin-token")
                })?
                .0
        }
        None => cfg.admin_token,
    };
    Ok((url, token))
}

fn call(method: &str, url: String, token: &str, body: Option<Value>) -> Result<Value, String> {
    call_within(
        method,
        url,
        token,
        body,
        std::time::Duration::from_secs(120),
    )
}

fn call_within(
    method: &str,
    url: String,
    token: &str,
    body: Option<Value>,
    timeout: std::time::Duration,
) -> Result<Value, String> {
    let token = token.to_string();
    let method = method.to_string();
    actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder().timeout(timeout).finish();
        let mut req = match method.as_str() {
            "POST" => client.post(&url),
            _ => client.get(&url),
        };
        if !token.is_empty() {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut resp = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .map_err(|e| format!("{url}: {e}"))?;
        let bytes = resp
            .body()
            .limit(64 << 20)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("{url}: answer is not JSON ({})", resp.status()))?;
        if !resp.status().is_success() {
            return Err(format!(
                "{url}: {} {}: {}",
                resp.status().as_u16(),
                v["code"].as_str().unwrap_or(""),
                v["detail"].as_str().unwrap_or("")
            ));
        }
        Ok(v)
    })
}

/// `qrgate reconcile`: prints the report; exit status 2 when it has breaks.
pub fn reconcile(a: ReconcileArgs) -> Result<bool, String> {
    let (url, token) = resolve(&a.target)?;
    let bill = match &a.file {
        Some(f) => Some(
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?,
        ),
        None => None,
    };
    let v = call(
        "POST",
        format!("{url}/v1/admin/reconcile"),
        &token,
        Some(json!({"date": a.date, "bill": bill})),
    )?;
    let report: Report =
        serde_json::from_value(v.clone()).map_err(|e| format!("unexpected report: {e}"))?;
    if a.json {
        println!("{v}");
    } else {
        print!("{}", table(&report));
    }
    Ok(report.breaks.is_empty())
}

/// `qrgate backup`: ask the running server for a backup into `dir` on its
/// host and print where it is consistent.
pub fn backup(a: BackupArgs) -> Result<(), String> {
    let (url, token) = resolve(&a.target)?;
    let dir = std::path::absolute(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let v = call_within(
        "POST",
        format!("{url}/v1/admin/backup"),
        &token,
        Some(json!({ "dir": dir })),
        std::time::Duration::from_secs(a.timeout_secs),
    )?;
    println!(
        "backup in {} consistent at journal position {} ({} files, {:.1} MB)",
        v["dir"].as_str().unwrap_or(""),
        v["position"],
        v["files"],
        v["bytes"].as_f64().unwrap_or(0.0) / 1e6
    );
    Ok(())
}

/// `qrgate report large-transactions`: CSV on stdout.
pub fn report(k: ReportKind) -> Result<(), String> {
    match k {
        ReportKind::LargeTransactions { from, to, target } => {
            let (url, token) = resolve(&target)?;
            let to = to.unwrap_or_else(|| from.clone());
            let v = call(
                "GET",
                format!("{url}/v1/admin/reports/large-transactions?from={from}&to={to}"),
                &token,
                None,
            )?;
            println!("day,user_id,kind,amount_fen,reference,at");
            for t in v["transactions"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{},{},{},{},{},{}",
                    t["day"].as_str().unwrap_or(""),
                    t["user_id"].as_str().unwrap_or(""),
                    t["kind"].as_str().unwrap_or(""),
                    t["amount"],
                    t["reference"].as_str().unwrap_or(""),
                    t["at"]
                );
            }
            Ok(())
        }
    }
}

/// `qrgate verify-packet`: fetch a closed packet and its claims, check the
/// revealed seed against the commitment and recompute every share.
pub fn verify_packet(a: VerifyPacketArgs) -> Result<(), String> {
    use crate::domain::packet::{parse_seed, verify_claims, Mode};
    let (base, id) = match a.packet.split_once("/p/") {
        Some((base, rest)) => (
            base.to_string(),
            rest.split('?').next().unwrap_or("").to_string(),
        ),
        None => {
            let base = a
                .url
                .ok_or("give the packet's landing URL, or its id with --url")?;
            (base.trim_end_matches('/').to_string(), a.packet)
        }
    };
    let mut claimed = Vec::new();
    let first = loop {
        let url = format!(
            "{base}/v1/packets/{id}?claims_offset={}&claims_limit=1000",
            claimed.len()
        );
        let v = call("GET", url, "", None)?;
        let page = v["claims"].as_array().cloned().unwrap_or_default();
        for c in &page {
            claimed.push(c["amount"].as_u64().ok_or("a claim without an amount")?);
        }
        if page.len() < 1000 {
            break v;
        }
    };
    let seed_hex = first["seed"]
        .as_str()
        .ok_or("the packet is not closed yet: its seed is revealed when it closes")?;
    let seed = parse_seed(seed_hex).ok_or("the revealed seed is not 64 hex digits")?;
    let mode: Mode = serde_json::from_value(first["mode"].clone()).map_err(|e| e.to_string())?;
    let num = |k: &str| first[k].as_u64().ok_or(format!("no `{k}` in the answer"));
    let count = u32::try_from(num("count")?).map_err(|e| e.to_string())?;
    verify_claims(
        mode,
        &seed,
        first["commitment"].as_str().unwrap_or(""),
        num("total")?,
        count,
        num("min_share")?,
        &claimed,
    )?;
    println!(
        "packet {id}: the seed matches the commitment and all {} claims are the shares it gives",
        claimed.len()
    );
    Ok(())
}
