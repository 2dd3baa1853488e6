//! The books check: every posting sums to zero, every account equals its
//! entries and the journal, no wallet is overdrawn. A plain function over
//! what storage read; the wallets' `check` feeds it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ledger::{Account, AccountId, Entry, JournalRecord, Posting};

/// What the ledger check looks at.
pub struct Books<'a> {
    pub accounts: &'a [Account],
    /// Every entry, in any order.
    pub entries: &'a [Entry],
    /// Every journal record.
    pub journal: &'a [JournalRecord],
    /// Postings journalled but not yet applied to the holder's account
    /// (the other side of a transfer, on its way to its holder's actor).
    pub in_flight: &'a [(AccountId, Posting)],
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckReport {
    pub accounts: usize,
    pub entries: usize,
    pub transfers: usize,
    pub in_flight: usize,
    /// Sum of every account's posted credits minus posted debits (must be 0).
    pub posted_sum: i128,
    /// The same for pending totals (must be 0).
    pub pending_sum: i128,
    /// Everything wrong, one line each; empty when the books hold.
    pub findings: Vec<String>,
}

fn totals(a: &Account) -> Posting {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Posting {
        debits_pending: i(a.debits_pending),
        debits_posted: i(a.debits_posted),
        credits_pending: i(a.credits_pending),
        credits_posted: i(a.credits_posted),
    }
}

/// Verify the books: every journal record's postings mirror each other (so
/// the postings sum to zero), every account equals its entries and equals
/// the journal's postings to it (less those still in flight), no wallet is
/// overdrawn, and the totals over all accounts sum to zero.
pub fn check(b: &Books) -> CheckReport {
    let mut r = CheckReport {
        accounts: b.accounts.len(),
        entries: b.entries.len(),
        transfers: b.journal.len(),
        in_flight: b.in_flight.len(),
        ..CheckReport::default()
    };
    let mut from_journal: BTreeMap<&AccountId, Posting> = BTreeMap::new();
    for j in b.journal {
        if j.credit != j.debit.mirror() {
            r.findings.push(format!(
                "transfer {}: the credit posting does not mirror the debit posting",
                j.transfer.spec.id
            ));
        }
        from_journal
            .entry(&j.transfer.spec.debit)
            .or_default()
            .add(&j.debit);
        from_journal
            .entry(&j.transfer.spec.credit)
            .or_default()
            .add(&j.credit);
    }
    for (a, p) in b.in_flight {
        let mut undo = *p;
        undo.debits_pending = -undo.debits_pending;
        undo.debits_posted = -undo.debits_posted;
        undo.credits_pending = -undo.credits_pending;
        undo.credits_posted = -undo.credits_posted;
        from_journal.entry(a).or_default().add(&undo);
    }
    let mut from_entries: BTreeMap<&AccountId, (Posting, u64)> = BTreeMap::new();
    for e in b.entries {
        let slot = from_entries.entry(&e.account).or_default();
        slot.0.add(&e.posting);
        slot.1 += 1;
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in b.accounts {
        seen.insert(&a.id);
        let t = totals(a);
        r.posted_sum += a.credits_posted as i128 - a.debits_posted as i128;
        r.pending_sum += a.credits_pending as i128 - a.debits_pending as i128;
        let (e, n) = from_entries.get(&a.id).copied().unwrap_or_default();
        if a.id.keeps_entries() && (e != t || n != a.entries) {
            r.findings.push(format!(
                "account {}: totals {:?} ({} entries) differ from its entries {:?} ({} entries)",
                a.id, t, a.entries, e, n
            ));
        }
        let j = from_journal.get(&a.id).copied().unwrap_or_default();
        if j != t {
            r.findings.push(format!(
                "account {}: totals {:?} differ from the journal's postings {:?}",
                a.id, t, j
            ));
        }
        if matches!(a.id, AccountId::Escrow(_))
            && a.debits_posted > a.credits_posted.saturating_add(a.credits_pending)
        {
            r.findings.push(format!(
                "account {}: paid out {} but was funded with {}",
                a.id,
                a.debits_posted,
                a.credits_posted.saturating_add(a.credits_pending)
            ));
        }
        if a.flags.no_overdraft && a.available() < 0 {
            r.findings
                .push(format!("account {}: overdrawn ({})", a.id, a.available()));
        }
    }
    for (a, p) in from_journal {
        if !seen.contains(a) && !p.is_zero() {
            r.findings
                .push(format!("account {a}: has journal postings but no account"));
        }
    }
    // A posting in flight to an account its holder has not opened yet is
    // fine: the holder opens the account when applying it.
    for (_, p) in b.in_flight {
        r.posted_sum += p.credits_posted as i128 - p.debits_posted as i128;
        r.pending_sum += p.credits_pending as i128 - p.debits_pending as i128;
    }
    if r.posted_sum != 0 {
        r.findings
            .push(format!("posted totals sum to {}, not 0", r.posted_sum));
    }
    if r.pending_sum != 0 {
        r.findings
            .push(format!("pending totals sum to {}, not 0", r.pending_sum));
    }
    r
}
