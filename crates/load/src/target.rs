//! The server under load: its temporary data dir and config, a spawned
//! `qrgate serve`, and the empty actix-web handler the figures are
//! measured against.

use super::*;

/// Accept only `http://` URLs whose host is 127.0.0.0/8, `localhost` or `[::1]`.
pub(crate) fn loopback_base(url: &str) -> Result<String, String> {
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
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway data dir and config for a spawned server; removed on drop.
/// The `[storage]` section of a spawned server's config, if not its default.
pub(crate) fn storage_config(
    cache_mb: Option<u64>,
    no_storage: bool,
    checkpoint_secs: Option<u64>,
) -> String {
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

pub(crate) struct ServerDir {
    pub(crate) dir: TempDir,
    pub(crate) data: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) admin: String,
}

impl ServerDir {
    /// Write the config (`extra` appended) into a fresh temporary dir.
    pub(crate) fn new(extra: &str) -> Result<ServerDir, String> {
        let dir = std::env::temp_dir().join(format!("qrgate-load-{:016x}", rand::random::<u64>()));
        let dir = TempDir(dir);
        let (data, config) = (dir.0.join("data"), dir.0.join("config.toml"));
        let admin = format!("load-admin-{:032x}", rand::random::<u128>());
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default(); // a valid TOML string
                                                                        // No embedded payment simulator unless a scenario brings its own.
        let provider = if extra.contains("[provider]") {
            ""
        } else {
            "\n[provider]\nkind = \"none\"\n"
        };
        let text = format!(
            "bind = \"127.0.0.1:0\"\ndata_dir = {}\nadmin_token = {}\n\n[limits]\n\
             group_joins_per_minute = 60000\ngroup_joins_per_minute_max = 60000\n\
             user_joins_per_minute = 1000000\nusers_per_minute_per_ip = 1000000\n\
             users_per_minute_per_network_before_challenge = 1000000\n\
             invites_per_member_per_hour = 1000000\n\n\
             [packets]\nmax_shares = 1000000\nmax_total_fen = 100000000\n\
             breaker_claims_per_second = 0\nclaims_per_minute_per_user = 1000000\n\n\
             [websocket]\nmax_per_ip = 1000000\nmax_connections = 1000000\n{extra}{provider}",
            q(&data.to_string_lossy()),
            q(&admin)
        );
        std::fs::create_dir_all(&dir.0)
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
pub(crate) struct SpawnedServer {
    pub(crate) child: Child,
    pub(crate) _dir: Option<TempDir>,
}

impl SpawnedServer {
    /// Start the server (`extra` is appended to its config); returns it
    /// with its base URL and admin token.
    pub(crate) fn start(extra: &str) -> Result<(SpawnedServer, String, String), String> {
        let dir = ServerDir::new(extra)?;
        let (mut server, base) = SpawnedServer::launch(&dir.config)?;
        server._dir = Some(dir.dir);
        Ok((server, base, dir.admin))
    }

    /// Start `qrgate serve --config config`; returns once it listens.
    pub(crate) fn launch(config: &std::path::Path) -> Result<(SpawnedServer, String), String> {
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub(crate) fn kill(mut self) {
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
pub(crate) fn start_baseline() -> Result<(String, ServerHandle, JoinHandle<()>), String> {
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
