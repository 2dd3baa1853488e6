//! Reconciliation: match the provider's daily bill against our payouts and
//! name every break by class.
//!
//! - `missing_on_our_side`: the bill has a transfer we have no payout for.
//! - `missing_on_their_side`: a payout of that day the provider accepted (or
//!   that we recorded as succeeded) is not in the bill.
//! - `amount_mismatch`: both sides have it with different amounts.
//! - `status_mismatch`: the bill says SUCCESS and we do not, or the bill
//!   says FAIL/CANCELLED and we recorded success.
//!
//! A payout still `pending`/`processing` on our side that the bill reports
//! final is a status mismatch too: the notification and our polling both
//! missed it, which an operator should see.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::payout::{Payout, PayoutState};

/// Where the bill says a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The user has the money.
    Succeeded,
    /// Failed or cancelled: the money stayed with the merchant.
    Failed,
    /// Not final yet at the provider.
    Open,
}

/// One transfer as the provider's bill states it (the provider's adapter
/// reads its bill format into these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillLine {
    pub partner_trade_no: String,
    /// In fen.
    pub amount: i64,
    pub outcome: Outcome,
    /// The provider's own name of the state, shown in a break.
    pub status: String,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BreakClass {
    MissingOnOurSide,
    MissingOnTheirSide,
    AmountMismatch,
    StatusMismatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Break {
    pub class: BreakClass,
    pub partner_trade_no: String,
    /// Our amount and state (absent when we have no payout).
    pub ours: Option<Side>,
    /// The bill's amount and status (absent when the bill lacks it).
    pub theirs: Option<Side>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Side {
    pub amount: i64,
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub date: String,
    pub bill_rows: usize,
    pub our_payouts: usize,
    pub matched: usize,
    pub breaks: Vec<Break>,
}

fn ours(p: &Payout) -> Side {
    Side {
        amount: i64::try_from(p.amount).unwrap_or(i64::MAX),
        status: format!("{:?}", p.state).to_lowercase(),
    }
}

fn theirs(r: &BillLine) -> Side {
    Side {
        amount: r.amount,
        status: r.status.clone(),
    }
}

fn status_agrees(p: &Payout, r: &BillLine) -> bool {
    match r.outcome {
        Outcome::Succeeded => p.state == PayoutState::Succeeded,
        // The bill's failed rows are the transfers that paid nothing:
        // failed or cancelled.
        Outcome::Failed => matches!(p.state, PayoutState::Failed | PayoutState::Cancelled),
        // Not final at the provider: we must not be final either way... except
        // a failure we recorded from a definitive refusal cannot be in the bill.
        Outcome::Open => !p.state.is_final(),
    }
}

/// Match `rows` (the bill of `date`) against `day_payouts` (our payouts
/// created on that business day) and `lookup` (any payout by
/// `partner_trade_no`, for bill rows of transfers created on another day).
pub fn reconcile(
    date: &str,
    rows: &[BillLine],
    day_payouts: &[Payout],
    lookup: &dyn Fn(&str) -> Option<Payout>,
) -> Report {
    let mut breaks = Vec::new();
    let mut matched = 0;
    let mut seen = BTreeSet::new();
    let by_no: BTreeMap<&str, &Payout> = day_payouts
        .iter()
        .map(|p| (p.partner_trade_no.as_str(), p))
        .collect();
    for r in rows {
        seen.insert(r.partner_trade_no.as_str());
        let found = match by_no.get(r.partner_trade_no.as_str()) {
            Some(p) => Some((*p).clone()),
            None => lookup(&r.partner_trade_no),
        };
        let Some(p) = found else {
            breaks.push(Break {
                class: BreakClass::MissingOnOurSide,
                partner_trade_no: r.partner_trade_no.clone(),
                ours: None,
                theirs: Some(theirs(r)),
            });
            continue;
        };
        let mut ok = true;
        if i64::try_from(p.amount).ok() != Some(r.amount) {
            ok = false;
            breaks.push(Break {
                class: BreakClass::AmountMismatch,
                partner_trade_no: r.partner_trade_no.clone(),
                ours: Some(ours(&p)),
                theirs: Some(theirs(r)),
            });
        }
        if !status_agrees(&p, r) {
            ok = false;
            breaks.push(Break {
                class: BreakClass::StatusMismatch,
                partner_trade_no: r.partner_trade_no.clone(),
                ours: Some(ours(&p)),
                theirs: Some(theirs(r)),
            });
        }
        if ok {
            matched += 1;
        }
    }
    for p in day_payouts {
        let reached_provider = p.accepted || p.state == PayoutState::Succeeded;
        if reached_provider && !seen.contains(p.partner_trade_no.as_str()) {
            breaks.push(Break {
                class: BreakClass::MissingOnTheirSide,
                partner_trade_no: p.partner_trade_no.clone(),
                ours: Some(ours(p)),
                theirs: None,
            });
        }
    }
    breaks.sort_by(|a, b| (a.class, &a.partner_trade_no).cmp(&(b.class, &b.partner_trade_no)));
    Report {
        date: date.to_string(),
        bill_rows: rows.len(),
        our_payouts: day_payouts.len(),
        matched,
        breaks,
    }
}

/// The report as a readable table.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "reconciliation {}: {} bill rows, {} payouts of ours, {} matched, {} breaks\n",
        r.date,
        r.bill_rows,
        r.our_payouts,
        r.matched,
        r.breaks.len()
    );
    if !r.breaks.is_empty() {
        out.push_str(&format!(
            "{:<24} {:<34} {:>14} {:>14}\n",
            "class", "partner_trade_no", "ours", "theirs"
        ));
        let side = |s: &Option<Side>| match s {
            Some(s) => format!("{} {}", s.amount, s.status),
            None => "-".into(),
        };
        for b in &r.breaks {
            let class = serde_json::to_value(b.class)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<24} {:<34} {:>14} {:>14}\n",
                class,
                b.partner_trade_no,
                side(&b.ours),
                side(&b.theirs)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{PayoutId, TransferId, UserId};

    fn payout(no: &str, amount: u64, state: PayoutState, accepted: bool) -> Payout {
        Payout {
            id: PayoutId::random(),
            user: UserId([1; 16]),
            amount,
            partner_trade_no: no.into(),
            openid: "o".into(),
            state,
            hold: TransferId([0; 16]),
            request_hash: [0; 32],
            automatic: false,
            created_at: 0,
            updated_at: 0,
            attempts: 1,
            next_attempt_at: None,
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

    fn row(no: &str, amount: i64, outcome: Outcome) -> BillLine {
        BillLine {
            partner_trade_no: no.into(),
            amount,
            outcome,
            status: format!("{outcome:?}").to_uppercase(),
        }
    }

    #[test]
    fn every_class_of_break_is_found() {
        use PayoutState::*;
        let ours = vec![
            payout("A", 100, Succeeded, true),  // matches
            payout("B", 200, Succeeded, true),  // bill says 250
            payout("C", 300, Succeeded, true),  // bill says FAIL
            payout("D", 400, Processing, true), // not in the bill
            payout("E", 500, Failed, false),    // refused, never reached the provider: fine
            payout("F", 600, Failed, true),     // bill says FAIL: matches
        ];
        let rows = vec![
            row("A", 100, Outcome::Succeeded),
            row("B", 250, Outcome::Succeeded),
            row("C", 300, Outcome::Failed),
            row("F", 600, Outcome::Failed),
            row("Z", 700, Outcome::Succeeded), // unknown to us
            row("Y", 50, Outcome::Succeeded),  // an older payout of ours, found by lookup
        ];
        let older = payout("Y", 50, Succeeded, true);
        let lookup = move |no: &str| (no == "Y").then(|| older.clone());
        let r = reconcile("2026-11-23", &rows, &ours, &lookup);
        let classes: Vec<(BreakClass, &str)> = r
            .breaks
            .iter()
            .map(|b| (b.class, b.partner_trade_no.as_str()))
            .collect();
        assert_eq!(
            classes,
            vec![
                (BreakClass::MissingOnOurSide, "Z"),
                (BreakClass::MissingOnTheirSide, "D"),
                (BreakClass::AmountMismatch, "B"),
                (BreakClass::StatusMismatch, "C"),
            ]
        );
        assert_eq!(r.matched, 3, "A, F and Y");
        let t = table(&r);
        assert!(
            t.contains("missing_on_our_side") && t.contains("4 breaks"),
            "{t}"
        );
    }

    #[test]
    fn clean_books_have_no_breaks() {
        let ours = vec![payout("A", 1, PayoutState::Succeeded, true)];
        let rows = vec![row("A", 1, Outcome::Succeeded)];
        let r = reconcile("d", &rows, &ours, &|_| None);
        assert!(r.breaks.is_empty());
        assert_eq!(r.matched, 1);
    }
}
