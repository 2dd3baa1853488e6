//! The provider simulator for the payouts (and mixed) scenarios: spawned as
//! `qrgate paysim` the way the integration tests do (time factor 0.01, keys
//! in a temporary dir), or reached at `--paysim URL` next to a `--url` server.

use super::{loopback_base, send, send_limit, TempDir};
use bytes::Bytes;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// A `qrgate paysim` child, killed (and its keys removed) on drop.
pub struct SpawnedSim {
    child: Child,
    pub base: String,
    dir: TempDir,
}

impl Drop for SpawnedSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SpawnedSim {
    pub fn start() -> Result<SpawnedSim, String> {
        let dir =
            std::env::temp_dir().join(format!("qrgate-paysim-{:016x}", rand::random::<u64>()));
        let dir = TempDir(dir);
        std::fs::create_dir_all(&dir.0).map_err(|e| format!("{}: {e}", dir.0.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["paysim", "--bind", "127.0.0.1:0", "--time-factor", "0.01"])
            .arg("--keys")
            .arg(dir.0.join("keys"));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start paysim: {e}"))?;
        let stdout = child.stdout.take();
        let mut sim = SpawnedSim {
            child,
            base: String::new(),
            dir,
        };
        let stdout = stdout.ok_or("no stdout pipe to paysim")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(base) = line.strip_prefix("paysim listening on ") {
                    let _ = tx.send(base.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => {
                eprintln!("load: spawned paysim at {base}");
                sim.base = base;
                Ok(sim)
            }
            Err(RecvTimeoutError::Timeout) => Err("paysim did not start within 120 s".into()),
            Err(RecvTimeoutError::Disconnected) => {
                let status = sim.child.wait().map(|s| s.to_string());
                Err(format!(
                    "paysim exited before listening ({})",
                    status.unwrap_or_default()
                ))
            }
        }
    }

    /// The server's `[provider]` and `[payouts]` configuration for this
    /// simulator (as in the integration tests), with the limits raised out
    /// of a load run's way.
    pub fn server_config(&self) -> Result<String, String> {
        let keys = self.dir.0.join("keys");
        let key_file = keys.join(qrgate_paysim::API_V3_KEY_FILE);
        let key = std::fs::read_to_string(&key_file)
            .map_err(|e| format!("{}: {e}", key_file.display()))?;
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let path = |f: &str| q(&keys.join(f).to_string_lossy());
        Ok(format!(
            "\n[provider]\nbase_url = {}\nmchid = {}\nappid = {}\napp_secret = {}\n\
             merchant_key_file = {}\nmerchant_serial = {}\nplatform_public_key_file = {}\n\
             platform_serial = {}\napi_v3_key = {}\ntimeout_ms = 500\n\n\
             [payouts]\nretry_factor = 0.01\nkyc_above_fen = 1000000000\n\
             daily_max_count = 1000000000\ndaily_max_fen = 1000000000000\n",
            q(&self.base),
            q(qrgate_paysim::MCHID),
            q(qrgate_paysim::APPID),
            q(qrgate_paysim::APP_SECRET),
            path(qrgate_paysim::MERCHANT_PRIVATE_FILE),
            q(qrgate_paysim::MERCHANT_SERIAL),
            path(qrgate_paysim::PLATFORM_PUBLIC_FILE),
            q(qrgate_paysim::PLATFORM_SERIAL),
            q(key.trim()),
        ))
    }
}

/// The simulator's control API (loopback, no auth).
pub struct SimApi {
    c: awc::Client,
    base: String,
}

impl SimApi {
    pub fn new(c: awc::Client, base: &str) -> Result<SimApi, String> {
        Ok(SimApi {
            c,
            base: loopback_base(base)?,
        })
    }

    /// POST JSON to the control API; transport errors are retried (5 tries).
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let body = Bytes::from(body.to_string());
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A retry gets a client (and connection pool) of its own.
            let c = match attempt {
                1 => self.c.clone(),
                _ => super::client(4),
            };
            let req = c
                .post(format!("{}{path}", self.base))
                .content_type("application/json");
            match send(req, body.clone()).await {
                Ok((s, b)) => {
                    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    return if (200..300).contains(&s) {
                        Ok(v)
                    } else {
                        Err(format!("paysim POST {path}: {s} {v}"))
                    };
                }
                Err(e) if attempt >= 5 => return Err(format!("paysim POST {path}: {e}")),
                Err(_) => {
                    actix_web::rt::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
            }
        }
    }

    /// Patch the fault switches.
    pub async fn faults(&self, patch: Value) -> Result<(), String> {
        self.post("/sim/faults", patch).await.map(drop)
    }

    /// Every fault off (counters zeroed, notifications released).
    pub async fn faults_off(&self) -> Result<(), String> {
        self.faults(json!({
            "delay_ms": 0, "timeout_next": 0, "fail_5xx_next": 0, "lost_reply_next": 0,
            "duplicate_notifications": false, "out_of_order": false,
            "forge_signatures": false, "hold_notifications": false, "auto_complete": true
        }))
        .await
    }

    /// Every transfer the simulator knows.
    pub async fn transfers(&self) -> Result<Vec<Value>, String> {
        let req = self.c.get(format!("{}/sim/transfers", self.base));
        let (s, b) = send_limit(req, Bytes::new(), 1 << 30).await?;
        if s != 200 {
            return Err(format!("paysim GET /sim/transfers: {s}"));
        }
        match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Array(a)) => Ok(a),
            Ok(v) => Err(format!("paysim GET /sim/transfers: not a list: {v}")),
            Err(e) => Err(format!("paysim GET /sim/transfers: {e}")),
        }
    }
}
