//! Payouts as the WalletActor keeps them: the user's actor is the single
//! writer of their payouts, daily usage and account link, so a payout's
//! records and its ledger hold (or its post/void) land in one write set.
//!
//! Talking to the provider happens outside the actor (see
//! [`super::runner`]); the runner and the notification route report what the
//! provider said with [`PayoutProgress`], and the actor applies it through
//! [`payout::advance`].

use super::actor::WalletActor;
use super::ledger_core::LedgerActor;
use crate::clock::{now, now_ms};
use crate::domain::events::{Event, EventKind};
use crate::domain::ids::{PayoutId, TransferId, UserId};
use crate::domain::ledger::{AccountId, Holder, Kind, Reason, Spec};
use crate::domain::payout::{self, Answer, DayUsage, Payout, PayoutState, Step as Next};
use crate::error::ApiError;
use crate::metrics;
use crate::registry::{Fail, Step};
use crate::storage::{LargeTransaction, Link, WriteSet};
use crate::wallet_message as message;

/// The answer to [`RequestPayout`]: the payout, and whether this call made it.
#[derive(Debug, Clone)]
pub struct Requested {
    pub payout: Payout,
    pub fresh: bool,
}

fn settle_id(kind: &str, p: &Payout) -> TransferId {
    TransferId::derive(kind, &[p.id.as_bytes()])
}

impl WalletActor {
    fn user(&self) -> Result<UserId, Fail> {
        match self.ledger.holder() {
            Holder::User(u) => Ok(u),
            Holder::System | Holder::Packet(_) => Err(ApiError::Internal.into()),
        }
    }

    fn find_payout(&self, id: PayoutId) -> Result<Option<Payout>, Fail> {
        if let Some((_, p)) = self.payouts.recent.get(&id) {
            return Ok(Some(p.clone()));
        }
        Ok(self.env.storage.payout(id)?)
    }

    fn usage(&mut self, user: UserId, day: &str) -> Result<DayUsage, Fail> {
        if let Some((d, u)) = &self.payouts.usage {
            if d == day {
                return Ok(*u);
            }
        }
        let u = self.env.storage.day_usage(user, day)?;
        self.payouts.usage = Some((day.to_string(), u));
        Ok(u)
    }

    fn remember(&mut self, p: Payout) {
        self.payouts.recent.insert(p.id, (self.ledger.gen(), p));
    }

    fn request_payout(&mut self, m: RequestPayout) -> Step<Requested> {
        let user = self.user()?;
        let key_hash = *blake3::hash(m.key.as_bytes()).as_bytes();
        let existing = match self.payouts.by_key.get(&key_hash) {
            Some((_, id)) => Some(*id),
            None => self.env.storage.payout_by_key(user, &key_hash)?,
        };
        if let Some(id) = existing {
            let p = self.find_payout(id)?.ok_or(ApiError::Internal)?;
            if p.request_hash != m.request_hash {
                return Err(ApiError::IdempotencyKeyReused.into());
            }
            // Answered once the original is durable (it may be in flight).
            return Ok(self.commit(
                WriteSet::new(),
                Requested {
                    payout: p,
                    fresh: false,
                },
            ));
        }
        // Whatever asks (the user, or an automatic payout after an earning).
        let from_config = self
            .env
            .config
            .packets
            .blacklist
            .iter()
            .any(|s| *s == user.to_string());
        if from_config || self.env.storage.is_frozen(user)? {
            return Err(ApiError::AccountFrozen.into());
        }
        let now = now();
        let cfg = self.env.config.payouts.clone();
        let link = self.env.storage.link(user)?;
        let kyc = self
            .env
            .storage
            .user(user)?
            .map(|u| payout::Kyc {
                verified: u.kyc_verified,
                real_name: u.kyc_verified && u.real_name.is_some(),
            })
            .unwrap_or_default();
        let day = cfg.day_of(now);
        let usage = self.usage(user, &day)?;
        payout::check(m.amount, link.is_some(), kyc, usage, &cfg.limits())
            .map_err(ApiError::Payout)?;
        if let Some(wait) = link
            .as_ref()
            .and_then(|l| payout::cooling_left(l.relinked_at, now, cfg.relink_cooling_hours))
        {
            return Err(ApiError::PayoutCoolingOff {
                retry_after_secs: wait,
            }
            .into());
        }
        let id = PayoutId::random();
        let partner_trade_no = payout::partner_trade_no(user, &m.key);
        let hold = Spec {
            id: TransferId::derive("payout hold", &[id.as_bytes()]),
            debit: AccountId::Wallet(user),
            credit: AccountId::Clearing,
            amount: m.amount,
            // No timeout: the money stays held until the provider's final answer.
            kind: Kind::Pending { timeout_seconds: 0 },
            reason: Reason::Payout,
            user_data: partner_trade_no.clone(),
        };
        let mut w = WriteSet::new();
        // The balance is checked here (staging changes no memory).
        let staged = self.ledger.stage(&hold, &mut w)?;
        // A valid request that needs the provider, and there is none.
        if matches!(
            self.env.config.provider_use(),
            crate::config::ProviderUse::None
        ) {
            return Err(ApiError::ProviderNotConfigured.into());
        }
        let p = Payout {
            id,
            user,
            amount: m.amount,
            partner_trade_no,
            openid: link.map(|l| l.openid).unwrap_or_default(),
            state: PayoutState::Pending,
            hold: hold.id,
            request_hash: m.request_hash,
            automatic: m.automatic,
            created_at: now,
            updated_at: now,
            attempts: 0,
            next_attempt_at: Some(now_ms()),
            accepted: false,
            transfer_bill_no: None,
            fail_reason: None,
            last_error: None,
            package_info: None,
            confirm_by: None,
            cancel_requested: false,
            confirmed_at: None,
            remark: self.env.config.transfer_remark().map(str::to_owned),
        };
        w.payout(&p, None);
        w.payout_indexes(&p, &key_hash);
        let new_usage = DayUsage {
            count: usage.count + 1,
            total: usage.total.saturating_add(m.amount),
        };
        w.day_usage(user, &day, &new_usage);
        let large = cfg.large_transaction_fen;
        let report = |kind: &str, amount: u64| LargeTransaction {
            day: day.clone(),
            user_id: user,
            kind: kind.into(),
            amount,
            reference: p.partner_trade_no.clone(),
            at: now,
        };
        let mut reported = Vec::new();
        if m.amount >= large {
            reported.push(report("single_transfer", m.amount));
        }
        if usage.total < large && new_usage.total >= large {
            reported.push(report("daily_total", new_usage.total));
        }
        for t in reported {
            w.large_transaction(&t);
            w.event(&Event::for_users(
                vec![],
                now,
                EventKind::LargeTransaction {
                    user_id: t.user_id,
                    kind: t.kind,
                    amount: t.amount,
                },
            ));
        }
        w.event(&updated_event(&p, &self.env.config));
        let answer = self.commit(
            w,
            Requested {
                payout: p.clone(),
                fresh: true,
            },
        );
        self.ledger.adopt(staged);
        self.payouts.usage = Some((day, new_usage));
        self.payouts
            .by_key
            .insert(key_hash, (self.ledger.gen(), p.id));
        self.remember(p);
        metrics::PAYOUTS.with_label_values(&["requested"]).inc();
        Ok(answer)
    }

    fn payout_progress(&mut self, m: PayoutProgress) -> Step<Payout> {
        let p = self.find_payout(m.id)?.ok_or(ApiError::PayoutNotFound)?;
        let now = now();
        let factor = self.env.config.payouts.retry_factor;
        let mut q = p.clone();
        if m.called {
            q.attempts = q.attempts.saturating_add(1);
        }
        let retry_at = now_ms() + payout::backoff_ms(q.attempts, factor);
        let mut w = WriteSet::new();
        let mut staged = None;
        if let Some(e) = &m.error {
            q.last_error = Some(e.clone());
        }
        if let Some(a) = &m.answer {
            if !matches!(a, Answer::Refused { .. }) {
                q.accepted = true;
            }
            if matches!(a, Answer::Cancelling | Answer::Cancelled { .. }) {
                q.cancel_requested = true;
            }
            match payout::advance(&p, a) {
                Next::Keep => {}
                Next::Processing { bill_no } => {
                    if p.state == PayoutState::AwaitingConfirmation {
                        q.confirmed_at = Some(now);
                    }
                    q.state = PayoutState::Processing;
                    q.transfer_bill_no = Some(bill_no);
                }
                Next::Awaiting {
                    bill_no,
                    package_info,
                } => {
                    q.state = PayoutState::AwaitingConfirmation;
                    q.transfer_bill_no = Some(bill_no);
                    q.package_info = package_info.or(q.package_info);
                    let wait = self.env.config.payouts.confirm_timeout_seconds;
                    q.confirm_by = q.confirm_by.or(Some(now.saturating_add(wait)));
                    metrics::PAYOUTS
                        .with_label_values(&["awaiting_confirmation"])
                        .inc();
                }
                Next::Finish {
                    state,
                    bill_no,
                    reason,
                } => {
                    let kind = match state {
                        PayoutState::Succeeded => Kind::Post { pending_id: p.hold },
                        _ => Kind::Void { pending_id: p.hold },
                    };
                    let name = match state {
                        PayoutState::Succeeded => "payout post",
                        _ => "payout void",
                    };
                    let spec = Spec {
                        id: settle_id(name, &p),
                        debit: AccountId::Wallet(p.user),
                        credit: AccountId::Clearing,
                        amount: 0,
                        kind,
                        reason: Reason::Payout,
                        user_data: p.partner_trade_no.clone(),
                    };
                    staged = Some(self.ledger.stage(&spec, &mut w)?);
                    q.state = state;
                    q.transfer_bill_no = bill_no.or(q.transfer_bill_no);
                    q.fail_reason = reason;
                    metrics::PAYOUTS
                        .with_label_values(&[match state {
                            PayoutState::Succeeded => "succeeded",
                            PayoutState::Cancelled => "cancelled",
                            _ => "failed",
                        }])
                        .inc();
                }
                Next::Contradiction(why) => {
                    tracing::error!(payout = %p.id, partner_trade_no = %p.partner_trade_no, why = %why, "provider contradicts a final payout state");
                    metrics::PAYOUTS.with_label_values(&["contradiction"]).inc();
                    q.last_error = Some(why);
                }
            }
        }
        q.next_attempt_at = payout::next_attempt(&q, retry_at, now_ms());
        q.updated_at = now;
        let moved = q.state != p.state || q.package_info != p.package_info;
        if q == p {
            return Ok(self.commit(WriteSet::new(), p));
        }
        w.payout(&q, Some(&p));
        if moved {
            w.event(&updated_event(&q, &self.env.config));
        }
        let answer = self.commit(w, q.clone());
        // Money returned by a failed payout does not trigger an automatic
        // payout at once (it would fail the same way); the next credit or
        // activation checks the threshold again.
        if let Some(s) = staged {
            self.ledger.adopt(s);
        }
        self.remember(q);
        Ok(answer)
    }

    /// After a credit: if the user opted in and the available balance
    /// reached their threshold, request a payout of it (up to the per-payout
    /// maximum). The idempotency key is the wallet's ledger position, so a
    /// replay after a restart cannot trigger it twice.
    pub(super) fn maybe_auto_payout(&mut self) {
        let Some(threshold) = self.payouts.auto else {
            return;
        };
        let Ok(user) = self.user() else { return };
        let wallet = self.ledger.view(&AccountId::Wallet(user));
        let available = u64::try_from(wallet.available()).unwrap_or(0);
        if available < threshold {
            return;
        }
        let amount = available.min(self.env.config.payouts.max_fen);
        let key = format!("auto-{}", wallet.entries);
        let request_hash = *blake3::hash(key.as_bytes()).as_bytes();
        match self.request_payout(RequestPayout {
            key,
            request_hash,
            amount,
            automatic: true,
        }) {
            // Its durability is tracked by the actor; nobody awaits it.
            Ok(pending) => drop(pending),
            Err(Fail::Api(e)) => {
                tracing::info!(user = %user, code = e.code(), "automatic payout not made")
            }
            Err(Fail::Retired | Fail::Settling) => {}
        }
    }

    fn set_auto_payout(&mut self, m: SetAutoPayout) -> Step<()> {
        let user = self.user()?;
        if let Some(t) = m.threshold {
            let min = self.env.config.payouts.auto_min_threshold_fen;
            if t < min || t > crate::domain::ledger::MAX_AMOUNT {
                return Err(
                    ApiError::validation(format!("threshold must be at least {min} fen")).into(),
                );
            }
        }
        let mut w = WriteSet::new();
        w.auto_payout(user, m.threshold);
        self.payouts.auto = m.threshold;
        Ok(self.commit(w, ()))
    }

    /// Store refreshed tokens, unless the link changed since they were read
    /// (the user re-linked: the new link wins).
    fn refresh_link(&mut self, m: RefreshLink) -> Step<bool> {
        let user = self.user()?;
        match self.env.storage.link(user)? {
            Some(l) if l.linked_at == m.linked_at && l.openid == m.link.openid => {
                let mut w = WriteSet::new();
                w.link(user, &m.link);
                Ok(self.commit(w, true))
            }
            _ => Ok(self.commit(WriteSet::new(), false)),
        }
    }

    /// Link a payout account. Changing it to another one is refused while a
    /// payout is open, tells the user (`link_changed`), and holds payouts
    /// for the cooling period.
    fn set_link(&mut self, m: SetLink) -> Step<()> {
        let user = self.user()?;
        let mut link = m.link;
        let mut w = WriteSet::new();
        if let Some(old) = self.env.storage.link(user)? {
            if old.openid == link.openid {
                link.relinked_at = old.relinked_at;
            } else {
                let open = self
                    .env
                    .storage
                    .user_payouts(user, 1000)?
                    .iter()
                    .chain(self.payouts.recent.values().map(|(_, p)| p))
                    .any(|p| !p.state.is_final());
                if open {
                    return Err(ApiError::LinkChangeBlocked.into());
                }
                link.relinked_at = Some(link.linked_at);
                w.event(&Event::for_users(
                    vec![user],
                    link.linked_at,
                    EventKind::LinkChanged {
                        openid_hint: hint(&link.openid),
                    },
                ));
            }
        }
        w.link(user, &link);
        Ok(self.commit(w, ()))
    }
}

/// The last 4 characters of an openid, for a notice the user recognises.
fn hint(openid: &str) -> String {
    let n = openid.chars().count();
    format!(
        "…{}",
        openid.chars().skip(n.saturating_sub(4)).collect::<String>()
    )
}

fn updated_event(p: &Payout, config: &crate::config::Config) -> Event {
    let (mch_id, app_id) = config.merchant_ids();
    Event::for_users(
        vec![p.user],
        p.updated_at,
        EventKind::PayoutUpdated {
            payout_id: p.id,
            status: p.state,
            amount: p.amount,
            fail_reason: p.fail_reason.clone(),
            confirm: payout::confirm_of(p, mch_id, app_id),
        },
    )
}

message!(RequestPayout -> Requested {
    key: String,
    request_hash: [u8; 32],
    amount: u64,
    automatic: bool,
} => request_payout);
// What the provider said (`answer`), or that asking failed (`error`);
// `called` when this follows a call we made (counts an attempt).
message!(PayoutProgress -> Payout {
    id: PayoutId,
    answer: Option<Answer>,
    error: Option<String>,
    called: bool,
} => payout_progress);
message!(SetLink -> () { link: Link } => set_link);
message!(RefreshLink -> bool { linked_at: i64, link: Link } => refresh_link);
message!(SetAutoPayout -> () { threshold: Option<u64> } => set_auto_payout);
