//! Spawn the real server binary and talk to it.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra_config: String,
    pub client: awc::Client,
    /// Environment for the server process (e.g. `QRGATE_CRASH_AT`).
    pub env: Vec<(String, String)>,
}

fn start(dir: &Path, extra_config: &str, env: &[(String, String)]) -> (Child, String) {
    let cfg = dir.join("config.toml");
    let data = dir.join("data");
    // No scan code pool unless a test asks for one: every server would
    // otherwise draw 1000 QR codes (and commit them) while its test runs.
    let codes = if extra_config.contains("[codes]") {
        ""
    } else {
        "[codes]\npool_size = 0\npool_low_water = 0\n"
    };
    // Tests drive hundreds of brand-new accounts through one invitation in
    // seconds, which is what a bot wave looks like: risk scoring runs and
    // records, but acts only in the tests that ask for it (tests/api/abuse.rs).
    let risk = if extra_config.contains("[risk]") {
        ""
    } else {
        "[risk]\nmode = \"observe\"\n"
    };
    // No embedded payment simulator unless a test asks for a provider.
    let provider = if extra_config.contains("[provider]") {
        ""
    } else {
        "[provider]\nkind = \"none\"\n"
    };
    // A test that sets its own (or no) admin token says so at the top of
    // its extra config.
    let admin = if extra_config.contains("admin_token") {
        String::new()
    } else {
        format!("admin_token = \"{ADMIN}\"\n")
    };
    std::fs::write(
        &cfg,
        format!(
            "bind = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{admin}workers = 2\n{extra_config}\n{codes}{risk}{provider}",
            data.display()
        ),
    )
    .expect("write config");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "debug")
        .env_remove("QRGATE_BIND")
        .env_remove("QRGATE_DATA_DIR")
        .env_remove("QRGATE_ADMIN_TOKEN")
        .env_remove("QRGATE_PUBLIC_BASE_URL")
        .env_remove("QRGATE_CRASH_AT")
        .env_remove("QRGATE_CLOCK_OFFSET_SECS")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn qrgate");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listening line");
    let base = line
        .trim()
        .strip_prefix("qrgate listening on ")
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "unexpected first line: {line:?}; the server's log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .to_string();
    (child, base)
}

/// Start `qrgate paysim` (time scaled by 0.01) with its keys in `dir/keys`
/// and its log in `dir/paysim.log`: the process and its base URL.
pub fn spawn_paysim(dir: &Path) -> (Child, String) {
    let log = std::fs::File::create(dir.join("paysim.log")).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args([
            "paysim",
            "--bind",
            "127.0.0.1:0",
            "--time-factor",
            "0.01",
            "--keys",
        ])
        .arg(dir.join("keys"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn qrgate paysim");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listening line");
    match line.trim().strip_prefix("paysim listening on ") {
        Some(base) => (child, base.to_string()),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("paysim.log")).unwrap_or_default();
            panic!("unexpected first line {line:?}; log:\n{log}");
        }
    }
}

/// An HTTP client that shows redirects instead of following them.
pub fn client() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(30))
        .connector(awc::Connector::new().limit(512))
        .finish()
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with("").await
    }

    /// `extra_config` is TOML appended to the config (e.g. a `[limits]` table).
    pub async fn spawn_with(extra_config: &str) -> TestApp {
        Self::spawn_in(tempfile::tempdir().expect("tempdir"), extra_config).await
    }

    /// Start on `dir`, whose `data/` may hold a data dir already.
    pub async fn spawn_in(dir: tempfile::TempDir, extra_config: &str) -> TestApp {
        Self::spawn_in_env(dir, extra_config, Vec::new()).await
    }

    /// [`spawn_in`](Self::spawn_in) with `env` for the server process, from
    /// its first start on.
    pub async fn spawn_in_env(
        dir: tempfile::TempDir,
        extra_config: &str,
        env: Vec<(String, String)>,
    ) -> TestApp {
        let (child, base) = start(dir.path(), extra_config, &env);
        let app = TestApp {
            base,
            dir,
            child: Some(child),
            extra_config: extra_config.to_string(),
            client: client(),
            env,
        };
        app.wait_healthy().await;
        app
    }

    pub async fn wait_healthy(&self) {
        for _ in 0..100 {
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
            {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become healthy");
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        c.wait().expect("wait")
    }

    /// Start again on the same data dir (new port).
    pub async fn restart(&mut self) {
        self.kill9();
        let (child, base) = start(self.dir.path(), &self.extra_config, &self.env);
        self.child = Some(child);
        self.base = base;
        self.client = client();
        self.wait_healthy().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_with(method, path, token, body, &[]).await
    }

    /// `call` with extra request headers (e.g. `Idempotency-Key`).
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            "PUT" => self.client.put(url),
            "PATCH" => self.client.patch(url),
            "DELETE" => self.client.delete(url),
            m => panic!("method {m}"),
        };
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        for (name, value) in headers {
            req = req.insert_header((*name, value.as_str()));
        }
        let mut resp = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(16 * 1024 * 1024).await.expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call("POST", path, token, Some(body)).await
    }

    /// A new user: (user_id, token).
    pub async fn user(&self, name: &str) -> (String, String) {
        let (s, v) = self
            .post("/v1/users", Some(ADMIN), json!({ "name": name }))
            .await;
        assert_eq!(s, 201, "{v}");
        (s_(&v["user_id"]), s_(&v["token"]))
    }

    pub async fn group(&self, token: &str, body: Value) -> String {
        let (s, v) = self.post("/v1/groups", Some(token), body).await;
        assert_eq!(s, 201, "{v}");
        s_(&v["id"])
    }

    /// (invite id, token, url)
    pub async fn invite(&self, token: &str, group: &str, body: Value) -> (String, String, String) {
        let (s, v) = self
            .post(&format!("/v1/groups/{group}/invites"), Some(token), body)
            .await;
        assert_eq!(s, 201, "{v}");
        (s_(&v["id"]), s_(&v["token"]), s_(&v["url"]))
    }

    /// `n` groups of 500 seats owned by `owner`, each with an open
    /// invitation: (group id, invitation token).
    pub async fn open_groups(&self, owner: &str, n: usize) -> Vec<(String, String)> {
        let mut groups = Vec::new();
        for i in 0..n {
            let g = self
                .group(owner, json!({"name": format!("g{i}"), "member_limit": 500}))
                .await;
            let (_, tok, _) = self.invite(owner, &g, json!({})).await;
            groups.push((g, tok));
        }
        groups
    }

    pub async fn block(&self, token: &str, group: &str, user: &str) -> (u16, Value) {
        self.post(
            &format!("/v1/groups/{group}/blocks"),
            Some(token),
            json!({ "user_id": user }),
        )
        .await
    }

    pub async fn join(&self, token: &str, invite_token: &str) -> (u16, Value) {
        self.post("/v1/join", Some(token), json!({ "token": invite_token }))
            .await
    }

    /// An operator bans group `g` (the admin token).
    pub async fn ban_group(&self, g: &str, reason: &str) -> (u16, Value) {
        self.post(
            &format!("/v1/admin/groups/{g}/ban"),
            Some(ADMIN),
            json!({ "reason": reason }),
        )
        .await
    }

    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        let get = || {
            self.client
                .get(format!("{}/metrics", self.base))
                .insert_header(("Authorization", format!("Bearer {ADMIN}")))
                .send()
        };
        // Once more on a new connection if a pooled one failed: a server
        // that is down fails both.
        let mut r = match get().await {
            Ok(r) => r,
            Err(first) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                get()
                    .await
                    .unwrap_or_else(|e| panic!("metrics: {first}, then {e}"))
            }
        };
        let text =
            String::from_utf8_lossy(&r.body().limit(8 << 20).await.expect("body")).to_string();
        text.lines()
            .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn s_(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// A response header as text ("" when absent or not text).
pub fn header(headers: &awc::http::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

/// Open a data dir in process. sled releases the directory lock of a
/// handle just closed from a background thread, a moment after the close
/// returns: retry that (and only that) for a few seconds.
pub fn open_storage(
    data: &Path,
    key: [u8; 32],
    opts: qrgate::storage::StorageOptions,
) -> qrgate::storage::Storage {
    for _ in 0..100 {
        match qrgate::storage::Storage::open_with(data, key, opts.clone()) {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("open {}: {e}", data.display()),
        }
    }
    panic!("{} stayed locked", data.display());
}

/// Whether any file under `dir` (recursively) contains `needle`.
pub fn any_file_holds(dir: &Path, needle: &[u8]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            any_file_holds(&p, needle)
        } else {
            std::fs::read(&p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        }
    })
}

/// The QR code of an invitation card, read as a phone's camera frames it:
/// the white panel with a band of the card around it (`card::decode_framed`
/// says why not the whole card).
pub fn card_code(png: &[u8]) -> String {
    let img = image::load_from_memory(png).expect("png");
    let framed = img.crop_imm(80, 392, 440, 416).to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(framed);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code");
    grids[0].decode().expect("decodes").1
}
