//! The storage write path alone, without HTTP or actors: how many join-shaped
//! write sets per second the committer makes durable (sled batch + flush +
//! fdatasync), with 64 submitters in flight as in the load runs.
//!
//! Run: `cargo bench --bench storage`. Criterion reports the time for N write
//! sets submitted together and awaited (N = 1, 64, 256); write sets/s = N / time.
//! One write set alone shows the latency of a durable commit (sled flush +
//! fdatasync); the larger batches show how group commit spreads it.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

use qrgate::domain::events::{Event, EventKind};
use qrgate::domain::group::{Member, Role};
use qrgate::domain::ids::{GroupId, InviteId, UserId};
use qrgate::domain::roster::Roster;
use qrgate::storage::{Storage, WriteSet};

/// The write set of one granted join into a group of about 100: the
/// member's bucket (the joiner and ~6 others, as `src/storage/member.rs`
/// spreads 100 members over 16 buckets) and its event.
fn join_write_set(g: GroupId, i: InviteId) -> WriteSet {
    let user = UserId::random();
    let member = |user_id: UserId| Member {
        user_id,
        role: Role::Member,
        joined_at: 1_800_000_000,
        via_invite: Some(i),
        invited_by: Some(UserId([7; 16])),
        risk: None,
    };
    let roster = Roster::new(
        (0..6)
            .map(|k| {
                let mut id = UserId::random();
                id.0[0] = (user.0[0] & 0xf0) | k;
                member(id)
            })
            .chain([member(user)])
            .collect(),
    );
    let mut w = WriteSet::new();
    w.membership(g, &roster, user);
    w.event(&Event::for_group(
        g,
        vec![user],
        1_800_000_000,
        EventKind::MemberJoined {
            group_id: g,
            user_id: user,
            via_invite: Some(i),
            approved_request: None,
        },
    ));
    w
}

fn storage(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let store = match Storage::open(dir.path(), [0; 32]) {
        Ok(s) => s,
        Err(e) => panic!("open: {e}"),
    };
    let groups: Vec<GroupId> = (0..10_000).map(|_| GroupId::random()).collect();
    let invite = InviteId::random();
    let mut n = 0usize;
    let mut group = c.benchmark_group("storage");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    for in_flight in [1usize, 64, 256] {
        group.bench_function(format!("durable_join_write_sets_x{in_flight}"), |b| {
            b.iter(|| {
                let futures: Vec<_> = (0..in_flight)
                    .map(|_| {
                        n += 1;
                        store.submit(join_write_set(groups[n % groups.len()], invite))
                    })
                    .collect();
                rt.block_on(async {
                    for f in futures {
                        if let Err(e) = f.await {
                            panic!("commit failed: {e}");
                        }
                    }
                });
            })
        });
    }
    group.finish();
}

criterion_group!(benches, storage);
criterion_main!(benches);
