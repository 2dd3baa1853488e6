//! Unit tests of the group actor: real actors and real write sets over the
//! in-memory store ([`Storage::in_memory`]), no HTTP and no disk. A fresh
//! [`Directory`] over the same store activates every group again from what
//! was written, as after a passivation.

use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

use super::actor::{IsMember, ListRequests};
use super::decisions::Decide;
use super::invites::CreateInvite;
use super::join::{Join, JoinOutcome};
use super::signals::{SignalStore, UserSignals};
use super::{Caller, Directory, Shared};
use crate::config::Config;
use crate::domain::group::{Description, Group, GroupName, Invite, MemberLimit};
use crate::domain::ids::{GroupId, UserId};
use crate::domain::join::Refusal;
use crate::domain::token;
use crate::error::ApiError;
use crate::keys::KeyRing;
use crate::registry::Arbiters;
use crate::storage::Storage;

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn shared(config: Config, storage: &Storage, keys: &Arc<KeyRing>) -> Arc<Shared> {
    let clock = governor::clock::DefaultClock::default();
    Arc::new(Shared {
        user_limiter: Arc::new(RateLimiter::dashmap_with_clock(
            per_minute(config.limits.user_joins_per_minute),
            clock.clone(),
        )),
        config,
        storage: storage.clone(),
        keys: Arc::clone(keys),
        clock,
        counters: crate::push::CounterStore::default(),
        signals: SignalStore::default(),
        duty: Default::default(),
    })
}

struct World {
    storage: Storage,
    keys: Arc<KeyRing>,
    config: Config,
    groups: Directory,
}

impl World {
    fn new(config: Config) -> World {
        let storage = Storage::in_memory().expect("an in-memory store");
        let keys = Arc::new(KeyRing::ephemeral());
        let groups = Directory::new(shared(config.clone(), &storage, &keys), Arbiters::start(1));
        World {
            storage,
            keys,
            config,
            groups,
        }
    }

    /// A directory with no group resident: every group is rebuilt from
    /// the store on its next message.
    fn reactivated(&self) -> Directory {
        Directory::new(
            shared(self.config.clone(), &self.storage, &self.keys),
            Arbiters::start(1),
        )
    }

    async fn group(&self, owner: UserId, limit: u32, approval: bool) -> Group {
        self.groups
            .create_group(
                owner,
                GroupName::parse("Hikers").expect("a valid name"),
                Description::default(),
                MemberLimit::unchecked(limit),
                approval,
            )
            .await
            .expect("group created")
    }

    async fn invite(&self, g: GroupId, creator: UserId) -> Invite {
        let m = CreateInvite {
            creator,
            ttl_seconds: 3600,
            max_uses: None,
            parent: None,
        };
        self.groups.call(g, m).await.expect("invite created")
    }

    async fn join(
        &self,
        groups: &Directory,
        g: GroupId,
        invite: &Invite,
        user: UserId,
        signals: Option<UserSignals>,
    ) -> Result<JoinOutcome, ApiError> {
        let parsed = token::parse(&invite.token).expect("an issued token parses");
        let tag = parsed.tag(self.keys.tag_key());
        let m = Join {
            user,
            claims: parsed.claims,
            tag,
            signals,
            user_quota: None,
        };
        groups.call(g, m).await
    }
}

fn user() -> UserId {
    UserId::random()
}

#[actix_web::test]
async fn a_join_is_admitted_once_and_rebuilt_from_the_store() {
    let w = World::new(Config::default());
    let (owner, joiner) = (user(), user());
    let g = w.group(owner, 10, false).await;
    let inv = w.invite(g.id, owner).await;
    let first = w.join(&w.groups, g.id, &inv, joiner, None).await;
    assert!(matches!(first, Ok(JoinOutcome::Joined)), "{first:?}");
    let again = w.join(&w.groups, g.id, &inv, joiner, None).await;
    assert!(
        matches!(again, Err(ApiError::Join(Refusal::AlreadyMember))),
        "{again:?}"
    );

    let rebuilt = w.reactivated();
    let member = rebuilt.call(g.id, IsMember { user: joiner }).await;
    assert!(matches!(member, Ok(true)), "{member:?}");
    let again = w.join(&rebuilt, g.id, &inv, joiner, None).await;
    assert!(
        matches!(again, Err(ApiError::Join(Refusal::AlreadyMember))),
        "{again:?}"
    );
}

#[actix_web::test]
async fn a_forged_tag_is_refused_and_nobody_joins() {
    let w = World::new(Config::default());
    let (owner, joiner) = (user(), user());
    let g = w.group(owner, 10, false).await;
    let inv = w.invite(g.id, owner).await;
    let parsed = token::parse(&inv.token).expect("an issued token parses");
    let m = Join {
        user: joiner,
        claims: parsed.claims,
        tag: [7; 32],
        signals: None,
        user_quota: None,
    };
    let r = w.groups.call(g.id, m).await;
    assert!(
        matches!(r, Err(ApiError::Join(Refusal::InvalidToken))),
        "{r:?}"
    );
    let member = w.groups.call(g.id, IsMember { user: joiner }).await;
    assert!(matches!(member, Ok(false)), "{member:?}");
}

#[actix_web::test]
async fn a_request_holds_a_seat_until_a_moderator_decides() {
    let w = World::new(Config::default());
    let (owner, a, b) = (user(), user(), user());
    // Room for the owner and one more.
    let g = w.group(owner, 2, true).await;
    let inv = w.invite(g.id, owner).await;
    let Ok(JoinOutcome::Pending(req)) = w.join(&w.groups, g.id, &inv, a, None).await else {
        panic!("a join into an approval group is a request");
    };
    let full = w.join(&w.groups, g.id, &inv, b, None).await;
    assert!(
        matches!(full, Err(ApiError::Join(Refusal::GroupFull))),
        "{full:?}"
    );

    let decide = |caller| Decide {
        caller,
        request_id: req,
        approve: true,
    };
    let stranger = w.groups.call(g.id, decide(Caller::User(b))).await;
    assert!(
        matches!(stranger, Err(ApiError::Forbidden(_))),
        "{stranger:?}"
    );

    let rebuilt = w.reactivated();
    let listed = rebuilt
        .call(
            g.id,
            ListRequests {
                caller: Caller::User(owner),
            },
        )
        .await
        .expect("the owner lists requests");
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [req]);
    let approved = rebuilt.call(g.id, decide(Caller::User(owner))).await;
    assert!(matches!(approved, Ok(u) if u == a), "{approved:?}");
    let member = rebuilt.call(g.id, IsMember { user: a }).await;
    assert!(matches!(member, Ok(true)), "{member:?}");
}

#[actix_web::test]
async fn the_groups_join_rate_throttles_and_a_refusal_admits_nobody() {
    let mut config = Config::default();
    config.limits.group_joins_per_minute = 1;
    let w = World::new(config);
    let (owner, a, b) = (user(), user(), user());
    let g = w.group(owner, 10, false).await;
    let inv = w.invite(g.id, owner).await;
    let first = w.join(&w.groups, g.id, &inv, a, None).await;
    assert!(matches!(first, Ok(JoinOutcome::Joined)), "{first:?}");
    let second = w.join(&w.groups, g.id, &inv, b, None).await;
    assert!(
        matches!(
            second,
            Err(ApiError::RateLimited {
                scope: "joins into this group",
                ..
            })
        ),
        "{second:?}"
    );
    let member = w.groups.call(g.id, IsMember { user: b }).await;
    assert!(matches!(member, Ok(false)), "{member:?}");
}

#[actix_web::test]
async fn a_flagged_attempt_is_challenged_and_uses_no_group_quota() {
    let mut config = Config::default();
    config.limits.group_joins_per_minute = 1;
    config.risk.flag_score = 1;
    let w = World::new(config);
    let (owner, fresh, old) = (user(), user(), user());
    let g = w.group(owner, 10, false).await;
    let inv = w.invite(g.id, owner).await;
    let new_account = UserSignals {
        account_age_seconds: 0,
        recent: 1,
        device_accounts: 0,
        device: None,
    };
    let challenged = w
        .join(&w.groups, g.id, &inv, fresh, Some(new_account))
        .await;
    assert!(
        matches!(challenged, Err(ApiError::ChallengeRequired(_))),
        "{challenged:?}"
    );
    // The group's one join a minute is still there for a clean attempt.
    let settled = UserSignals {
        account_age_seconds: 365 * 86_400,
        ..new_account
    };
    let joined = w.join(&w.groups, g.id, &inv, old, Some(settled)).await;
    assert!(matches!(joined, Ok(JoinOutcome::Joined)), "{joined:?}");
}
