//! The ledger's rules, in the TigerBeetle mould, as plain functions.
//!
//! - An [`Account`] keeps four totals: pending and posted debits, pending and
//!   posted credits. Its balance is derived from them and never edited.
//! - A [`Transfer`] debits one account and credits another by the same
//!   amount. Transfers are immutable: a mistake is fixed by a new transfer.
//! - Two-phase transfers: a `pending` transfer reserves the amount (pending
//!   totals); a `post` (possibly partial) or `void` transfer resolves it; a
//!   pending transfer that reaches its timeout is resolved by an `expire`
//!   transfer the server makes.
//! - A transfer id is chosen by the client. Submitting the same id again
//!   with the same fields returns the original transfer; with different
//!   fields, a specific `exists_with_different_*` error.
//! - Only the debit side can fail (an account flagged `no_overdraft` must not
//!   have debits exceeding credits), so [`decide`] needs the debited account
//!   and, for `post`/`void`, the pending transfer, but never the credited one.
//!   Each transfer is one journal record holding both postings ([`Posting`]
//!   for each side), so the sum of all postings is zero by construction;
//!   the books check (`books.rs`) verifies it, and every account against
//!   its entries.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::ids::{PacketId, TransferId, UserId};

/// Longest `user_data` a transfer may carry.
pub const MAX_USER_DATA: usize = 128;
/// Largest amount of one transfer, in fen (1 billion yuan): keeps every sum
/// far from overflowing.
pub const MAX_AMOUNT: u64 = 100_000_000_000;

/// Who holds an account: its actor is the only writer of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Holder {
    User(UserId),
    /// The operator's accounts (revenue per earning kind, provider clearing,
    /// merchants' campaign accounts).
    System,
    /// A red packet: its escrow account (and its claims, in the same actor).
    Packet(PacketId),
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::User(u) => write!(f, "{u}"),
            Holder::System => f.write_str("system"),
            Holder::Packet(p) => write!(f, "{p}"),
        }
    }
}

/// An account's name. Shown and stored as a string: `wallet:u_…`,
/// `revenue:<earning kind>`, `clearing:provider`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountId {
    /// A user's wallet: may not go below zero.
    Wallet(UserId),
    /// Where earnings of one kind come from (ad revenue, task budget...).
    Revenue(String),
    /// Money on its way to (or back from) the payment provider.
    Clearing,
    /// A red packet's escrow: credited (pending) with the packet's total when
    /// it is funded, debited by each claim, settled when the packet closes.
    Escrow(PacketId),
    /// A merchant's campaign account: funds campaign packets (what the
    /// merchant owes the operator; it may go below zero).
    Merchant(String),
}

impl AccountId {
    pub fn holder(&self) -> Holder {
        match self {
            AccountId::Wallet(u) => Holder::User(*u),
            AccountId::Revenue(_) | AccountId::Clearing | AccountId::Merchant(_) => Holder::System,
            AccountId::Escrow(p) => Holder::Packet(*p),
        }
    }

    /// Whether the account keeps a record per entry. Wallets do (their
    /// holders page through them). System accounts move with every earning
    /// and payout; their history is the journal, which holds both postings
    /// of every transfer.
    pub fn keeps_entries(&self) -> bool {
        matches!(self, AccountId::Wallet(_))
    }

    /// The flags an account of this kind is opened with.
    pub fn flags(&self) -> Flags {
        Flags {
            no_overdraft: matches!(self, AccountId::Wallet(_)),
        }
    }

    pub fn parse(s: &str) -> Option<AccountId> {
        if let Some(u) = s.strip_prefix("wallet:") {
            return UserId::parse(u).ok().map(AccountId::Wallet);
        }
        if let Some(k) = s.strip_prefix("revenue:") {
            return valid_kind(k).then(|| AccountId::Revenue(k.to_string()));
        }
        if let Some(p) = s.strip_prefix("escrow:") {
            return PacketId::parse(p).ok().map(AccountId::Escrow);
        }
        if let Some(m) = s.strip_prefix("merchant:") {
            return valid_kind(m).then(|| AccountId::Merchant(m.to_string()));
        }
        (s == "clearing:provider").then_some(AccountId::Clearing)
    }
}

/// An earning kind (and so a revenue account name): 1 to 32 of `a-z0-9_`.
pub fn valid_kind(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 32
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountId::Wallet(u) => write!(f, "wallet:{u}"),
            AccountId::Revenue(k) => write!(f, "revenue:{k}"),
            AccountId::Clearing => f.write_str("clearing:provider"),
            AccountId::Escrow(p) => write!(f, "escrow:{p}"),
            AccountId::Merchant(m) => write!(f, "merchant:{m}"),
        }
    }
}

impl Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AccountId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an account id")))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// Debits (posted plus pending) may not exceed posted credits.
    pub no_overdraft: bool,
}

/// Why money moved; stored with every transfer and entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Earning,
    Payout,
    Packet,
    PacketClaim,
    PacketRefund,
    /// A campaign packet's bonus to the claimant whose link brought a new one.
    Referral,
}

/// Changes to an account's four totals made by one transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
}

impl Posting {
    /// The credit side of a transfer whose debit side is `self`.
    pub fn mirror(&self) -> Posting {
        Posting {
            debits_pending: self.credits_pending,
            debits_posted: self.credits_posted,
            credits_pending: self.debits_pending,
            credits_posted: self.debits_posted,
        }
    }

    pub(super) fn add(&mut self, o: &Posting) {
        self.debits_pending += o.debits_pending;
        self.debits_posted += o.debits_posted;
        self.credits_pending += o.credits_pending;
        self.credits_posted += o.credits_posted;
    }

    pub fn is_zero(&self) -> bool {
        *self == Posting::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub flags: Flags,
    pub debits_pending: u64,
    pub debits_posted: u64,
    pub credits_pending: u64,
    pub credits_posted: u64,
    /// Entries applied so far; the next entry's sequence number.
    pub entries: u64,
}

impl Account {
    pub fn open(id: AccountId) -> Account {
        Account {
            flags: id.flags(),
            id,
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            entries: 0,
        }
    }

    /// Posted balance as the holder sees it (credits minus debits).
    pub fn balance(&self) -> i128 {
        self.credits_posted as i128 - self.debits_posted as i128
    }

    /// What can still be debited: the balance minus reservations.
    pub fn available(&self) -> i128 {
        self.balance() - self.debits_pending as i128
    }

    /// Apply one posting; refuses (changing nothing) if a total would leave
    /// `u64`. Counts the entry.
    pub fn apply(&mut self, p: &Posting) -> Result<(), TransferError> {
        fn step(v: u64, d: i64) -> Option<u64> {
            if d >= 0 {
                v.checked_add(d as u64)
            } else {
                v.checked_sub(d.unsigned_abs())
            }
        }
        let next = (
            step(self.debits_pending, p.debits_pending),
            step(self.debits_posted, p.debits_posted),
            step(self.credits_pending, p.credits_pending),
            step(self.credits_posted, p.credits_posted),
        );
        match next {
            (Some(dp), Some(dpo), Some(cp), Some(cpo)) => {
                self.debits_pending = dp;
                self.debits_posted = dpo;
                self.credits_pending = cp;
                self.credits_posted = cpo;
                self.entries += 1;
                Ok(())
            }
            _ => Err(TransferError::Overflow),
        }
    }
}

/// What the caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// Moves the amount at once.
    Single,
    /// Reserves the amount until posted, voided or `timeout_seconds` passed
    /// (0: no timeout).
    Pending { timeout_seconds: u32 },
    /// Posts `amount` (at most the reserved amount) of a pending transfer and
    /// releases the rest.
    Post { pending_id: TransferId },
    /// Releases a pending transfer.
    Void { pending_id: TransferId },
    /// Releases a pending transfer that reached its timeout (made by the server).
    Expire { pending_id: TransferId },
}

impl Kind {
    fn pending_id(&self) -> Option<TransferId> {
        match self {
            Kind::Post { pending_id } | Kind::Void { pending_id } | Kind::Expire { pending_id } => {
                Some(*pending_id)
            }
            Kind::Single | Kind::Pending { .. } => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Kind::Single => "single",
            Kind::Pending { .. } => "pending",
            Kind::Post { .. } => "post",
            Kind::Void { .. } => "void",
            Kind::Expire { .. } => "expire",
        }
    }
}

/// A transfer as asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    /// For `post`: the amount to post (0 posts the whole reservation). For
    /// `void`/`expire`: 0 or the reserved amount.
    pub amount: u64,
    #[serde(flatten)]
    pub kind: Kind,
    pub reason: Reason,
    pub user_data: String,
}

/// Where a pending transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Applied (single, post, void and expire transfers).
    Done,
    /// A reservation still open.
    Pending,
    Posted,
    Voided,
    Expired,
}

/// A transfer as recorded: the spec, what it actually moved, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    #[serde(flatten)]
    pub spec: Spec,
    /// What moved: for `post` the posted amount, for `void`/`expire` the
    /// released one.
    pub moved: u64,
    pub status: Status,
    pub at: i64,
    /// For a pending transfer with a timeout: when it expires (unix seconds).
    pub expires_at: Option<i64>,
}

/// Why a transfer is refused. Codes follow TigerBeetle's result names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("the amount must not be zero")]
    AmountMustNotBeZero,
    #[error("the amount exceeds the largest allowed transfer")]
    AmountTooLarge,
    #[error("a transfer cannot debit and credit the same account")]
    AccountsMustBeDifferent,
    #[error("user_data is longer than 128 characters")]
    UserDataTooLong,
    #[error("the debit would exceed the account's credits")]
    ExceedsCredits,
    #[error("no pending transfer has this pending_id")]
    PendingTransferNotFound,
    #[error("the transfer named by pending_id is not a pending transfer")]
    PendingTransferNotPending,
    #[error("the pending transfer was already posted")]
    PendingTransferAlreadyPosted,
    #[error("the pending transfer was already voided")]
    PendingTransferAlreadyVoided,
    #[error("the pending transfer expired")]
    PendingTransferExpired,
    #[error("the pending transfer has not expired yet")]
    PendingTransferNotExpired,
    #[error("the amount exceeds the pending transfer's amount")]
    ExceedsPendingTransferAmount,
    #[error("the accounts differ from the pending transfer's")]
    PendingTransferHasDifferentAccounts,
    #[error("a transfer with this id exists with a different kind")]
    ExistsWithDifferentKind,
    #[error("a transfer with this id exists with a different pending_id")]
    ExistsWithDifferentPendingId,
    #[error("a transfer with this id exists with a different debit account")]
    ExistsWithDifferentDebitAccountId,
    #[error("a transfer with this id exists with a different credit account")]
    ExistsWithDifferentCreditAccountId,
    #[error("a transfer with this id exists with a different amount")]
    ExistsWithDifferentAmount,
    #[error("a transfer with this id exists with a different timeout")]
    ExistsWithDifferentTimeout,
    #[error("a transfer with this id exists with a different reason")]
    ExistsWithDifferentReason,
    #[error("a transfer with this id exists with different user_data")]
    ExistsWithDifferentUserData,
    #[error("an account total would overflow")]
    Overflow,
}

impl TransferError {
    /// The stable snake_case code clients switch on.
    pub fn code(&self) -> &'static str {
        use TransferError::*;
        match self {
            AmountMustNotBeZero => "amount_must_not_be_zero",
            AmountTooLarge => "amount_too_large",
            AccountsMustBeDifferent => "accounts_must_be_different",
            UserDataTooLong => "user_data_too_long",
            ExceedsCredits => "insufficient_funds",
            PendingTransferNotFound => "pending_transfer_not_found",
            PendingTransferNotPending => "pending_transfer_not_pending",
            PendingTransferAlreadyPosted => "pending_transfer_already_posted",
            PendingTransferAlreadyVoided => "pending_transfer_already_voided",
            PendingTransferExpired => "pending_transfer_expired",
            PendingTransferNotExpired => "pending_transfer_not_expired",
            ExceedsPendingTransferAmount => "exceeds_pending_transfer_amount",
            PendingTransferHasDifferentAccounts => "pending_transfer_has_different_accounts",
            ExistsWithDifferentKind => "exists_with_different_kind",
            ExistsWithDifferentPendingId => "exists_with_different_pending_id",
            ExistsWithDifferentDebitAccountId => "exists_with_different_debit_account_id",
            ExistsWithDifferentCreditAccountId => "exists_with_different_credit_account_id",
            ExistsWithDifferentAmount => "exists_with_different_amount",
            ExistsWithDifferentTimeout => "exists_with_different_timeout",
            ExistsWithDifferentReason => "exists_with_different_reason",
            ExistsWithDifferentUserData => "exists_with_different_user_data",
            Overflow => "overflow",
        }
    }
}

/// A transfer id seen before: the same fields mean "this is a retry"
/// (`Ok`); different fields name the first difference.
pub fn compare(existing: &Spec, asked: &Spec) -> Result<(), TransferError> {
    use TransferError::*;
    // In this order: the first difference names the error.
    let differences = [
        (
            existing.kind.name() != asked.kind.name(),
            ExistsWithDifferentKind,
        ),
        (
            existing.kind.pending_id() != asked.kind.pending_id(),
            ExistsWithDifferentPendingId,
        ),
        (
            existing.debit != asked.debit,
            ExistsWithDifferentDebitAccountId,
        ),
        (
            existing.credit != asked.credit,
            ExistsWithDifferentCreditAccountId,
        ),
        (existing.amount != asked.amount, ExistsWithDifferentAmount),
        // Same kind name and pending id: only the timeout can differ.
        (existing.kind != asked.kind, ExistsWithDifferentTimeout),
        (existing.reason != asked.reason, ExistsWithDifferentReason),
        (
            existing.user_data != asked.user_data,
            ExistsWithDifferentUserData,
        ),
    ];
    match differences.into_iter().find(|(differs, _)| *differs) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Which holder's actor executes a transfer between `debit` and `credit`:
/// the one whose account must authorise it. A debit from an account that may
/// not be overdrawn is authorised by its holder; a debit from a system
/// account needs no authorisation (it has no limit), so a transfer from a
/// system account into a wallet runs in the wallet's actor, where the
/// wallet's own rules (and its order of entries) live. The other side's
/// posting travels to its holder through the inbox.
///
/// A red packet's escrow is debited only by claims, which its packet's actor
/// decides (one share per claimant, never beyond the total), so a transfer
/// out of an escrow runs in the packet's actor.
pub fn executor(debit: &AccountId, credit: &AccountId) -> Holder {
    if let AccountId::Escrow(p) = debit {
        return Holder::Packet(*p);
    }
    if !debit.flags().no_overdraft && credit.flags().no_overdraft {
        credit.holder()
    } else {
        debit.holder()
    }
}

/// What a new transfer does once decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub transfer: Transfer,
    /// The debited account's posting; the credited one's is its mirror.
    pub debit: Posting,
    /// For `post`/`void`/`expire`: the pending transfer with its new status.
    pub resolved: Option<Transfer>,
}

impl Decision {
    pub fn credit(&self) -> Posting {
        self.debit.mirror()
    }
}

fn amount_i64(a: u64) -> Result<i64, TransferError> {
    if a > MAX_AMOUNT {
        return Err(TransferError::AmountTooLarge);
    }
    i64::try_from(a).map_err(|_| TransferError::AmountTooLarge)
}

/// Decide a new transfer (its id is not in the ledger yet). `debit` is the
/// debited account as it stands; `pending` is the transfer named by
/// `pending_id` for `post`/`void`/`expire`. Changes nothing.
pub fn decide(
    spec: &Spec,
    debit: &Account,
    pending: Option<&Transfer>,
    now: i64,
) -> Result<Decision, TransferError> {
    use TransferError::*;
    if spec.user_data.chars().count() > MAX_USER_DATA {
        return Err(UserDataTooLong);
    }
    if spec.debit == spec.credit {
        return Err(AccountsMustBeDifferent);
    }
    let amount = amount_i64(spec.amount)?;
    let record = |moved: u64, status: Status, expires_at: Option<i64>| Transfer {
        spec: spec.clone(),
        moved,
        status,
        at: now,
        expires_at,
    };
    match spec.kind {
        Kind::Single | Kind::Pending { .. } => {
            if amount == 0 {
                return Err(AmountMustNotBeZero);
            }
            if debit.flags.no_overdraft && debit.available() < amount as i128 {
                return Err(ExceedsCredits);
            }
            Ok(match spec.kind {
                Kind::Pending { timeout_seconds } => Decision {
                    transfer: record(
                        spec.amount,
                        Status::Pending,
                        (timeout_seconds > 0).then(|| now + i64::from(timeout_seconds)),
                    ),
                    debit: Posting {
                        debits_pending: amount,
                        ..Posting::default()
                    },
                    resolved: None,
                },
                _ => Decision {
                    transfer: record(spec.amount, Status::Done, None),
                    debit: Posting {
                        debits_posted: amount,
                        ..Posting::default()
                    },
                    resolved: None,
                },
            })
        }
        Kind::Post { .. } | Kind::Void { .. } | Kind::Expire { .. } => {
            let p = pending.ok_or(PendingTransferNotFound)?;
            if !matches!(p.spec.kind, Kind::Pending { .. }) {
                return Err(PendingTransferNotPending);
            }
            if p.spec.debit != spec.debit || p.spec.credit != spec.credit {
                return Err(PendingTransferHasDifferentAccounts);
            }
            match p.status {
                Status::Pending => {}
                Status::Posted => return Err(PendingTransferAlreadyPosted),
                Status::Voided => return Err(PendingTransferAlreadyVoided),
                Status::Expired | Status::Done => return Err(PendingTransferExpired),
            }
            let due = p.expires_at.is_some_and(|t| now >= t);
            let reserved = amount_i64(p.spec.amount)?;
            let (posted, status) = match spec.kind {
                Kind::Post { .. } => {
                    if due {
                        return Err(PendingTransferExpired);
                    }
                    if amount > reserved {
                        return Err(ExceedsPendingTransferAmount);
                    }
                    (if amount == 0 { reserved } else { amount }, Status::Posted)
                }
                Kind::Void { .. } | Kind::Expire { .. } => {
                    if amount != 0 && amount != reserved {
                        return Err(ExceedsPendingTransferAmount);
                    }
                    if matches!(spec.kind, Kind::Expire { .. }) {
                        if !due {
                            return Err(PendingTransferNotExpired);
                        }
                        (0, Status::Expired)
                    } else {
                        if due {
                            return Err(PendingTransferExpired);
                        }
                        (0, Status::Voided)
                    }
                }
                Kind::Single | Kind::Pending { .. } => return Err(PendingTransferNotPending),
            };
            let mut resolved = p.clone();
            resolved.status = status;
            resolved.moved = posted as u64;
            let moved = if status == Status::Posted {
                posted as u64
            } else {
                p.spec.amount
            };
            Ok(Decision {
                transfer: record(moved, Status::Done, None),
                debit: Posting {
                    debits_pending: -reserved,
                    debits_posted: posted,
                    ..Posting::default()
                },
                resolved: Some(resolved),
            })
        }
    }
}

/// One line of an account's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the account's history, from 0.
    pub seq: u64,
    pub transfer_id: TransferId,
    pub account: AccountId,
    /// The other account of the transfer.
    pub counterparty: AccountId,
    pub posting: Posting,
    pub reason: Reason,
    pub kind: String,
    pub user_data: String,
    pub at: i64,
    /// Posted balance after this entry.
    pub balance: i128,
}

impl Entry {
    /// The entry `p` makes on `account` (already applied to it).
    pub fn of(t: &Transfer, account: &Account, p: Posting) -> Entry {
        let counterparty = if t.spec.debit == account.id {
            t.spec.credit.clone()
        } else {
            t.spec.debit.clone()
        };
        Entry {
            seq: account.entries.saturating_sub(1),
            transfer_id: t.spec.id,
            account: account.id.clone(),
            counterparty,
            posting: p,
            reason: t.spec.reason,
            kind: t.spec.kind.name().to_string(),
            user_data: t.spec.user_data.clone(),
            at: t.at,
            balance: account.balance(),
        }
    }
}

/// One transfer as journalled: both postings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub transfer: Transfer,
    pub debit: Posting,
    pub credit: Posting,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::books::{check, Books, CheckReport};
    use std::collections::BTreeMap;

    fn wallet() -> Account {
        Account::open(AccountId::Wallet(UserId([1; 16])))
    }

    fn spec(id: u8, debit: &Account, credit: AccountId, amount: u64, kind: Kind) -> Spec {
        Spec {
            id: TransferId([id; 16]),
            debit: debit.id.clone(),
            credit,
            amount,
            kind,
            reason: Reason::Payout,
            user_data: String::new(),
        }
    }

    /// Apply a decision to both sides, as an actor would.
    fn apply(d: &Decision, debit: &mut Account, credit: &mut Account) {
        debit.apply(&d.debit).unwrap();
        credit.apply(&d.credit()).unwrap();
    }

    fn funded(amount: u64) -> (Account, Account) {
        let mut w = wallet();
        let mut rev = Account::open(AccountId::Revenue("ad".into()));
        let s = Spec {
            reason: Reason::Earning,
            ..spec(0, &rev, w.id.clone(), amount, Kind::Single)
        };
        let d = decide(&s, &rev, None, 0).unwrap();
        apply(&d, &mut rev, &mut w);
        (w, rev)
    }

    #[test]
    fn single_transfer_moves_posted_totals_and_keeps_the_sum_zero() {
        let (w, rev) = funded(500);
        assert_eq!(w.balance(), 500);
        assert_eq!(rev.balance(), -500, "system accounts may go below zero");
        assert_eq!(w.balance() + rev.balance(), 0);
        assert_eq!((w.entries, rev.entries), (1, 1));
    }

    #[test]
    fn wallets_cannot_be_overdrawn_system_accounts_can() {
        let (w, _) = funded(100);
        let s = spec(1, &w, AccountId::Clearing, 101, Kind::Single);
        assert_eq!(decide(&s, &w, None, 0), Err(TransferError::ExceedsCredits));
        let s = spec(1, &w, AccountId::Clearing, 100, Kind::Single);
        assert!(decide(&s, &w, None, 0).is_ok());
    }

    #[test]
    fn basic_validation() {
        let (w, _) = funded(100);
        let zero = spec(1, &w, AccountId::Clearing, 0, Kind::Single);
        assert_eq!(
            decide(&zero, &w, None, 0),
            Err(TransferError::AmountMustNotBeZero)
        );
        let same = spec(1, &w, w.id.clone(), 1, Kind::Single);
        assert_eq!(
            decide(&same, &w, None, 0),
            Err(TransferError::AccountsMustBeDifferent)
        );
        let huge = spec(1, &w, AccountId::Clearing, MAX_AMOUNT + 1, Kind::Single);
        assert_eq!(
            decide(&huge, &w, None, 0),
            Err(TransferError::AmountTooLarge)
        );
        let mut long = spec(1, &w, AccountId::Clearing, 1, Kind::Single);
        long.user_data = "x".repeat(129);
        assert_eq!(
            decide(&long, &w, None, 0),
            Err(TransferError::UserDataTooLong)
        );
    }

    #[test]
    fn pending_reserves_and_partial_post_releases_the_rest() {
        let (mut w, _) = funded(1000);
        let mut clearing = Account::open(AccountId::Clearing);
        let hold = spec(
            1,
            &w,
            AccountId::Clearing,
            600,
            Kind::Pending {
                timeout_seconds: 60,
            },
        );
        let d = decide(&hold, &w, None, 100).unwrap();
        assert_eq!(d.transfer.expires_at, Some(160));
        apply(&d, &mut w, &mut clearing);
        assert_eq!((w.balance(), w.available()), (1000, 400));
        // The reservation counts: 401 more cannot be held.
        let more = spec(2, &w, AccountId::Clearing, 401, Kind::Single);
        assert_eq!(
            decide(&more, &w, None, 100),
            Err(TransferError::ExceedsCredits)
        );

        let pending = d.transfer;
        let post = spec(
            3,
            &w,
            AccountId::Clearing,
            250,
            Kind::Post {
                pending_id: pending.spec.id,
            },
        );
        let too_much = Spec {
            amount: 601,
            ..post.clone()
        };
        assert_eq!(
            decide(&too_much, &w, Some(&pending), 120),
            Err(TransferError::ExceedsPendingTransferAmount)
        );
        let d = decide(&post, &w, Some(&pending), 120).unwrap();
        assert_eq!(d.transfer.moved, 250);
        let resolved = d.resolved.clone().unwrap();
        assert_eq!((resolved.status, resolved.moved), (Status::Posted, 250));
        apply(&d, &mut w, &mut clearing);
        assert_eq!(
            (w.balance(), w.available(), w.debits_pending),
            (750, 750, 0)
        );
        assert_eq!(clearing.balance(), 250);
        assert_eq!(clearing.credits_pending, 0);

        // The resolved pending transfer cannot be posted or voided again.
        let again = spec(
            4,
            &w,
            AccountId::Clearing,
            0,
            Kind::Post {
                pending_id: pending.spec.id,
            },
        );
        assert_eq!(
            decide(&again, &w, Some(&resolved), 121),
            Err(TransferError::PendingTransferAlreadyPosted)
        );
        let void = spec(
            5,
            &w,
            AccountId::Clearing,
            0,
            Kind::Void {
                pending_id: pending.spec.id,
            },
        );
        assert_eq!(
            decide(&void, &w, Some(&resolved), 121),
            Err(TransferError::PendingTransferAlreadyPosted)
        );
    }

    #[test]
    fn post_zero_posts_everything_and_void_releases_everything() {
        let (mut w, _) = funded(100);
        let mut c = Account::open(AccountId::Clearing);
        let hold = decide(
            &spec(
                1,
                &w,
                AccountId::Clearing,
                80,
                Kind::Pending { timeout_seconds: 0 },
            ),
            &w,
            None,
            0,
        )
        .unwrap();
        assert_eq!(hold.transfer.expires_at, None, "0 means no timeout");
        apply(&hold, &mut w, &mut c);
        let p = hold.transfer;
        let full = decide(
            &spec(
                2,
                &w,
                AccountId::Clearing,
                0,
                Kind::Post {
                    pending_id: p.spec.id,
                },
            ),
            &w,
            Some(&p),
            1_000_000,
        )
        .unwrap();
        assert_eq!(full.transfer.moved, 80);

        let void = decide(
            &spec(
                3,
                &w,
                AccountId::Clearing,
                0,
                Kind::Void {
                    pending_id: p.spec.id,
                },
            ),
            &w,
            Some(&p),
            5,
        )
        .unwrap();
        assert_eq!(
            void.resolved.as_ref().map(|r| r.status),
            Some(Status::Voided)
        );
        apply(&void, &mut w, &mut c);
        assert_eq!((w.balance(), w.available()), (100, 100));
        assert_eq!((c.balance(), c.credits_pending), (0, 0));
        let partial_void = spec(
            4,
            &w,
            AccountId::Clearing,
            5,
            Kind::Void {
                pending_id: p.spec.id,
            },
        );
        assert_eq!(
            decide(&partial_void, &w, Some(&p), 5),
            Err(TransferError::ExceedsPendingTransferAmount)
        );
    }

    #[test]
    fn timeouts_edges() {
        let (w, _) = funded(100);
        let hold = decide(
            &spec(
                1,
                &w,
                AccountId::Clearing,
                10,
                Kind::Pending {
                    timeout_seconds: 30,
                },
            ),
            &w,
            None,
            1000,
        )
        .unwrap()
        .transfer;
        let post = spec(
            2,
            &w,
            AccountId::Clearing,
            0,
            Kind::Post {
                pending_id: hold.spec.id,
            },
        );
        let expire = spec(
            3,
            &w,
            AccountId::Clearing,
            0,
            Kind::Expire {
                pending_id: hold.spec.id,
            },
        );
        // One second before the deadline: posting works, expiring does not.
        assert!(decide(&post, &w, Some(&hold), 1029).is_ok());
        assert_eq!(
            decide(&expire, &w, Some(&hold), 1029),
            Err(TransferError::PendingTransferNotExpired)
        );
        // At the deadline: the reservation is gone.
        assert_eq!(
            decide(&post, &w, Some(&hold), 1030),
            Err(TransferError::PendingTransferExpired)
        );
        let d = decide(&expire, &w, Some(&hold), 1030).unwrap();
        assert_eq!(d.resolved.map(|r| r.status), Some(Status::Expired));
        assert_eq!(
            d.debit,
            Posting {
                debits_pending: -10,
                ..Posting::default()
            }
        );
    }

    #[test]
    fn post_needs_a_pending_transfer_with_the_same_accounts() {
        let (w, _) = funded(100);
        let single = decide(
            &spec(1, &w, AccountId::Clearing, 10, Kind::Single),
            &w,
            None,
            0,
        )
        .unwrap()
        .transfer;
        let post = spec(
            2,
            &w,
            AccountId::Clearing,
            0,
            Kind::Post {
                pending_id: single.spec.id,
            },
        );
        assert_eq!(
            decide(&post, &w, None, 0),
            Err(TransferError::PendingTransferNotFound)
        );
        assert_eq!(
            decide(&post, &w, Some(&single), 0),
            Err(TransferError::PendingTransferNotPending)
        );
        let hold = decide(
            &spec(
                3,
                &w,
                AccountId::Clearing,
                10,
                Kind::Pending { timeout_seconds: 0 },
            ),
            &w,
            None,
            0,
        )
        .unwrap()
        .transfer;
        let elsewhere = spec(
            4,
            &w,
            AccountId::Revenue("ad".into()),
            0,
            Kind::Post {
                pending_id: hold.spec.id,
            },
        );
        assert_eq!(
            decide(&elsewhere, &w, Some(&hold), 0),
            Err(TransferError::PendingTransferHasDifferentAccounts)
        );
    }

    #[test]
    fn idempotency_conflicts_name_the_first_difference() {
        let w = wallet();
        let base = spec(
            1,
            &w,
            AccountId::Clearing,
            10,
            Kind::Pending { timeout_seconds: 5 },
        );
        assert_eq!(compare(&base, &base.clone()), Ok(()));
        let cases = [
            (
                Spec {
                    kind: Kind::Single,
                    ..base.clone()
                },
                TransferError::ExistsWithDifferentKind,
            ),
            (
                Spec {
                    debit: AccountId::Clearing,
                    credit: w.id.clone(),
                    ..base.clone()
                },
                TransferError::ExistsWithDifferentDebitAccountId,
            ),
            (
                Spec {
                    credit: AccountId::Revenue("x".into()),
                    ..base.clone()
                },
                TransferError::ExistsWithDifferentCreditAccountId,
            ),
            (
                Spec {
                    amount: 11,
                    ..base.clone()
                },
                TransferError::ExistsWithDifferentAmount,
            ),
            (
                Spec {
                    kind: Kind::Pending { timeout_seconds: 6 },
                    ..base.clone()
                },
                TransferError::ExistsWithDifferentTimeout,
            ),
            (
                Spec {
                    reason: Reason::Earning,
                    ..base.clone()
                },
                TransferError::ExistsWithDifferentReason,
            ),
            (
                Spec {
                    user_data: "x".into(),
                    ..base.clone()
                },
                TransferError::ExistsWithDifferentUserData,
            ),
        ];
        for (asked, want) in cases {
            assert_eq!(compare(&base, &asked), Err(want), "{asked:?}");
        }
        let p1 = Spec {
            kind: Kind::Post {
                pending_id: TransferId([7; 16]),
            },
            ..base.clone()
        };
        let p2 = Spec {
            kind: Kind::Post {
                pending_id: TransferId([8; 16]),
            },
            ..base
        };
        assert_eq!(
            compare(&p1, &p2),
            Err(TransferError::ExistsWithDifferentPendingId)
        );
    }

    #[test]
    fn account_ids_round_trip_and_refuse_garbage() {
        for a in [
            AccountId::Wallet(UserId([3; 16])),
            AccountId::Revenue("ad_view_verified".into()),
            AccountId::Clearing,
        ] {
            assert_eq!(AccountId::parse(&a.to_string()), Some(a.clone()));
        }
        for bad in [
            "",
            "wallet:",
            "wallet:g_AAAAAAAAAAAAAAAAAAAAAA",
            "revenue:",
            "revenue:Ad",
            "clearing:x",
        ] {
            assert_eq!(AccountId::parse(bad), None, "{bad}");
        }
        assert_eq!(
            AccountId::Wallet(UserId([3; 16])).holder(),
            Holder::User(UserId([3; 16]))
        );
        assert_eq!(AccountId::Clearing.holder(), Holder::System);
    }

    #[test]
    fn the_account_that_must_authorise_executes() {
        let u = UserId([4; 16]);
        let w = AccountId::Wallet(u);
        let rev = AccountId::Revenue("ad".into());
        assert_eq!(
            executor(&w, &AccountId::Clearing),
            Holder::User(u),
            "payouts: the wallet"
        );
        assert_eq!(executor(&rev, &w), Holder::User(u), "earnings: the wallet");
        assert_eq!(executor(&rev, &AccountId::Clearing), Holder::System);
        let v = AccountId::Wallet(UserId([5; 16]));
        assert_eq!(
            executor(&w, &v),
            Holder::User(u),
            "wallet to wallet: the payer"
        );
    }

    #[test]
    fn overflow_changes_nothing() {
        let mut a = wallet();
        a.credits_posted = u64::MAX;
        let before = a.clone();
        assert_eq!(
            a.apply(&Posting {
                credits_posted: 1,
                ..Posting::default()
            }),
            Err(TransferError::Overflow)
        );
        assert_eq!(a, before);
    }

    fn books_of(journal: &[JournalRecord]) -> (Vec<Account>, Vec<Entry>) {
        let mut accounts: BTreeMap<AccountId, Account> = BTreeMap::new();
        let mut entries = vec![];
        for j in journal {
            for (id, p) in [
                (&j.transfer.spec.debit, j.debit),
                (&j.transfer.spec.credit, j.credit),
            ] {
                let a = accounts
                    .entry(id.clone())
                    .or_insert_with(|| Account::open(id.clone()));
                a.apply(&p).unwrap();
                if id.keeps_entries() {
                    entries.push(Entry::of(&j.transfer, a, p));
                }
            }
        }
        (accounts.into_values().collect(), entries)
    }

    fn books(
        accounts: &[Account],
        entries: &[Entry],
        journal: &[JournalRecord],
        in_flight: &[(AccountId, Posting)],
    ) -> CheckReport {
        check(&Books {
            accounts,
            entries,
            journal,
            in_flight,
        })
    }

    #[test]
    fn check_finds_nothing_in_sound_books_and_each_kind_of_damage() {
        let mut journal = vec![];
        let mut wallet_now = wallet();
        let mut rev_now = Account::open(AccountId::Revenue("ad".into()));
        for (i, amount) in [(1u8, 300u64), (2, 200)] {
            let s = Spec {
                reason: Reason::Earning,
                ..spec(i, &rev_now, wallet_now.id.clone(), amount, Kind::Single)
            };
            let d = decide(&s, &rev_now, None, 0).unwrap();
            apply(&d, &mut rev_now, &mut wallet_now);
            journal.push(JournalRecord {
                transfer: d.transfer.clone(),
                debit: d.debit,
                credit: d.credit(),
            });
        }
        let d = decide(
            &spec(
                3,
                &wallet_now,
                AccountId::Clearing,
                100,
                Kind::Pending { timeout_seconds: 0 },
            ),
            &wallet_now,
            None,
            0,
        )
        .unwrap();
        journal.push(JournalRecord {
            transfer: d.transfer.clone(),
            debit: d.debit,
            credit: d.credit(),
        });
        let (accounts, entries) = books_of(&journal);
        let report = books(&accounts, &entries, &journal, &[]);
        assert_eq!(report.findings, Vec::<String>::new());
        assert_eq!(
            (report.posted_sum, report.pending_sum, report.transfers),
            (0, 0, 3)
        );

        // A credit not yet applied by its holder is in flight, not a break.
        let clearing_missing: Vec<Account> = accounts
            .iter()
            .filter(|a| a.id != AccountId::Clearing)
            .cloned()
            .collect();
        let entries_missing: Vec<Entry> = entries
            .iter()
            .filter(|e| e.account != AccountId::Clearing)
            .cloned()
            .collect();
        let in_flight = [(AccountId::Clearing, d.credit())];
        let report = books(&clearing_missing, &entries_missing, &journal, &in_flight);
        assert_eq!(report.findings, Vec::<String>::new());
        // Without saying so, it is a break.
        let report = books(&clearing_missing, &entries_missing, &journal, &[]);
        assert!(!report.findings.is_empty());

        // An edited balance.
        let mut edited = accounts.clone();
        edited[0].credits_posted += 1;
        let report = books(&edited, &entries, &journal, &[]);
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.contains("differ from its entries")),
            "{:?}",
            report.findings
        );
        assert_ne!(report.posted_sum, 0);

        // A lost wallet entry.
        let lost = entries
            .iter()
            .position(|e| e.account.keeps_entries())
            .unwrap();
        let mut fewer = entries.clone();
        fewer.remove(lost);
        let report = books(&accounts, &fewer, &journal, &[]);
        assert!(!report.findings.is_empty());

        // A journal record whose sides do not mirror.
        let mut bad = journal.clone();
        bad[0].credit.credits_posted += 5;
        let report = books(&accounts, &entries, &bad, &[]);
        assert!(report
            .findings
            .iter()
            .any(|f| f.contains("does not mirror")));
    }
}
