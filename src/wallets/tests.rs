//! Unit tests of the wallet and packet actors: real actors and real write
//! sets over the in-memory store ([`Storage::in_memory`]), no HTTP and no
//! disk. A fresh [`Wallets`] over the same store rebuilds every holder from
//! what was written, as after a passivation.

use std::sync::Arc;

use super::{Shared, Wallets};
use crate::config::Config;
use crate::domain::ids::{PacketId, TransferId, UserId};
use crate::domain::ledger::{AccountId, Holder, Kind, Reason, Spec, TransferError};
use crate::domain::packet::{self, ClaimAsk, Mode, Packet, Refusal};
use crate::error::ApiError;
use crate::registry::Arbiters;
use crate::storage::Storage;

fn wallets(storage: &Storage) -> Wallets {
    let shared = Arc::new(Shared::new(Config::default(), storage.clone()));
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

/// A fixed packet of `total` fen in `count` shares, funded by `sender`.
fn packet(sender: UserId, total: u64, count: u32) -> Packet {
    let id = PacketId::random();
    let seed = [7; 32];
    let created_at = crate::clock::now();
    Packet {
        id,
        funder: AccountId::Wallet(sender),
        sender: Some(sender),
        merchant: None,
        total,
        count,
        mode: Mode::Fixed,
        min_share: 1,
        message: String::new(),
        theme: None,
        utm: Default::default(),
        geofence: None,
        referral: None,
        seed: packet::seed_hex(&seed),
        commitment: packet::commitment(&seed),
        created_at,
        expires_at: created_at + 3600,
        hold: TransferId::derive("packet hold", &[id.as_bytes()]),
        closed: None,
    }
}

fn ask(user: UserId) -> ClaimAsk {
    ClaimAsk {
        user,
        at: None,
        referrer: None,
        challenge_due: false,
        earns_referral: true,
    }
}

/// Creation in the funder's wallet actor, claims and reads in the packet's
/// own actor, settlement across both; the wallet actors never host a packet.
#[actix_web::test]
async fn a_packet_is_claimed_in_its_own_actor_and_settled_through_the_funders() {
    let storage = Storage::in_memory().expect("an in-memory store");
    let w = wallets(&storage);
    let (sender, a, b) = (UserId::random(), UserId::random(), UserId::random());
    w.earn("ev-1", sender, "ads", 1000).await.expect("credited");
    let p = packet(sender, 600, 2);
    let created = w
        .create_packet([1; 32], "request".into(), p.clone())
        .await
        .expect("created");
    assert!(created.fresh);
    let funder = w.account(AccountId::Wallet(sender)).await.expect("wallet");
    assert_eq!((funder.available(), funder.balance()), (400, 1000));

    let first = w.claim_packet(p.id, ask(a)).await.expect("claimed");
    assert_eq!((first.claim.amount, first.left), (300, 1));
    let twice = w.claim_packet(p.id, ask(a)).await;
    assert!(
        matches!(twice, Err(ApiError::Packet(Refusal::AlreadyClaimed))),
        "{twice:?}"
    );
    let escrow = w.account(AccountId::Escrow(p.id)).await.expect("escrow");
    assert_eq!(escrow.debits_posted, 300);
    let last = w.claim_packet(p.id, ask(b)).await.expect("claimed");
    assert_eq!(last.left, 0);
    // The last claim settles in the background; settling again is safe.
    w.close_packet(p.id).await.expect("settled");

    let stray = w
        .wallet_actors
        .call(
            Holder::Packet(p.id),
            super::ledger_core::GetAccount {
                id: AccountId::Escrow(p.id),
            },
        )
        .await;
    assert!(matches!(stray, Err(ApiError::Internal)), "{stray:?}");

    let rebuilt = wallets(&storage);
    let state = rebuilt
        .packet(p.id, false, 0..10, None)
        .await
        .expect("packet");
    assert_eq!(state.claims.len(), 2);
    let closed = state.packet.closed.expect("closed");
    assert_eq!((closed.claimed, closed.refunded), (600, 0));
    for (u, fen) in [(sender, 400), (a, 300), (b, 300)] {
        let account = rebuilt.account(AccountId::Wallet(u)).await.expect("wallet");
        assert_eq!((account.available(), account.balance()), (fen, fen));
    }
    let report = rebuilt.check().await.expect("the books check runs").report;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}
