//! After the run: the invariant checks each scenario states, and the
//! report (table, JSON, plot).

use super::*;

/// A check: (what, got, want).
pub(crate) type Check = (&'static str, u64, u64);

/// joins: every answer 200; viral: 499 admitted, the group exactly full, the rest `group_full`.
pub(crate) async fn check(plan: &Plan, row: &Row, api: &Api) -> Result<Vec<Check>, String> {
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
            (
                "302 sent on to the page (every answer)",
                count("http_302"),
                row.requests,
            ),
            (
                "scans counted = resolutions answered",
                scans,
                count("http_302"),
            ),
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

pub(crate) fn report(args: &LoadArgs, out: &Outcome) -> Result<(), String> {
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
