//! Unit tests of the wallet actors: real actors and real write sets over
//! the in-memory store ([`Storage::in_memory`]), no HTTP and no disk. A
//! fresh [`Wallets`] over the same store rebuilds every holder from what
//! was written, as after a passivation.

use std::sync::Arc;

use super::{Shared, Wallets};
use crate::config::Config;
use crate::domain::ids::{TransferId, UserId};
use crate::domain::ledger::{AccountId, Kind, Reason, Spec, TransferError};
use crate::error::ApiError;
use crate::registry::Arbiters;
use crate::storage::Storage;

fn wallets(storage: &Storage) -> Wallets {
    let shared = Arc::new(Shared {
        config: Config::default(),
        storage: storage.clone(),
    });
    Wallets::new(shared, Arbiters::start(1))
}

fn spec(id: &str, debit: AccountId, credit: AccountId, amount: u64, kind: Kind) -> Spec {
    Spec {
        id: TransferId::derive("test", &[id.as_bytes()]),
        debit,
        credit,
        amount,
        kind,
        reason: Reason::Payout,
        user_data: String::new(),
    }
}

async fn balance(w: &Wallets, u: UserId) -> i128 {
    w.account(AccountId::Wallet(u))
        .await
        .expect("the wallet answers")
        .balance()
}

#[actix_web::test]
async fn an_earning_is_credited_once_and_rebuilt_from_the_store() {
    let storage = Storage::in_memory().expect("an in-memory store");
    let w = wallets(&storage);
    let u = UserId::random();
    let first = w.earn("ev-1", u, "ads", 500).await.expect("credited");
    assert!(first.fresh);
    let again = w.earn("ev-1", u, "ads", 500).await.expect("the same event");
    assert!(!again.fresh);
    assert_eq!(balance(&w, u).await, 500);

    let rebuilt = wallets(&storage);
    assert_eq!(balance(&rebuilt, u).await, 500);
    let report = rebuilt.check().await.expect("the books check runs").report;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.posted_sum, 0);
}

#[actix_web::test]
async fn a_wallet_never_goes_below_zero_and_a_void_gives_the_hold_back() {
    let storage = Storage::in_memory().expect("an in-memory store");
    let w = wallets(&storage);
    let u = UserId::random();
    w.earn("ev-1", u, "ads", 300).await.expect("credited");
    let hold = spec(
        "hold",
        AccountId::Wallet(u),
        AccountId::Clearing,
        200,
        Kind::Pending { timeout_seconds: 0 },
    );
    let held = w.execute(hold).await.expect("held");
    let account = w.account(AccountId::Wallet(u)).await.expect("the wallet");
    assert_eq!(account.available(), 100);

    let too_much = spec(
        "too-much",
        AccountId::Wallet(u),
        AccountId::Clearing,
        101,
        Kind::Single,
    );
    let refused = w.execute(too_much).await;
    assert!(
        matches!(
            refused,
            Err(ApiError::Transfer(TransferError::ExceedsCredits))
        ),
        "{refused:?}"
    );

    let void = spec(
        "void",
        AccountId::Wallet(u),
        AccountId::Clearing,
        0,
        Kind::Void {
            pending_id: held.transfer.spec.id,
        },
    );
    w.execute(void).await.expect("voided");
    let rebuilt = wallets(&storage);
    let account = rebuilt
        .account(AccountId::Wallet(u))
        .await
        .expect("the wallet");
    assert_eq!((account.available(), account.balance()), (300, 300));
    let report = rebuilt.check().await.expect("the books check runs").report;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}
