//! The measured run: the connections, each request's outcome and latency,
//! and the per-second tallies.

use super::*;

/// One measured run.
#[derive(Serialize)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) connections: usize,
    pub(crate) requests: u64,
    pub(crate) duration_s: f64,
    pub(crate) throughput_rps: f64,
    pub(crate) successes_per_s: f64,
    pub(crate) latency_ms: Latency,
    pub(crate) outcomes: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_transport_error: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    #[serde(rename = "p99.9")]
    pub(crate) p99_9: f64,
    pub(crate) max: f64,
}

/// `joined`/`pending` (or the status) for 2xx, the problem's `code` or `http_<status>` otherwise.
pub(crate) fn outcome(status: u16, body: &[u8]) -> String {
    let ok = (200..300).contains(&status);
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v[if ok { "status" } else { "code" }].as_str() {
        Some(s) => s.to_string(),
        None if ok => status.to_string(),
        None => format!("http_{status}"),
    }
}

pub(crate) fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())
}

/// One worker's (or a whole run's) answers: latencies, outcomes, successes,
/// the first transport error.
pub(crate) struct Tally {
    pub(crate) hist: Histogram<u64>,
    pub(crate) outcomes: BTreeMap<String, u64>,
    pub(crate) ok: u64,
    pub(crate) first_err: Option<String>,
}

impl Tally {
    pub(crate) fn new() -> Result<Tally, String> {
        Ok(Tally {
            hist: histogram()?,
            outcomes: BTreeMap::new(),
            ok: 0,
            first_err: None,
        })
    }

    pub(crate) fn merge(&mut self, other: Tally) -> Result<(), String> {
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

    pub(crate) fn into_row(self, name: &str, connections: usize, secs: f64) -> Row {
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

/// The empty handler, served in-process, driven with `plan`'s requests for
/// `window` clamped to 5..10 s.
pub(crate) async fn baseline(
    conc: usize,
    plan: &Plan,
    window: Duration,
    json: bool,
) -> Result<Row, String> {
    let window = window.clamp(Duration::from_secs(5), Duration::from_secs(10));
    let (url, handle, thread) = start_baseline()?;
    let rec = record::Recorder::new("baseline", u64::MAX, window, record::bar_wanted(json));
    let row = drive(
        "baseline",
        &[format!("{url}/")],
        conc,
        plan,
        Some(window),
        &rec,
    )
    .await;
    rec.finish();
    handle.stop(false).await;
    let _ = thread.join();
    row
}

/// The baseline (if asked) then the scenario, both with the plan's requests.
pub(crate) async fn measure(
    args: &LoadArgs,
    api: &Api,
    plan: &Plan,
) -> Result<(Option<Row>, Row, Vec<record::Point>), String> {
    let urls: Vec<String> = api
        .spread
        .iter()
        .map(|b| format!("{b}{}", plan.path))
        .collect();
    let (conc, name, limit) = (args.connections, plan.name, plan.limit);
    let secs = plan.duration.as_secs();
    let baseline = if args.baseline {
        eprintln!("load: baseline, {conc} connections, at most {limit} requests / {secs} s");
        // 5 to 10 s of baseline, whatever the request limit: a scenario
        // bounded by its request count (packets, viral) may finish in under a
        // second, too short for a steady figure of an empty handler.
        Some(baseline(conc, plan, plan.duration, args.json).await?)
    } else {
        None
    };
    eprintln!("load: {name}, {conc} connections, at most {limit} requests / {secs} s");
    let before = storage::scrape(api).await;
    let started = Instant::now();
    let rec = record::Recorder::new(name, limit, plan.duration, record::bar_wanted(args.json));
    let row = drive(name, &urls, conc, plan, None, &rec).await?;
    let timeline = rec.finish();
    if let (Some(b), Some(a)) = (before, storage::scrape(api).await) {
        eprintln!(
            "load: {}",
            storage::line(b, a, started.elapsed().as_secs_f64())
        );
    }
    Ok((baseline, row, timeline))
}

/// Send the plan's requests, round-robin over `urls` (the nodes of a
/// cluster, or one server), until its limit or duration, `conns` in flight. The baseline passes `at_least`: it runs exactly that long,
/// whatever the plan's request limit.
pub(crate) async fn drive(
    name: &str,
    urls: &[String],
    conns: usize,
    plan: &Plan,
    at_least: Option<Duration>,
    rec: &record::Recorder,
) -> Result<Row, String> {
    if urls.is_empty() {
        return Err("no server to send to".into());
    }
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
            let url = &urls[(k % urls.len() as u64) as usize];
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
                // A browser's scan is sent on to the code's page.
                Ok((status, b)) => (
                    outcome(status, &b),
                    status == 200 || status == 201 || (status == 302 && plan.codes.is_some()),
                ),
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
