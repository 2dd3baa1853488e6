//! Reconciliation of one day's provider bill against our payouts: read
//! every payout, let `domain::reconcile` name the breaks, and store the
//! report for later reads.

use qrgate_provider::{Bill, BillRow, TransferState};

use super::Wallets;
use crate::clock::Day;
use crate::domain::payout::Payout;
use crate::domain::reconcile::{self, BillLine, Outcome, Report};
use crate::error::ApiError;
use crate::storage::WriteSet;

/// A row of the provider's bill as reconciliation reads it.
fn line(r: &BillRow) -> BillLine {
    BillLine {
        partner_trade_no: r.partner_trade_no.clone(),
        amount: r.amount,
        outcome: match r.status {
            TransferState::Success => Outcome::Succeeded,
            TransferState::Fail | TransferState::Cancelled => Outcome::Failed,
            _ => Outcome::Open,
        },
        status: r.status.as_str().to_string(),
    }
}

impl Wallets {
    /// Reconcile `bill`, the provider's bill of business day `day`, and
    /// store the report.
    pub async fn reconcile(&self, day: Day, bill: Bill) -> Result<Report, ApiError> {
        let day = day.to_string();
        let storage = self.storage().clone();
        let cfg = self.shared().config.payouts.clone();
        let (report, w) = actix_web::web::block(move || -> Result<_, ApiError> {
            let all = storage.all_payouts()?;
            let of_day: Vec<Payout> = all
                .iter()
                .filter(|p| cfg.day_of(p.created_at) == day)
                .cloned()
                .collect();
            let by_no: std::collections::HashMap<String, Payout> = all
                .into_iter()
                .map(|p| (p.partner_trade_no.clone(), p))
                .collect();
            let lines: Vec<BillLine> = bill.rows.iter().map(line).collect();
            let report = reconcile::reconcile(&day, &lines, &of_day, &|no| by_no.get(no).cloned());
            let mut w = WriteSet::new();
            w.reconciliation(&day, &report);
            Ok((report, w))
        })
        .await
        .map_err(|_| ApiError::Internal)??;
        self.storage().commit(w).await?;
        if !report.breaks.is_empty() {
            tracing::warn!(date = %report.date, breaks = report.breaks.len(), "reconciliation found breaks");
        }
        Ok(report)
    }
}
