//! Two-phase transfers through the wallet actors and real storage, in
//! process (the HTTP routes that use them, payouts and packets, build on this).

use std::sync::Arc;
use std::time::Duration;

use qrgate::config::Config;
use qrgate::domain::ids::{TransferId, UserId};
use qrgate::domain::ledger::{AccountId, Kind, Reason, Spec, Status, TransferError};
use qrgate::error::ApiError;
use qrgate::registry::Arbiters;
use qrgate::storage::Storage;
use qrgate::wallets::{Shared, Wallets};

fn spec(n: u8, debit: &AccountId, credit: &AccountId, amount: u64, kind: Kind) -> Spec {
    Spec {
        id: TransferId([n; 16]),
        debit: debit.clone(),
        credit: credit.clone(),
        amount,
        kind,
        reason: Reason::Payout,
        user_data: format!("t{n}"),
    }
}

fn refused(r: Result<impl std::fmt::Debug, ApiError>) -> TransferError {
    match r {
        Err(ApiError::Transfer(e)) => e,
        other => panic!("expected a transfer refusal, got {other:?}"),
    }
}

#[actix_web::test]
async fn two_phase_transfers_reserve_post_void_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(dir.path(), [1; 32]).expect("open");
    let wallets = Wallets::new(
        Arc::new(Shared::new(Config::default(), storage)),
        Arbiters::start(2),
    );
    let wallet = AccountId::Wallet(UserId([9; 16]));
    let clearing = AccountId::Clearing;
    let earned = wallets
        .earn("e1", UserId([9; 16]), "task_completed", 1000)
        .await
        .expect("earn");
    assert!(earned.fresh);

    // Reserve 600: the balance stays, the available amount drops.
    let hold = spec(
        1,
        &wallet,
        &clearing,
        600,
        Kind::Pending {
            timeout_seconds: 3600,
        },
    );
    let h = wallets.execute(hold.clone()).await.expect("hold");
    assert_eq!(h.transfer.status, Status::Pending);
    let a = wallets.account(wallet.clone()).await.expect("account");
    assert_eq!((a.balance(), a.available()), (1000, 400));
    let over = spec(2, &wallet, &clearing, 401, Kind::Single);
    assert_eq!(
        refused(wallets.execute(over).await),
        TransferError::ExceedsCredits
    );

    // Post 250 of it: 350 goes back.
    let post = spec(
        3,
        &wallet,
        &clearing,
        250,
        Kind::Post {
            pending_id: hold.id,
        },
    );
    let p = wallets.execute(post.clone()).await.expect("post");
    assert_eq!((p.fresh, p.transfer.moved), (true, 250));
    let again = wallets.execute(post).await.expect("same post again");
    assert!(!again.fresh, "a retry returns the original");
    let other_post = spec(
        4,
        &wallet,
        &clearing,
        0,
        Kind::Post {
            pending_id: hold.id,
        },
    );
    assert_eq!(
        refused(wallets.execute(other_post).await),
        TransferError::PendingTransferAlreadyPosted
    );
    let a = wallets.account(wallet.clone()).await.expect("account");
    assert_eq!(
        (a.balance(), a.available(), a.debits_pending),
        (750, 750, 0)
    );

    // Void releases everything.
    let hold2 = spec(
        5,
        &wallet,
        &clearing,
        700,
        Kind::Pending { timeout_seconds: 0 },
    );
    wallets.execute(hold2.clone()).await.expect("hold2");
    let void = spec(
        6,
        &wallet,
        &clearing,
        0,
        Kind::Void {
            pending_id: hold2.id,
        },
    );
    wallets.execute(void).await.expect("void");
    assert_eq!(
        wallets.transfer(hold2.id).expect("read").map(|t| t.status),
        Some(Status::Voided)
    );

    // A reservation with a 1 s timeout is released by the sweeper.
    let hold3 = spec(
        7,
        &wallet,
        &clearing,
        100,
        Kind::Pending { timeout_seconds: 1 },
    );
    wallets.execute(hold3.clone()).await.expect("hold3");
    let a = wallets.account(wallet.clone()).await.expect("account");
    assert_eq!(a.available(), 650);
    let mut status = None;
    for _ in 0..60 {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        status = wallets.transfer(hold3.id).expect("read").map(|t| t.status);
        if status == Some(Status::Expired) {
            break;
        }
    }
    assert_eq!(status, Some(Status::Expired));
    let a = wallets.account(wallet.clone()).await.expect("account");
    assert_eq!((a.balance(), a.available()), (750, 750));
    let late = spec(
        8,
        &wallet,
        &clearing,
        0,
        Kind::Post {
            pending_id: hold3.id,
        },
    );
    assert_eq!(
        refused(wallets.execute(late).await),
        TransferError::PendingTransferExpired
    );

    // Let the system holder apply its inbox, then check the books.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let check = wallets.check().await.expect("check");
    assert_eq!(check.report.findings, Vec::<String>::new());
    assert_eq!(check.report.in_flight, 0, "the system inbox was applied");
    let clearing_now = wallets.account(clearing).await.expect("clearing");
    assert_eq!(
        clearing_now.balance(),
        250,
        "only the posted 250 reached clearing"
    );
}
