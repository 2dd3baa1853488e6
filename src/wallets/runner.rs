//! The payout job: talks to the provider for every payout whose next attempt
//! is due, and reports what it learnt to the payout's wallet actor.
//!
//! The queue is durable (`pj/` in storage, written with the payout), so a
//! restart resumes every unfinished payout. For a payout the provider has not
//! accepted yet, the job (re)sends the transfer with the same number
//! (`out_bill_no` = `partner_trade_no`) and the same fields (the provider is
//! idempotent on it); after a timeout, an error or an unknown error code it
//! queries the transfer first to learn whether it exists. For an accepted
//! payout it polls the transfer's status (notifications usually arrive
//! first); one the user has not confirmed by its deadline it cancels. Only a
//! final state from the provider settles the hold.

use std::sync::Arc;
use std::time::Duration;

use super::Wallets;
use crate::domain::ids::PayoutId;
use crate::domain::payout::{is_stuck, Answer, Payout, PayoutState};
use crate::domain::payout::{should_cancel, REAL_NAME_FROM_FEN};
use crate::metrics;
use qrgate_provider::adapter::PayoutProvider;
use qrgate_provider::client::{ClientError, TransferRequest, TransferStatus};
use qrgate_provider::notify::TransferState;

/// Payouts handled at once.
const CONCURRENCY: usize = 16;

/// What a provider status means for a payout.
pub fn answer_of(s: &TransferStatus) -> Answer {
    let bill_no = s.transfer_bill_no.clone();
    match s.state {
        TransferState::Success => Answer::Succeeded { bill_no },
        TransferState::Fail => Answer::Failed {
            reason: s
                .fail_reason
                .clone()
                .unwrap_or_else(|| s.state.as_str().to_string()),
        },
        TransferState::Cancelled => Answer::Cancelled {
            reason: s
                .fail_reason
                .clone()
                .unwrap_or_else(|| s.state.as_str().to_string()),
        },
        TransferState::WaitUserConfirm => Answer::AwaitingConfirmation {
            bill_no,
            package_info: s.package_info.clone(),
        },
        TransferState::Canceling => Answer::Cancelling,
        TransferState::Transfering => Answer::Accepted {
            bill_no,
            confirmed: true,
        },
        TransferState::Accepted | TransferState::Processing | TransferState::Unknown => {
            Answer::Accepted {
                bill_no,
                confirmed: false,
            }
        }
    }
}

/// The provider's view must be of the same transfer: amount and payee
/// (when it says them: a create or cancel answer does not).
pub fn same_transfer(p: &Payout, amount: Option<u64>, openid: Option<&str>) -> Result<(), String> {
    if amount.is_some_and(|a| a != p.amount) || openid.is_some_and(|o| o != p.openid) {
        return Err(format!(
            "provider reports {} fen to {} for payout {} ({} fen)",
            amount.map_or("?".into(), |a| a.to_string()),
            openid.unwrap_or("?"),
            p.id,
            p.amount
        ));
    }
    Ok(())
}

fn result_label(r: &Result<impl Sized, ClientError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(ClientError::Timeout) => "timeout",
        Err(ClientError::Unavailable(_)) => "unavailable",
        Err(ClientError::Rejected { .. }) => "rejected",
        Err(ClientError::BadSignature(_)) => "bad_signature",
        Err(ClientError::SignatureProbe) => "signature_probe",
        Err(ClientError::Protocol(_)) => "protocol",
        Err(ClientError::Config(_)) => "config",
    }
}

#[derive(Clone)]
pub struct Runner {
    pub wallets: Wallets,
    pub client: Arc<dyn PayoutProvider>,
    pub notify_url: String,
    pub wake: Arc<tokio::sync::Notify>,
    pub keys: Arc<crate::keys::KeyRing>,
}

impl Runner {
    /// Run forever: every 200 ms, or at once when woken (a new payout).
    pub async fn run(self) {
        let mut last_stuck_check = 0i64;
        let mut reported = std::collections::HashSet::new();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let now_ms = crate::clock::now_ms();
            let storage = self.wallets.storage().clone();
            let due = match storage.due_payouts(now_ms, 256) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "payout queue unreadable");
                    continue;
                }
            };
            for chunk in due.chunks(CONCURRENCY) {
                let work = chunk.iter().map(|id| self.clone().work(*id));
                futures_util::future::join_all(work).await;
            }
            let now = now_ms / 1000;
            if now - last_stuck_check >= 5 {
                last_stuck_check = now;
                self.count_stuck(now, &mut reported).await;
            }
        }
    }

    /// Count the payouts that have not ended in time, and tell the
    /// operator's backend of each once (`payout_stuck`, from the node that
    /// runs the job).
    async fn count_stuck(&self, now: i64, reported: &mut std::collections::HashSet<PayoutId>) {
        let after = self.wallets.shared().config.payouts.stuck_after_seconds;
        let open = match self.wallets.storage().open_payouts() {
            Ok(open) => open,
            Err(e) => {
                tracing::error!(error = %e, "open payouts unreadable");
                return;
            }
        };
        let stuck: Vec<_> = open.iter().filter(|p| is_stuck(p, now, after)).collect();
        metrics::PAYOUTS_STUCK.set(stuck.len() as i64);
        if stuck.is_empty() {
            reported.clear();
            return;
        }
        tracing::warn!(
            stuck = stuck.len(),
            "payouts processing longer than payouts.stuck_after_seconds"
        );
        reported.retain(|id| stuck.iter().any(|p| p.id == *id));
        if !self.wallets.shared().duty.mine("jobs/payouts-stuck") {
            return;
        }
        let mut w = crate::storage::WriteSet::new();
        let mut new = Vec::new();
        for p in stuck.iter().filter(|p| !reported.contains(&p.id)) {
            w.event(&crate::domain::events::Event::for_users(
                vec![],
                now,
                crate::domain::events::EventKind::PayoutStuck {
                    payout_id: p.id,
                    user_id: p.user,
                    amount: p.amount,
                    status: p.state,
                },
            ));
            new.push(p.id);
        }
        if new.is_empty() {
            return;
        }
        match self.wallets.storage().commit(w).await {
            Ok(()) => reported.extend(new),
            Err(e) => tracing::warn!(error = %e, "stuck payouts not reported; trying again"),
        }
    }

    async fn work(self, id: PayoutId) {
        let p = match self.wallets.payout(id) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(payout = %id, error = %e, "payout unreadable");
                return;
            }
        };
        let now_ms = crate::clock::now_ms();
        if p.state.is_final() || p.next_attempt_at.is_none_or(|t| t > now_ms) {
            return;
        }
        // One node talks to the provider about a payout: its wallet's owner.
        if !self
            .wallets
            .shared()
            .duty
            .mine(&format!("wallet/{}", p.user))
        {
            return;
        }
        // Storage shows a write set once applied, before its flush: never
        // ask the provider to pay a payout (and hold) not yet on disk.
        if p.attempts == 0 {
            if let Err(e) = self.wallets.storage().barrier().await {
                tracing::warn!(payout = %p.id, error = %e, "payout not durable; not sent");
                return;
            }
        }
        let (answer, error) = self.ask(&p).await;
        if let Err(e) = self.wallets.payout_progress(&p, answer, error, true).await {
            tracing::warn!(payout = %p.id, error = %e, "payout progress not recorded; retried later");
        }
    }

    /// The transfer as the provider is asked for it: the same fields on
    /// every try (the real name only where the provider requires it).
    fn request(&self, p: &Payout) -> Result<TransferRequest, String> {
        let user_name = if p.amount >= REAL_NAME_FROM_FEN {
            let sealed = self
                .wallets
                .storage()
                .user(p.user)
                .map_err(|e| format!("user unreadable: {e}"))?
                .and_then(|u| u.real_name)
                .ok_or("the user's verified real name is gone")?;
            Some(
                self.keys
                    .open(&sealed, p.user, "real_name")
                    .map_err(|e| format!("cannot unseal the real name: {e}"))?,
            )
        } else {
            None
        };
        Ok(TransferRequest {
            out_bill_no: p.partner_trade_no.clone(),
            openid: p.openid.clone(),
            amount: p.amount,
            remark: p
                .remark
                .clone()
                .unwrap_or_else(|| self.client.remark().to_owned()),
            user_name,
            notify_url: self.notify_url.clone(),
        })
    }

    async fn create(&self, p: &Payout) -> Result<TransferStatus, ClientError> {
        let request = self.request(p).map_err(ClientError::Config)?;
        let r = self.client.create_transfer(&request).await;
        metrics::PROVIDER_CALLS
            .with_label_values(&["create_transfer", result_label(&r)])
            .inc();
        r
    }

    /// One round of talking to the provider about `p`.
    async fn ask(&self, p: &Payout) -> (Option<Answer>, Option<String>) {
        let now = crate::clock::now();
        let sent = if p.state == PayoutState::Pending && !p.accepted {
            match self.create(p).await {
                Ok(s) => return self.judge(p, &s, None),
                Err(e) => Some(e),
            }
        } else if should_cancel(p, now) {
            let r = self.client.cancel_transfer(&p.partner_trade_no).await;
            metrics::PROVIDER_CALLS
                .with_label_values(&["cancel_transfer", result_label(&r)])
                .inc();
            match r {
                Ok(s) => return self.judge(p, &s, None),
                // Refused (the user confirmed meanwhile) or unknown: the
                // query below tells.
                Err(e) => Some(e),
            }
        } else {
            None
        };
        // After an error, or for an accepted transfer: ask what it became.
        let q = self.client.query_transfer(&p.partner_trade_no).await;
        metrics::PROVIDER_CALLS
            .with_label_values(&["query_transfer", result_label(&q)])
            .inc();
        match (q, sent) {
            // Waiting for the user, and we never learnt the package the app
            // needs (the create answer was lost): the same create again
            // answers it.
            (Ok(Some(s)), sent)
                if s.state == TransferState::WaitUserConfirm && p.package_info.is_none() =>
            {
                match self.create(p).await {
                    // The create answers the bill as it stands now.
                    Ok(created) => self.judge(p, &created, sent.map(|e| e.to_string())),
                    Err(e) => {
                        let (answer, _) = self.judge(p, &s, None);
                        (answer, Some(e.to_string()))
                    }
                }
            }
            (Ok(Some(s)), sent) => self.judge(p, &s, sent.map(|e| e.to_string())),
            // The provider refused the transfer for good and has no record
            // of it: nothing was or will be paid.
            (Ok(None), Some(e)) if e.is_refusal() && !p.accepted => (
                Some(Answer::Refused {
                    reason: e.to_string(),
                }),
                None,
            ),
            (Ok(None), Some(e)) => (None, Some(e.to_string())),
            (Ok(None), None) => (
                None,
                Some("the provider has no record of a transfer it accepted".into()),
            ),
            (Err(q), Some(e)) => (None, Some(format!("{e}; then the query failed: {q}"))),
            (Err(q), None) => (None, Some(q.to_string())),
        }
    }

    fn judge(
        &self,
        p: &Payout,
        s: &TransferStatus,
        error: Option<String>,
    ) -> (Option<Answer>, Option<String>) {
        match same_transfer(p, s.amount, s.openid.as_deref()) {
            Ok(()) => (Some(answer_of(s)), error),
            Err(why) => {
                tracing::error!(payout = %p.id, why = %why, "provider reports a different transfer");
                metrics::PAYOUTS.with_label_values(&["contradiction"]).inc();
                (None, Some(why))
            }
        }
    }
}

/// Keep linked accounts' access tokens fresh: once a minute, refresh those
/// expiring within `payouts.refresh_before_seconds`.
pub async fn refresh_links(
    wallets: Wallets,
    client: Arc<dyn PayoutProvider>,
    keys: Arc<crate::keys::KeyRing>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let before = wallets.shared().config.payouts.refresh_before_seconds;
        let now = crate::clock::now();
        let links = match wallets.storage().links() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "links unreadable");
                continue;
            }
        };
        let duty = &wallets.shared().duty;
        for (user, link) in links {
            if link.expires_at - now > before || !duty.mine(&format!("wallet/{user}")) {
                continue;
            }
            let refresh = match keys.open(&link.refresh_token, user, "refresh_token") {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(user = %user, error = %e, "cannot unseal a refresh token");
                    continue;
                }
            };
            let r = client.refresh(&refresh).await;
            metrics::PROVIDER_CALLS
                .with_label_values(&["refresh_token", result_label(&r)])
                .inc();
            let tokens = match r {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(user = %user, error = %e, "token refresh failed");
                    continue;
                }
            };
            let (Ok(access), Ok(refresh)) = (
                keys.seal(&tokens.access_token, user, "access_token"),
                keys.seal(&tokens.refresh_token, user, "refresh_token"),
            ) else {
                tracing::error!(user = %user, "cannot seal refreshed tokens");
                continue;
            };
            let fresh = crate::storage::Link {
                openid: link.openid.clone(),
                access_token: access,
                refresh_token: refresh,
                expires_at: now.saturating_add(tokens.expires_in),
                linked_at: link.linked_at,
                refreshed_at: now,
                relinked_at: link.relinked_at,
            };
            // Only if the user did not re-link meanwhile.
            if let Err(e) = wallets.refresh_link(user, link.linked_at, fresh).await {
                tracing::warn!(user = %user, error = %e, "refreshed tokens not stored");
            }
        }
    }
}
