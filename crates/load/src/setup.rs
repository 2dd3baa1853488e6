//! Before the clock starts: the HTTP client, the API calls the scenarios
//! make, and the setup of users, groups, invitations, wallets and packets.

use super::*;

pub(crate) fn client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(connections))
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish()
}

/// Send one request and read the whole answer: (status, body), or a transport error.
pub(crate) async fn send(req: awc::ClientRequest, body: Bytes) -> Result<(u16, Bytes), String> {
    send_limit(req, body, 1 << 20).await
}

/// [`send`] with a larger answer allowed (`limit` bytes).
pub(crate) async fn send_limit(
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
pub(crate) struct Api {
    pub(crate) c: awc::Client,
    pub(crate) base: String,
    /// Every node's base URL (`base` first): the measured requests of the
    /// planned scenarios go round-robin over them.
    pub(crate) spread: Vec<String>,
    /// The admin token, for `/metrics` (not public by default).
    pub(crate) admin: String,
    /// The measured requests sent so far (picks the next node).
    pub(crate) turn: std::sync::atomic::AtomicUsize,
}

impl Api {
    /// One call as `bearer`, JSON in and out; retries transport errors, 429 and 503.
    pub(crate) async fn call(
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
    pub(crate) async fn raw(
        &self,
        m: Method,
        path: &str,
        bearer: &str,
        body: Bytes,
        key: Option<&str>,
    ) -> Result<(u16, Bytes), String> {
        send(self.request(self.next_base(), m, path, bearer, key), body).await
    }

    /// A JSON request as `bearer` to `base`, with an `Idempotency-Key` if given.
    fn request(
        &self,
        base: &str,
        m: Method,
        path: &str,
        bearer: &str,
        key: Option<&str>,
    ) -> awc::ClientRequest {
        let req = self
            .c
            .request(m, format!("{base}{path}"))
            .insert_header(("Authorization", format!("Bearer {bearer}")))
            .content_type("application/json");
        match key {
            Some(k) => req.insert_header(("Idempotency-Key", k.to_string())),
            None => req,
        }
    }

    /// Send again, to the first node, a write whose answer was lost (see
    /// `steps::lost`), as a client would: up to 10 tries while there is
    /// no answer or a 5xx. Every write the harness sends is idempotent.
    pub(crate) async fn again(
        &self,
        m: Method,
        path: &str,
        bearer: &str,
        body: Bytes,
        key: Option<&str>,
    ) -> Result<(u16, Bytes), String> {
        let mut last = String::new();
        for attempt in 0..10u64 {
            let req = self.request(&self.base, m.clone(), path, bearer, key);
            match send(req, body.clone()).await {
                Ok((s, b)) if s < 500 => return Ok((s, b)),
                Ok((s, b)) => last = format!("{s} {}", String::from_utf8_lossy(&b)),
                Err(e) => last = e,
            }
            actix_web::rt::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        }
        Err(format!("{m} {path} again: {last}"))
    }

    /// The node the next measured request goes to: round-robin.
    fn next_base(&self) -> &str {
        let k = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.spread
            .get(k % self.spread.len().max(1))
            .unwrap_or(&self.base)
    }

    /// A cluster (several nodes): wait until the first node, which the
    /// checks read, has applied everything any node had applied when the
    /// run ended, so the checks see every acknowledged write. Nodes that do
    /// not answer (stopped on purpose) are left out.
    pub(crate) async fn converge(&self, limit: Duration) -> Result<(), String> {
        if self.spread.len() < 2 {
            return Ok(());
        }
        let mut target = 0;
        for b in &self.spread {
            if let Some(p) = self.applied(b).await {
                target = target.max(p);
            }
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            let at = self.applied(&self.base).await.unwrap_or(0);
            if at >= target {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "{} applied {at} of {target} within {limit:?}",
                    self.base
                ));
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log position a node has applied (its `/healthz`).
    async fn applied(&self, base: &str) -> Option<u64> {
        let req = self.c.get(format!("{base}/healthz"));
        let (_, body) = send(req, Bytes::new()).await.ok()?;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("applied ")?.trim().parse().ok())
    }

    /// A new user (created with the admin token): its session token.
    pub(crate) async fn user(&self, admin: &str, name: String) -> Result<String, String> {
        let v = self.call(Method::POST, "/v1/users", admin, json!({ "name": name }));
        field(&v.await?, "token")
    }

    /// A campaign packet (admin token, merchant `load`) of `count` shares of
    /// 10 fen on average: its id.
    pub(crate) async fn packet(
        &self,
        admin: &str,
        i: usize,
        count: usize,
    ) -> Result<String, String> {
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
    pub(crate) async fn group(
        &self,
        owner: &str,
        name: String,
    ) -> Result<(String, String), String> {
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

pub(crate) fn field(v: &Value, name: &str) -> Result<String, String> {
    let s = v[name].as_str().map(str::to_string);
    s.ok_or_else(|| format!("no `{name}` in {v}"))
}

/// `f(0..n)` with `conc` in flight, results in index order; progress on stderr.
pub(crate) async fn run_all<T, F, Fut>(
    label: &str,
    n: usize,
    conc: usize,
    f: F,
) -> Result<Vec<T>, String>
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
pub(crate) struct Plan {
    pub(crate) name: &'static str,
    pub(crate) auths: Vec<HeaderValue>,
    pub(crate) bodies: Vec<Bytes>,
    pub(crate) limit: u64,
    pub(crate) duration: Duration,
    /// viral: the groups (ids) and their owner's token, for the final check.
    /// Request `k` then goes to group `k / users` (bursts one after the other).
    pub(crate) viral: Option<(Vec<String>, String)>,
    /// The route driven.
    pub(crate) path: &'static str,
    /// earnings: request `k` is made by this (each has its own event id);
    /// `bodies` then holds the wallets' user ids.
    pub(crate) earnings: bool,
    /// packets: the packet ids; request `k` is user `k` claiming packet
    /// `k % packets.len()` (body `{}`).
    pub(crate) packets: Option<Vec<String>>,
    /// The admin token, for the checks.
    pub(crate) admin: String,
    /// codes: the scan codes; request `k` is `GET /s/{codes[k % len]}`.
    pub(crate) codes: Option<Vec<String>>,
}

/// The body of earning `k` (a distinct event, 1 fen, spread over the users).
pub(crate) fn earning_body(run: &str, k: u64, users: &[Bytes]) -> Bytes {
    let user = String::from_utf8_lossy(&users[(k % users.len() as u64) as usize]).into_owned();
    Bytes::from(format!(
        r#"{{"event_id":"load-{run}-{k}","user_id":"{user}","kind":"task_completed","amount":1}}"#
    ))
}

pub(crate) async fn setup(args: &LoadArgs, api: &Api, admin: &str) -> Result<Plan, String> {
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
