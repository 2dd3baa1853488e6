//! Payout rules: the risk checks before money moves, the state machine a
//! payout follows as the provider answers, and retry timing.
//!
//! ```text
//! pending ──(ACCEPTED)──> processing ──(WAIT_USER_CONFIRM)──> awaiting_confirmation
//!    │                        │  ▲                                 │      │
//!    │                        │  └──(the user confirmed: TRANSFERING)─┘      │
//!    │                        ├──(SUCCESS)──> succeeded                      │
//!    │                        └──(FAIL)─────> failed                         │
//!    │                                  (CANCELLED: cancelled) <─────────────┘
//!    └──(FAIL, or the provider never had it and refused it)──> failed
//! ```
//! The user confirms a transfer in WeChat with the `package_info` of the
//! create answer. One not confirmed in time is cancelled: the provider
//! answers `CANCELING`, during which the user may still confirm (and be
//! paid), so only `CANCELLED` voids the hold.
//! A timeout, a 5xx, or an answer whose signature does not verify is never a
//! failure: the job asks again with the same `partner_trade_no` (the
//! provider is idempotent on it) and queries the transfer. Only a terminal
//! answer posts (succeeded) or voids (failed) the ledger hold, so a payout is
//! paid at most once and its money is never released while the provider
//! might still pay it.

use serde::{Deserialize, Serialize};

use super::ids::{PayoutId, TransferId, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// Held in the ledger; not yet accepted by the provider.
    Pending,
    /// The provider accepted it and has not finished it.
    Processing,
    /// The provider waits for the user to confirm receipt in WeChat (see
    /// the payout's `confirm`).
    AwaitingConfirmation,
    Succeeded,
    Failed,
    /// Not confirmed in time (or declined): cancelled, the hold released.
    Cancelled,
}

impl PayoutState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PayoutState::Succeeded | PayoutState::Failed | PayoutState::Cancelled
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub id: PayoutId,
    pub user: UserId,
    pub amount: u64,
    /// Our number for the provider; stable across retries.
    pub partner_trade_no: String,
    pub openid: String,
    pub state: PayoutState,
    /// The pending ledger transfer that holds the amount.
    pub hold: TransferId,
    /// blake3 of the request body, to tell a retry from a reused key.
    pub request_hash: [u8; 32],
    /// Made by the automatic payout rule rather than a request.
    pub automatic: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Calls made to the provider so far.
    pub attempts: u32,
    /// When the job next talks to the provider (None once final).
    pub next_attempt_at: Option<i64>,
    /// The provider accepted the transfer at least once (it exists there).
    pub accepted: bool,
    pub transfer_bill_no: Option<String>,
    pub fail_reason: Option<String>,
    pub last_error: Option<String>,
    /// What the app passes to WeChat for the user to confirm the transfer,
    /// once the provider asked for confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_info: Option<String>,
    /// When an unconfirmed transfer is cancelled (unix seconds), set when
    /// the provider first asks for confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_by: Option<i64>,
    /// The provider accepted our cancel (it answered `CANCELING` or
    /// `CANCELLED`): the job only queries from then on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// When the user confirmed (the provider went on to `TRANSFERING`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<i64>,
    /// The remark sent with the transfer, fixed when the payout was made so
    /// that every retry sends the same fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
}

/// What the app hands to WeChat for the user to confirm a transfer
/// (`wx.requestMerchantTransfer({mchId, appId, package})` in a mini
/// program, `WeixinJSBridge.invoke('requestMerchantTransfer', ...)` in a
/// page).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Confirm {
    pub mch_id: String,
    pub app_id: String,
    pub package_info: String,
}

/// The confirmation a payout waits for, given the merchant's ids: while it
/// awaits it, and while it is processing after one (WeChat lets the user
/// open the confirmation again while the transfer is under way).
pub fn confirm_of(p: &Payout, mch_id: &str, app_id: &str) -> Option<Confirm> {
    let open = match p.state {
        PayoutState::AwaitingConfirmation => true,
        PayoutState::Processing => p.confirmed_at.is_some(),
        _ => false,
    };
    if !open {
        return None;
    }
    Some(Confirm {
        mch_id: mch_id.to_owned(),
        app_id: app_id.to_owned(),
        package_info: p.package_info.clone()?,
    })
}

/// Limits of the risk checks, from config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub min_fen: u64,
    pub max_fen: u64,
    pub daily_max_fen: u64,
    pub daily_max_count: u32,
    /// Payouts above this need a KYC-verified user.
    pub kyc_above_fen: u64,
}

/// A user's payouts on one day (requested, whatever became of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    pub count: u32,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("link a payment account first (POST /v1/wallet/link)")]
    NotLinked,
    #[error("a payout must be at least {0} fen")]
    BelowMinimum(u64),
    #[error("a payout may be at most {0} fen")]
    AboveMaximum(u64),
    #[error(
        "this payout would exceed the daily payout total of {limit} fen ({used} fen used today)"
    )]
    DailyAmount { limit: u64, used: u64 },
    #[error("at most {0} payouts per day")]
    DailyCount(u32),
    #[error("payouts above {0} fen need a verified identity (KYC)")]
    KycRequired(u64),
    #[error("payouts of {0} fen or more need a verified identity with a real name (KYC)")]
    RealNameRequired(u64),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotLinked => "account_not_linked",
            Refusal::BelowMinimum(_) => "payout_below_minimum",
            Refusal::AboveMaximum(_) => "payout_above_maximum",
            Refusal::DailyAmount { .. } => "daily_payout_limit",
            Refusal::DailyCount(_) => "payout_velocity_exceeded",
            Refusal::KycRequired(_) | Refusal::RealNameRequired(_) => "kyc_required",
        }
    }
}

/// Transfers of at least this many fen (2,000 yuan) must name the payee:
/// the provider checks the real name.
pub const REAL_NAME_FROM_FEN: u64 = qrgate_provider::wire::USER_NAME_REQUIRED_FROM_FEN;

/// What the operator verified about a user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kyc {
    pub verified: bool,
    /// A real name was recorded with the verification.
    pub real_name: bool,
}

/// The risk checks, in this order: linked account, per-payout bounds, KYC
/// (and a real name from 2,000 yuan), velocity (count per day), daily
/// total. Balance is checked by the ledger when the amount is held.
pub fn check(
    amount: u64,
    linked: bool,
    kyc: Kyc,
    today: DayUsage,
    l: &Limits,
) -> Result<(), Refusal> {
    let kyc_verified = kyc.verified;
    if !linked {
        return Err(Refusal::NotLinked);
    }
    if amount < l.min_fen {
        return Err(Refusal::BelowMinimum(l.min_fen));
    }
    if amount > l.max_fen {
        return Err(Refusal::AboveMaximum(l.max_fen));
    }
    if amount > l.kyc_above_fen && !kyc_verified {
        return Err(Refusal::KycRequired(l.kyc_above_fen));
    }
    if amount >= REAL_NAME_FROM_FEN && !(kyc_verified && kyc.real_name) {
        return Err(Refusal::RealNameRequired(REAL_NAME_FROM_FEN));
    }
    if today.count >= l.daily_max_count {
        return Err(Refusal::DailyCount(l.daily_max_count));
    }
    if today.total.saturating_add(amount) > l.daily_max_fen {
        return Err(Refusal::DailyAmount {
            limit: l.daily_max_fen,
            used: today.total,
        });
    }
    Ok(())
}

/// The provider's number for a payout, derived from the user and their
/// idempotency key so every retry sends the same one: `QG` and 30 hex
/// digits (the provider allows 32 of `[0-9A-Za-z]`).
pub fn partner_trade_no(user: UserId, key: &str) -> String {
    let mut h = blake3::Hasher::new_derive_key("qrgate 2026 partner_trade_no");
    h.update(user.as_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut s = String::with_capacity(32);
    s.push_str("QG");
    for b in &digest.as_bytes()[..15] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// What the provider said about a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepted or still processing; `confirmed` once the user confirmed
    /// (`TRANSFERING`).
    Accepted {
        bill_no: String,
        confirmed: bool,
    },
    /// Waiting for the user to confirm; the create answer carries the
    /// package the app needs, a query does not.
    AwaitingConfirmation {
        bill_no: String,
        package_info: Option<String>,
    },
    /// A cancel is under way (`CANCELING`): the user may still confirm.
    Cancelling,
    /// Cancelled (`CANCELLED`): nothing was paid.
    Cancelled {
        reason: String,
    },
    Succeeded {
        bill_no: String,
    },
    Failed {
        reason: String,
    },
    /// The provider has no transfer with our number and refused to create it
    /// (a definitive business error): nothing was or will be paid.
    Refused {
        reason: String,
    },
}

/// What to do with a payout after an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing changes (a duplicate, or news older than what we know).
    Keep,
    /// Now processing at the provider.
    Processing { bill_no: String },
    /// Now waiting for the user's confirmation (`package_info`: the one to
    /// keep, if the answer brought one).
    Awaiting {
        bill_no: String,
        package_info: Option<String>,
    },
    /// Final: post the hold (succeeded) or void it (failed).
    Finish {
        state: PayoutState,
        bill_no: Option<String>,
        reason: Option<String>,
    },
    /// The answer contradicts a final state already recorded (e.g. FAIL after
    /// SUCCESS): keep what we have and raise an alert.
    Contradiction(String),
}

pub fn advance(p: &Payout, a: &Answer) -> Step {
    use PayoutState::*;
    let open = !p.state.is_final();
    match (p.state, a) {
        (Pending, Answer::Accepted { bill_no, .. }) => Step::Processing {
            bill_no: bill_no.clone(),
        },
        // The user confirmed: the money is moving.
        (
            AwaitingConfirmation,
            Answer::Accepted {
                bill_no,
                confirmed: true,
            },
        ) => Step::Processing {
            bill_no: bill_no.clone(),
        },
        (Processing | AwaitingConfirmation, Answer::Accepted { .. }) => Step::Keep,
        // Confirmation is asked before the money moves: a processing payout
        // that was never asked to confirm may be; one past it is not again.
        (
            Pending,
            Answer::AwaitingConfirmation {
                bill_no,
                package_info,
            },
        )
        | (
            Processing,
            Answer::AwaitingConfirmation {
                bill_no,
                package_info,
            },
        ) if p.package_info.is_none() => Step::Awaiting {
            bill_no: bill_no.clone(),
            package_info: package_info.clone(),
        },
        (
            AwaitingConfirmation,
            Answer::AwaitingConfirmation {
                bill_no,
                package_info,
            },
        ) if p.package_info.is_none() && package_info.is_some() => Step::Awaiting {
            bill_no: bill_no.clone(),
            package_info: package_info.clone(),
        },
        (_, Answer::AwaitingConfirmation { .. } | Answer::Cancelling) => Step::Keep,
        (_, Answer::Succeeded { bill_no }) if open => Step::Finish {
            state: Succeeded,
            bill_no: Some(bill_no.clone()),
            reason: None,
        },
        (_, Answer::Failed { reason }) if open => Step::Finish {
            state: Failed,
            bill_no: p.transfer_bill_no.clone(),
            reason: Some(reason.clone()),
        },
        (_, Answer::Cancelled { reason }) if open => Step::Finish {
            state: Cancelled,
            bill_no: p.transfer_bill_no.clone(),
            reason: Some(reason.clone()),
        },
        // A refusal is final only if the provider never accepted the transfer.
        (Pending, Answer::Refused { reason }) if !p.accepted => Step::Finish {
            state: Failed,
            bill_no: None,
            reason: Some(reason.clone()),
        },
        (_, Answer::Refused { .. }) if open => Step::Keep,
        (Succeeded, Answer::Succeeded { .. })
        | (Failed | Cancelled, Answer::Failed { .. } | Answer::Cancelled { .. }) => Step::Keep,
        (_, Answer::Accepted { .. } | Answer::Refused { .. }) => Step::Keep,
        (Succeeded, Answer::Failed { reason } | Answer::Cancelled { reason }) => {
            Step::Contradiction(format!(
                "provider reports {reason} for a payout recorded as succeeded"
            ))
        }
        (_, Answer::Succeeded { .. }) => Step::Contradiction(format!(
            "provider reports SUCCESS for a payout recorded as {} (its hold was released)",
            if p.state == Cancelled {
                "cancelled"
            } else {
                "failed"
            }
        )),
        // Every open state was handled above.
        (Pending | Processing | AwaitingConfirmation, _) => Step::Keep,
    }
}

/// When the job next talks to the provider about `p` (ms), given the
/// backoff's `retry_at`: never once final; by its confirmation deadline
/// while one is ahead (the job then cancels it); past it (a cancel that
/// failed) the backoff holds, so a failing cancel is not hammered.
pub fn next_attempt(p: &Payout, retry_at: i64, now_ms: i64) -> Option<i64> {
    if p.state.is_final() {
        return None;
    }
    let deadline = p
        .confirm_by
        .filter(|_| p.state == PayoutState::AwaitingConfirmation && !p.cancel_requested)
        .map(|t| t.saturating_mul(1000))
        .filter(|d| *d > now_ms);
    Some(deadline.map_or(retry_at, |d| retry_at.min(d)))
}

/// Whether the job should ask the provider to cancel `p` at `now`: still
/// unconfirmed past its deadline, and not asked already.
pub fn should_cancel(p: &Payout, now: i64) -> bool {
    p.state == PayoutState::AwaitingConfirmation
        && !p.cancel_requested
        && p.confirm_by.is_some_and(|t| now >= t)
}

/// Not final longer than `stuck_after` seconds after it was requested (the
/// provider's guidance is 30 minutes).
/// Waiting for the user's confirmation is not being stuck: such a payout
/// counts from its confirmation deadline.
pub fn is_stuck(p: &Payout, now: i64, stuck_after: i64) -> bool {
    let since = match p.state {
        PayoutState::AwaitingConfirmation => p.confirm_by.unwrap_or(p.created_at),
        PayoutState::Processing => p.confirmed_at.unwrap_or(p.created_at),
        _ => p.created_at,
    };
    !p.state.is_final() && now - since >= stuck_after
}

/// Seconds before the next attempt after `attempts` calls: 1, 2, 4, ... up to
/// 5 minutes, times `factor` (tests shorten it), at least 50 ms.
pub fn backoff_ms(attempts: u32, factor: f64) -> i64 {
    let secs = 1u64 << attempts.min(9);
    let ms = (secs.min(300) as f64 * 1000.0 * factor) as i64;
    ms.max(50)
}

/// Seconds a payout must still wait after the payout account was changed
/// at `relinked_at` (`None`: it need not).
pub fn cooling_left(relinked_at: Option<i64>, now: i64, hours: u32) -> Option<u64> {
    let until = relinked_at?.saturating_add(i64::from(hours) * 3600);
    (until > now).then(|| (until - now) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            min_fen: 100,
            max_fen: 20_000,
            daily_max_fen: 50_000,
            daily_max_count: 3,
            kyc_above_fen: 10_000,
        }
    }

    fn k(verified: bool) -> Kyc {
        Kyc {
            verified,
            real_name: false,
        }
    }

    #[test]
    fn from_2000_yuan_a_real_name_is_needed() {
        let mut l = limits();
        l.max_fen = 1_000_000;
        l.daily_max_fen = 1_000_000;
        let none = DayUsage::default();
        let named = Kyc {
            verified: true,
            real_name: true,
        };
        assert_eq!(check(199_999, true, k(true), none, &l), Ok(()));
        assert_eq!(
            check(200_000, true, k(true), none, &l),
            Err(Refusal::RealNameRequired(200_000))
        );
        assert_eq!(Refusal::RealNameRequired(200_000).code(), "kyc_required");
        assert_eq!(check(200_000, true, named, none, &l), Ok(()));
    }

    #[test]
    fn risk_checks_in_order() {
        let l = limits();
        let none = DayUsage::default();
        assert_eq!(
            check(500, false, k(true), none, &l),
            Err(Refusal::NotLinked)
        );
        assert_eq!(
            check(99, true, k(true), none, &l),
            Err(Refusal::BelowMinimum(100))
        );
        assert_eq!(check(100, true, k(false), none, &l), Ok(()));
        assert_eq!(
            check(20_001, true, k(true), none, &l),
            Err(Refusal::AboveMaximum(20_000))
        );
        assert_eq!(
            check(10_000, true, k(false), none, &l),
            Ok(()),
            "at the KYC threshold: fine"
        );
        assert_eq!(
            check(10_001, true, k(false), none, &l),
            Err(Refusal::KycRequired(10_000))
        );
        assert_eq!(check(10_001, true, k(true), none, &l), Ok(()));
        let busy = DayUsage {
            count: 3,
            total: 300,
        };
        assert_eq!(
            check(100, true, k(true), busy, &l),
            Err(Refusal::DailyCount(3))
        );
        let spent = DayUsage {
            count: 2,
            total: 45_000,
        };
        assert_eq!(
            check(5_000, true, k(true), spent, &l),
            Ok(()),
            "exactly the daily total"
        );
        assert_eq!(
            check(5_001, true, k(true), spent, &l),
            Err(Refusal::DailyAmount {
                limit: 50_000,
                used: 45_000
            })
        );
    }

    #[test]
    fn partner_trade_no_is_stable_and_shaped_for_the_provider() {
        let u = UserId([1; 16]);
        let a = partner_trade_no(u, "key-1");
        assert_eq!(a, partner_trade_no(u, "key-1"));
        assert_ne!(a, partner_trade_no(u, "key-2"));
        assert_ne!(a, partner_trade_no(UserId([2; 16]), "key-1"));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    fn payout(state: PayoutState, accepted: bool) -> Payout {
        Payout {
            id: PayoutId([1; 16]),
            user: UserId([1; 16]),
            amount: 100,
            partner_trade_no: "QG".into(),
            openid: "o".into(),
            state,
            hold: TransferId([1; 16]),
            request_hash: [0; 32],
            automatic: false,
            created_at: 0,
            updated_at: 0,
            attempts: 1,
            next_attempt_at: Some(0),
            accepted,
            transfer_bill_no: None,
            fail_reason: None,
            last_error: None,
            package_info: None,
            confirm_by: None,
            cancel_requested: false,
            confirmed_at: None,
            remark: None,
        }
    }

    #[test]
    fn state_machine() {
        use PayoutState::*;
        let acc = Answer::Accepted {
            bill_no: "B".into(),
            confirmed: false,
        };
        let ok = Answer::Succeeded {
            bill_no: "B".into(),
        };
        let fail = Answer::Failed { reason: "R".into() };
        let refused = Answer::Refused {
            reason: "PARAM_ERROR".into(),
        };
        assert_eq!(
            advance(&payout(Pending, false), &acc),
            Step::Processing {
                bill_no: "B".into()
            }
        );
        assert_eq!(advance(&payout(Processing, true), &acc), Step::Keep);
        assert!(matches!(
            advance(&payout(Processing, true), &ok),
            Step::Finish {
                state: Succeeded,
                ..
            }
        ));
        assert!(matches!(
            advance(&payout(Pending, false), &fail),
            Step::Finish { state: Failed, .. }
        ));
        // A refusal ends a payout only if the provider never accepted it.
        assert!(matches!(
            advance(&payout(Pending, false), &refused),
            Step::Finish { state: Failed, .. }
        ));
        assert_eq!(advance(&payout(Pending, true), &refused), Step::Keep);
        // Duplicates change nothing; contradictions are flagged, not applied.
        assert_eq!(advance(&payout(Succeeded, true), &ok), Step::Keep);
        assert_eq!(advance(&payout(Failed, true), &fail), Step::Keep);
        assert!(matches!(
            advance(&payout(Succeeded, true), &fail),
            Step::Contradiction(_)
        ));
        assert!(matches!(
            advance(&payout(Failed, true), &ok),
            Step::Contradiction(_)
        ));
    }

    #[test]
    fn confirmation_and_cancellation() {
        use PayoutState::*;
        let wait = |package: Option<&str>| Answer::AwaitingConfirmation {
            bill_no: "B".into(),
            package_info: package.map(str::to_owned),
        };
        let confirmed = Answer::Accepted {
            bill_no: "B".into(),
            confirmed: true,
        };
        let unconfirmed = Answer::Accepted {
            bill_no: "B".into(),
            confirmed: false,
        };
        let cancelled = Answer::Cancelled {
            reason: "CANCELLED".into(),
        };
        let ok = Answer::Succeeded {
            bill_no: "B".into(),
        };
        // Asked to confirm, from the create answer (with the package) or a
        // query (without).
        for from in [Pending, Processing] {
            assert_eq!(
                advance(&payout(from, true), &wait(Some("P"))),
                Step::Awaiting {
                    bill_no: "B".into(),
                    package_info: Some("P".into())
                }
            );
        }
        let mut waiting = payout(AwaitingConfirmation, true);
        assert_eq!(
            advance(&waiting, &wait(Some("P"))),
            Step::Awaiting {
                bill_no: "B".into(),
                package_info: Some("P".into())
            },
            "a package learnt later is kept"
        );
        waiting.package_info = Some("P".into());
        assert_eq!(advance(&waiting, &wait(Some("P"))), Step::Keep);
        assert_eq!(advance(&waiting, &wait(None)), Step::Keep);
        // A processing payout past its confirmation is not asked again.
        let mut past = payout(Processing, true);
        past.package_info = Some("P".into());
        assert_eq!(advance(&past, &wait(None)), Step::Keep);
        // The user confirms: processing; an unconfirmed answer changes nothing.
        assert_eq!(
            advance(&waiting, &confirmed),
            Step::Processing {
                bill_no: "B".into()
            }
        );
        assert_eq!(advance(&waiting, &unconfirmed), Step::Keep);
        // CANCELING changes nothing: the user may still confirm and be paid.
        assert_eq!(advance(&waiting, &Answer::Cancelling), Step::Keep);
        assert!(matches!(
            advance(&waiting, &ok),
            Step::Finish {
                state: Succeeded,
                ..
            }
        ));
        // Only CANCELLED ends it, voided.
        assert!(matches!(
            advance(&waiting, &cancelled),
            Step::Finish {
                state: Cancelled,
                ..
            }
        ));
        assert_eq!(advance(&payout(Cancelled, true), &cancelled), Step::Keep);
        assert!(matches!(
            advance(&payout(Cancelled, true), &ok),
            Step::Contradiction(_)
        ));
        assert!(matches!(
            advance(&payout(Succeeded, true), &cancelled),
            Step::Contradiction(_)
        ));
    }

    #[test]
    fn the_job_wakes_by_the_deadline_and_backs_off_after_it() {
        let mut p = payout(PayoutState::AwaitingConfirmation, true);
        p.confirm_by = Some(100);
        assert_eq!(
            next_attempt(&p, 300_000, 50_000),
            Some(100_000),
            "by the deadline"
        );
        assert_eq!(
            next_attempt(&p, 60_000, 50_000),
            Some(60_000),
            "backoff first"
        );
        assert_eq!(
            next_attempt(&p, 300_000, 100_001),
            Some(300_000),
            "past it: the backoff, not now"
        );
        p.cancel_requested = true;
        assert_eq!(next_attempt(&p, 300_000, 50_000), Some(300_000));
        p.state = PayoutState::Cancelled;
        assert_eq!(next_attempt(&p, 300_000, 50_000), None);
    }

    #[test]
    fn waiting_for_the_user_is_not_being_stuck() {
        let mut p = payout(PayoutState::AwaitingConfirmation, true);
        p.created_at = 0;
        p.confirm_by = Some(10_000);
        assert!(!is_stuck(&p, 5_000, 1_800));
        assert!(is_stuck(&p, 11_800, 1_800));
        p.state = PayoutState::Processing;
        p.confirmed_at = Some(9_000);
        assert!(
            !is_stuck(&p, 10_000, 1_800),
            "counted from the confirmation"
        );
        assert!(is_stuck(&p, 10_800, 1_800));
        p.confirmed_at = None;
        assert!(is_stuck(&p, 5_000, 1_800), "never asked: from its creation");
    }

    #[test]
    fn an_unconfirmed_payout_is_cancelled_once_after_its_deadline() {
        let mut p = payout(PayoutState::AwaitingConfirmation, true);
        assert!(!should_cancel(&p, 100), "no deadline yet");
        p.confirm_by = Some(100);
        assert!(!should_cancel(&p, 99));
        assert!(should_cancel(&p, 100));
        p.cancel_requested = true;
        assert!(!should_cancel(&p, 200), "asked once");
        let mut q = payout(PayoutState::Processing, true);
        q.confirm_by = Some(0);
        assert!(!should_cancel(&q, 200), "confirmed already");
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_ms(0, 1.0), 1000);
        assert_eq!(backoff_ms(3, 1.0), 8000);
        assert_eq!(backoff_ms(30, 1.0), 300_000);
        assert_eq!(backoff_ms(0, 0.001), 50, "never below 50 ms");
    }
}
