//! `qrgate seed`: a data dir filled straight through the storage module, for
//! the load harness's memory scenario (`qrgate load --scenario memory`).
//! Going through the API would take hours for 10M joins; this writes the
//! same write sets the server makes, before any server runs on the dir.
//! Prints the seeded groups' ids on stdout, one a line.

use crate::domain::group::{Group, GroupStatus, Invite, JoinRisk, Member, Role, MEMBER_TIERS};
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::domain::risk::{Reason, Stage};
use crate::domain::roster::Roster;
use crate::keys::KeyRing;
use crate::storage::{Storage, WriteSet};
use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct SeedArgs {
    /// The data dir to fill (created if missing; no server may run on it).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Groups to create.
    #[arg(long)]
    pub groups: usize,
    /// Members of each group (the owner included).
    #[arg(long)]
    pub members: usize,
    /// Ledger entries (earnings) to write after the memberships.
    #[arg(long, default_value_t = 0)]
    pub entries: u64,
}

/// Memberships written before the seeding store is reopened.
const REOPEN_EVERY: usize = 1_000_000;

/// Memberships per write set while seeding (one group commit each).
const SEED_BATCH: usize = 50_000;

pub fn run(a: SeedArgs) -> Result<(), String> {
    let largest = MEMBER_TIERS[MEMBER_TIERS.len() - 1] as usize;
    if a.members == 0 || a.members > largest {
        return Err(format!(
            "--members must be 1 to {largest} (the largest group tier)"
        ));
    }
    if !(1..=10_000_000).contains(&a.groups) {
        return Err("--groups must be 1 to 10000000".into());
    }
    std::fs::create_dir_all(&a.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", a.data_dir.display()))?;
    let groups = actix_web::rt::System::new().block_on(async {
        let groups = seed(&a.data_dir, a.groups, a.members).await?;
        if a.entries > 0 {
            seed_ledger(&a.data_dir, a.entries).await?;
        }
        Ok::<_, String>(groups)
    })?;
    let mut out = std::io::stdout().lock();
    for g in groups {
        writeln!(out, "{g}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Write `groups` groups of `members` members (the owner and the rest
/// through one invitation of the owner's, a tenth of them with a risk
/// score), `SEED_BATCH` memberships per durable write set, two in flight.
///
/// Keys go in ascending order (sorted group ids): random inserts make sled
/// rewrite pages all over the tree, and sled's memory grows with the
/// pages written (3.5 GB after 1.5M random memberships); the store is also
/// closed and reopened every `REOPEN_EVERY` memberships to release it.
/// Open the seeding store; sled's background threads may hold the file
/// lock of the handle just shut down for a moment, so a lock error is
/// retried for up to 10 s.
async fn open_store(data: &Path, journal_key: [u8; 32]) -> Result<Storage, String> {
    let mut tries = 0;
    loop {
        match Storage::open(data, journal_key) {
            Ok(s) => return Ok(s),
            Err(e) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                tries += 1;
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn seed(data: &Path, groups: usize, members: usize) -> Result<Vec<GroupId>, String> {
    let keys = KeyRing::load_or_create(data).map_err(|e| e.to_string())?;
    let mut store = open_store(data, keys.journal_key()).await?;
    let now = crate::clock::now();
    // The smallest tier that holds them (`run` checked that one does).
    let limit = MEMBER_TIERS
        .into_iter()
        .find(|t| *t as usize >= members)
        .unwrap_or(MEMBER_TIERS[MEMBER_TIERS.len() - 1]);
    let mut ids: Vec<GroupId> = (0..groups).map(|_| GroupId::random()).collect();
    ids.sort_unstable();
    let mut in_flight = VecDeque::new();
    let mut w = WriteSet::new();
    let (mut batched, mut since_open) = (0, 0);
    let (mut last, start) = (Instant::now(), Instant::now());
    for (n, &g) in ids.iter().enumerate() {
        let (owner, invite) = (UserId::random(), InviteId::random());
        let mut users: Vec<UserId> = (1..members).map(|_| UserId::random()).collect();
        users.sort_unstable();
        w.group(&Group {
            id: g,
            name: format!("memory group {n}"),
            description: "seeded by qrgate load --scenario memory".into(),
            owner_id: owner,
            member_limit: limit,
            approval_required: false,
            status: GroupStatus::Active,
            epoch: 0,
            ban_reason: None,
            created_at: now,
            join_rate_per_minute: None,
            avatar: None,
            preview_members: false,
        });
        let inv = Invite {
            id: invite,
            group_id: g,
            creator_id: owner,
            created_at: now,
            expires_at: now + 30 * 86_400,
            max_uses: None,
            uses: members.saturating_sub(1) as u32,
            revoked: false,
            epoch: 0,
            tag: [7; 32],
            // As long as a real token (kind, ids, expiry, signature).
            token: "x".repeat(150),
            parent_id: None,
            depth: 0,
            stage: Stage::Open,
            stage_changed_at: 0,
            stage_reset_at: 0,
        };
        w.invite(&inv);
        w.invite_index(&inv);
        let roster = Roster::new(
            (0..members)
                .map(|k| {
                    let first = k == 0;
                    Member {
                        user_id: if first { owner } else { users[k - 1] },
                        role: if first { Role::Owner } else { Role::Member },
                        joined_at: now - (members - k) as i64,
                        via_invite: (!first).then_some(invite),
                        invited_by: (!first).then_some(owner),
                        risk: (k % 10 == 5).then(|| JoinRisk {
                            score: 35,
                            reasons: vec![Reason::NewAccount],
                            challenged: false,
                            new_account: true,
                        }),
                    }
                })
                .collect(),
        );
        w.roster(g, &roster);
        batched += members;
        if batched >= SEED_BATCH || n + 1 == groups {
            in_flight.push_back(store.submit(std::mem::take(&mut w)));
            since_open += batched;
            batched = 0;
            if in_flight.len() > 2 {
                if let Some(f) = in_flight.pop_front() {
                    f.await.map_err(|e| e.to_string())?;
                }
            }
            if since_open >= REOPEN_EVERY && n + 1 < groups {
                for f in in_flight.drain(..) {
                    f.await.map_err(|e| e.to_string())?;
                }
                store.shutdown().map_err(|e| e.to_string())?;
                store = open_store(data, keys.journal_key()).await?;
                since_open = 0;
            }
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            let rate = ((n + 1) * members) as f64 / start.elapsed().as_secs_f64();
            eprintln!("seed: {}/{groups} groups ({rate:.0} memberships/s)", n + 1);
        }
    }
    for f in in_flight {
        f.await.map_err(|e| e.to_string())?;
    }
    store.shutdown().map_err(|e| e.to_string())?;
    Ok(ids)
}

/// Earnings of `ENTRIES_PER_WALLET` each into `entries / ENTRIES_PER_WALLET`
/// wallets, as the wallets' actors write them (the transfer, its chain
/// record, the wallet's entry and account, the revenue account), in write
/// sets of `LEDGER_BATCH`. Ends without a checkpoint (as a kill would), so
/// the journal written since the last one is replayed at the next start.
async fn seed_ledger(data: &Path, entries: u64) -> Result<(), String> {
    use crate::domain::ids::TransferId;
    use crate::domain::ledger::{
        self, Account, AccountId, Entry, JournalRecord, Kind, Reason, Spec,
    };
    const ENTRIES_PER_WALLET: u64 = 1_000;
    const LEDGER_BATCH: u64 = 5_000;
    let keys = KeyRing::load_or_create(data).map_err(|e| e.to_string())?;
    let store = open_store(data, keys.journal_key()).await?;
    let now = crate::clock::now();
    let mut revenue = Account::open(AccountId::Revenue("task_completed".into()));
    let mut wallet = Account::open(AccountId::Wallet(UserId::random()));
    let mut in_flight = VecDeque::new();
    let mut w = WriteSet::new();
    let (mut last, start) = (Instant::now(), Instant::now());
    for i in 0..entries {
        if i > 0 && i % ENTRIES_PER_WALLET == 0 {
            w.account(&wallet);
            wallet = Account::open(AccountId::Wallet(UserId::random()));
        }
        let spec = Spec {
            id: TransferId::derive("earning", &[b"seed", &i.to_le_bytes()]),
            debit: revenue.id.clone(),
            credit: wallet.id.clone(),
            amount: 1 + i % 500,
            kind: Kind::Single,
            reason: Reason::Earning,
            user_data: String::new(),
        };
        let d = ledger::decide(&spec, &revenue, None, now).map_err(|e| format!("{e:?}"))?;
        revenue.apply(&d.debit).map_err(|e| format!("{e:?}"))?;
        wallet.apply(&d.credit()).map_err(|e| format!("{e:?}"))?;
        w.new_transfer(&d.transfer);
        w.journal(&JournalRecord {
            transfer: d.transfer.clone(),
            debit: d.debit,
            credit: d.credit(),
        });
        w.entry(&Entry::of(&d.transfer, &wallet, d.credit()));
        if (i + 1) % LEDGER_BATCH == 0 || i + 1 == entries {
            w.account(&wallet);
            w.account(&revenue);
            in_flight.push_back(store.submit(std::mem::take(&mut w)));
            if in_flight.len() > 2 {
                if let Some(f) = in_flight.pop_front() {
                    f.await.map_err(|e| e.to_string())?;
                }
            }
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            let rate = (i + 1) as f64 / start.elapsed().as_secs_f64();
            eprintln!("seed: {}/{entries} ledger entries ({rate:.0}/s)", i + 1);
        }
    }
    for f in in_flight {
        f.await.map_err(|e| e.to_string())?;
    }
    store.abandon();
    Ok(())
}
