//! The payouts scenario: payees linked and funded, payouts through the
//! provider simulator, and the checks that none is paid twice or lost.

use super::*;

struct Payee {
    token: String,
    funded: u64,
}

#[derive(Clone)]
struct Acked {
    id: String,
    user: usize,
    key: String,
    amount: u64,
}

/// Payouts (with an `Idempotency-Key`) of funded users with a linked
/// account, through the provider simulator; one step in ten sends an
/// earlier key with its body again, which must answer the same payout.
pub struct Payouts {
    pub sim: SimApi,
    payees: Vec<Payee>,
    run: String,
    next: Cell<u64>,
    acked: RefCell<Vec<Acked>>,
    replays: Cell<u64>,
    replays_same: Cell<u64>,
    /// Payouts whose answer was lost: (payee, Idempotency-Key, amount).
    lost: RefCell<Vec<(usize, String, u64)>>,
    /// Forged notifications posted at the server's webhook, and refused.
    pub forged: Cell<(u64, u64)>,
}

/// Each payee gets 10 earnings of 10,000 fen (the default earning maximum).
const FUND_EARNINGS: u64 = 10;
const FUND_EACH: u64 = 10_000;

impl Payouts {
    pub async fn setup(
        api: &Api,
        sim: SimApi,
        admin: &str,
        users: Vec<(String, String)>,
        run: &str,
        conc: usize,
    ) -> Result<Payouts, String> {
        let sim_ref = &sim;
        let users = &users;
        let payees = run_all("payee", users.len(), conc, |i| async move {
            let (uid, token) = &users[i];
            for n in 0..FUND_EARNINGS {
                let body = json!({"event_id": format!("load-{run}-fund-{i}-{n}"),
                                  "user_id": uid, "kind": "task_completed", "amount": FUND_EACH});
                api.call(Method::POST, "/v1/earnings", admin, body).await?;
            }
            let code = format!("load-{run}-{i}");
            let openid = format!("o-load-{run}-{i}");
            sim_ref
                .post("/sim/codes", json!({"code": code, "openid": openid}))
                .await?;
            api.call(
                Method::POST,
                "/v1/wallet/link",
                token,
                json!({ "code": code }),
            )
            .await?;
            Ok(Payee {
                token: token.clone(),
                funded: FUND_EARNINGS * FUND_EACH,
            })
        })
        .await?;
        Ok(Payouts {
            sim,
            payees,
            run: run.to_string(),
            next: Cell::new(0),
            acked: RefCell::new(Vec::new()),
            replays: Cell::new(0),
            replays_same: Cell::new(0),
            lost: RefCell::new(Vec::new()),
            forged: Cell::new((0, 0)),
        })
    }

    /// Send the payouts whose answer was lost again, with their
    /// Idempotency-Key: the payout that answers (made then or now) is
    /// checked like the others.
    pub async fn settle_lost(&self, api: &Api) -> Result<(), String> {
        let lost = std::mem::take(&mut *self.lost.borrow_mut());
        for (user, key, amount) in lost {
            let body = Bytes::from(json!({ "amount": amount }).to_string());
            let token = &self.payees[user].token;
            let res = api
                .again(Method::POST, "/v1/payouts", token, body, Some(&key))
                .await;
            if let Some(id) = json_2xx(&res).and_then(|v| v["id"].as_str().map(String::from)) {
                self.acked.borrow_mut().push(Acked {
                    id,
                    user,
                    key,
                    amount,
                });
            }
        }
        Ok(())
    }

    async fn post(
        &self,
        api: &Api,
        user: usize,
        key: &str,
        amount: u64,
    ) -> Result<(u16, Bytes), String> {
        let body = Bytes::from(json!({ "amount": amount }).to_string());
        let token = &self.payees[user].token;
        api.raw(Method::POST, "/v1/payouts", token, body, Some(key))
            .await
    }

    pub async fn step(&self, api: &Api) -> StepOut {
        let k = self.next.get();
        self.next.set(k + 1);
        let replay = {
            let acked = self.acked.borrow();
            (k % 10 == 9 && !acked.is_empty()).then(|| {
                let a = &acked[((k / 10) % acked.len() as u64) as usize];
                (a.id.clone(), a.user, a.key.clone(), a.amount)
            })
        };
        if let Some((id, user, key, amount)) = replay {
            let res = self.post(api, user, &key, amount).await;
            // A replay without an answer tells nothing.
            if !lost(&res) {
                self.replays.set(self.replays.get() + 1);
                let same = json_2xx(&res).is_some_and(|v| v["id"] == id.as_str());
                self.replays_same
                    .set(self.replays_same.get() + u64::from(same));
            }
            return Some(("payout_replay", res));
        }
        let user = (k % self.payees.len() as u64) as usize;
        let amount = 100 + (k * 37) % 200;
        let key = format!("load-{}-{k}", self.run);
        let res = self.post(api, user, &key, amount).await;
        if let (Ok((202, _)), Some(v)) = (&res, json_2xx(&res)) {
            if let Some(id) = v["id"].as_str() {
                self.acked.borrow_mut().push(Acked {
                    id: id.to_string(),
                    user,
                    key,
                    amount,
                });
            }
        } else if lost(&res) {
            self.lost.borrow_mut().push((user, key, amount));
        }
        Some(("payout", res))
    }

    /// While `done` is false (and for 5 s at least), cycle the simulator's fault switches (one
    /// phase every 300 ms) and post a forged notification at the server;
    /// then turn every fault off. The number of phases applied.
    pub async fn faults(&self, api: &Api, done: &Cell<bool>) -> Result<u64, String> {
        let phases = [
            json!({"timeout_next": 2, "fail_5xx_next": 3, "lost_reply_next": 3,
                   "duplicate_notifications": true}),
            json!({"out_of_order": true, "batch_window_ms": 200, "duplicate_notifications": false,
                   "fail_5xx_next": 2}),
            json!({"forge_signatures": true, "out_of_order": false, "lost_reply_next": 2}),
            json!({"forge_signatures": false, "timeout_next": 1, "duplicate_notifications": true,
                   "out_of_order": true}),
        ];
        let mut n = 0u64;
        // At least 5 s of faults, also when the run itself is shorter: the
        // provider calls of a short run go on after it.
        let until = Instant::now() + Duration::from_secs(5);
        let result = async {
            while !done.get() || Instant::now() < until {
                if let Err(e) = self.sim.faults(phases[(n % 4) as usize].clone()).await {
                    eprintln!("load: fault phase {n} not applied: {e}");
                }
                n += 1;
                let forged = json!({"id": format!("forged-{n}"), "event_type": "MCHTRANSFER.BILL.FINISHED",
                                    "resource": {"algorithm": "AEAD_AES_256_GCM", "ciphertext": "AAAA",
                                                 "nonce": "000000000000", "associated_data": "transfer"}});
                let req = api
                    .c
                    .post(format!("{}/v1/provider/notify", api.base))
                    .insert_header(("Wechatpay-Serial", qrgate_paysim::PLATFORM_SERIAL))
                    .insert_header(("Wechatpay-Timestamp", chrono::Utc::now().timestamp().to_string()))
                    .insert_header(("Wechatpay-Nonce", format!("load{n:028}")))
                    .insert_header(("Wechatpay-Signature", "Zm9yZ2Vk"))
                    .content_type("application/json");
                let refused = matches!(
                    crate::send(req, Bytes::from(forged.to_string())).await,
                    Ok((s, _)) if (400..500).contains(&s)
                );
                let (sent, no) = self.forged.get();
                self.forged.set((sent + 1, no + u64::from(refused)));
                actix_web::rt::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<_, String>(())
        }
        .await;
        let off = self.sim.faults_off().await;
        result.and(off).map(|()| n)
    }

    /// Wait until no payout is open (admin view) or the deadline: the
    /// number still open and the seconds waited.
    pub async fn settle(
        &self,
        api: &Api,
        admin: &str,
        limit: Duration,
    ) -> Result<(u64, f64), String> {
        let start = Instant::now();
        loop {
            let v = api
                .call(
                    Method::GET,
                    "/v1/admin/payouts?filter=open",
                    admin,
                    Value::Null,
                )
                .await?;
            let open = v["payouts"].as_array().map_or(u64::MAX, |a| a.len() as u64);
            if open == 0 || start.elapsed() >= limit {
                return Ok((open, start.elapsed().as_secs_f64()));
            }
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn check(&self, api: &Api, conc: usize) -> Result<(Vec<Check>, Value), String> {
        let acked = self.acked.borrow().clone();
        let acked = &acked;
        let views = run_all("payout check", acked.len(), conc, |i| async move {
            let a = &acked[i];
            let path = format!("/v1/payouts/{}", a.id);
            api.call(Method::GET, &path, &self.payees[a.user].token, Value::Null)
                .await
        })
        .await?;
        let transfers = self.sim.transfers().await?;
        let mut by_ptn: HashMap<String, Vec<&Value>> = HashMap::new();
        for t in &transfers {
            let ptn = t["partner_trade_no"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            by_ptn.entry(ptn).or_default().push(t);
        }
        let (mut terminal, mut succeeded, mut failed) = (0u64, 0u64, 0u64);
        let (mut paid_once, mut failed_unpaid, mut dup_ptn) = (0u64, 0u64, 0u64);
        let mut paid_out = vec![0u64; self.payees.len()];
        let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
        let mut ptns = HashSet::new();
        for (a, v) in acked.iter().zip(&views) {
            let status = v["status"].as_str().unwrap_or("?");
            *statuses.entry(status.to_string()).or_insert(0) += 1;
            let ptn = v["partner_trade_no"].as_str().unwrap_or_default();
            dup_ptn += u64::from(!ptns.insert(ptn.to_string()));
            let at_provider = by_ptn.get(ptn).map(Vec::as_slice).unwrap_or_default();
            let provider_paid: Vec<&&Value> = at_provider
                .iter()
                .filter(|t| t["state"] == "SUCCESS")
                .collect();
            match status {
                "succeeded" => {
                    terminal += 1;
                    succeeded += 1;
                    paid_out[a.user] += a.amount;
                    paid_once += u64::from(
                        at_provider.len() == 1
                            && provider_paid.len() == 1
                            && provider_paid[0]["amount"].as_u64() == Some(a.amount),
                    );
                }
                "failed" => {
                    terminal += 1;
                    failed += 1;
                    failed_unpaid += u64::from(provider_paid.is_empty() && at_provider.len() <= 1);
                }
                _ => {}
            }
        }
        // Transfers of ours the provider paid twice would share a number.
        let provider_dups = by_ptn
            .iter()
            .filter(|(ptn, ts)| ptns.contains(ptn.as_str()) && ts.len() > 1)
            .count() as u64;
        // A payout sent twice under two numbers: a transfer to one of our
        // payees that no payout of ours names.
        let ours = format!("o-load-{}-", self.run);
        let strays = transfers
            .iter()
            .filter(|t| t["openid"].as_str().is_some_and(|o| o.starts_with(&ours)))
            .filter(|t| !ptns.contains(t["partner_trade_no"].as_str().unwrap_or_default()))
            .count() as u64;
        let mut wallets_ok = 0;
        for (u, p) in self.payees.iter().enumerate() {
            let w = api
                .call(Method::GET, "/v1/wallet", &p.token, Value::Null)
                .await?;
            let want = p.funded - paid_out[u];
            wallets_ok +=
                u64::from(w["balance"].as_u64() == Some(want) && w["held"].as_u64() == Some(0));
        }
        let n = acked.len() as u64;
        let checks = vec![
            ("payouts final (succeeded or failed)", terminal, n),
            ("partner trade numbers used by two payouts", dup_ptn, 0),
            (
                "partner trade numbers the provider holds twice",
                provider_dups,
                0,
            ),
            (
                "provider transfers to our payees that no payout names",
                strays,
                0,
            ),
            (
                "succeeded payouts paid by the provider exactly once, same amount",
                paid_once,
                succeeded,
            ),
            (
                "failed payouts the provider did not pay",
                failed_unpaid,
                failed,
            ),
            (
                "payee wallets: balance = funded - succeeded payouts, nothing held",
                wallets_ok,
                self.payees.len() as u64,
            ),
            (
                "idempotent replays answered with the original payout",
                self.replays_same.get(),
                self.replays.get(),
            ),
        ];
        let extra = json!({"payouts_acknowledged": n, "statuses": statuses,
                           "provider_transfers": transfers.len(), "replays": self.replays.get()});
        Ok((checks, extra))
    }
}
