//! Criterion micro-benchmarks of qrgate's hot paths.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench hot_paths              # everything (about a minute)
//! cargo bench --bench hot_paths -- token/    # only one group (filter by name)
//! ```
//!
//! What each figure is for:
//!
//! - `token/parse`: base64url decoding and claim extraction of a 151-character
//!   invitation token, no signature check. Every scan pays this.
//! - `token/verify_ed25519`: parse + full Ed25519 signature verification — what
//!   a scan would cost if the server checked the signature every time.
//! - `token/verify_tag`: parse + keyed-blake3 tag of the raw token compared to
//!   the tag stored with the invitation — what the join path actually does.
//!   The ratio `verify_ed25519 / verify_tag` is the point of this pair: it is
//!   the saving that justifies storing the tag.
//! - `join/decide/grant` and `join/decide/refuse_group_full`: the pure join
//!   decision on realistic facts, for an admission and for a refusal that runs
//!   through every check (the group-full check is the last one).
//! - `qr/png_512`, `qr/svg_512`, `qr/card`: rendering an invitation URL
//!   (`http://127.0.0.1:8080/j/` + 151-char token) as a 512 px PNG, a 512 px
//!   SVG and a 600x900 branded card PNG — the cost of the QR endpoints, which
//!   dominate CPU when codes are rendered uncached.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ed25519_dalek::SigningKey;

use qrgate::card::{self, Card};
use qrgate::domain::group::{Group, GroupStatus, Invite};
use qrgate::domain::ids::{GroupId, InviteId, UserId};
use qrgate::domain::join::{self, Admission, Facts, Refusal};
use qrgate::domain::token::{self, kid_of, Claims};
use qrgate::qr;

/// Fixed tag key (the server derives its own from `secret.key`).
const TAG_KEY: [u8; 32] = [9; 32];
const EXPIRES_AT: i64 = 1_900_000_000;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// A realistic signed token: 151 base64url characters.
fn signed_token(key: &SigningKey) -> String {
    let claims = Claims {
        kid: kid_of(&key.verifying_key()),
        invite_id: InviteId([0x5a; 16]),
        group_ref: [1, 2, 3, 4, 5, 6, 7, 8],
        epoch: 0,
        creator_ref: [8, 7, 6, 5, 4, 3, 2, 1],
        expires_at: EXPIRES_AT,
    };
    let text = claims.sign(key);
    assert_eq!(text.len(), token::TOKEN_TEXT_LEN);
    text
}

fn bench_token(c: &mut Criterion) {
    let key = signing_key();
    let vk = key.verifying_key();
    let kid = kid_of(&vk);
    let text = signed_token(&key);
    let stored_tag = token::parse(&text)
        .map(|p| p.tag(&TAG_KEY))
        .unwrap_or_else(|e| panic!("fixture token does not parse: {e}"));

    let mut g = c.benchmark_group("token");
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("parse", |b| {
        b.iter(|| token::parse(black_box(&text)).is_ok())
    });

    g.bench_function("verify_ed25519", |b| {
        b.iter(|| match token::parse(black_box(&text)) {
            Ok(p) => p.verify(|k| (k == kid).then_some(black_box(vk))).is_ok(),
            Err(_) => false,
        })
    });

    g.bench_function("verify_tag", |b| {
        b.iter(|| match token::parse(black_box(&text)) {
            Ok(p) => p.tag(black_box(&TAG_KEY)) == *black_box(&stored_tag),
            Err(_) => false,
        })
    });

    g.finish();
}

fn group(member_limit: u32) -> Group {
    Group {
        id: GroupId([1; 16]),
        name: "Rust Meetup Berlin".into(),
        description: "Monthly talks about Rust, async and embedded.".into(),
        owner_id: UserId([2; 16]),
        member_limit,
        approval_required: false,
        status: GroupStatus::Active,
        epoch: 0,
        ban_reason: None,
        created_at: 1_700_000_000,
        join_rate_per_minute: None,
        avatar: None,
        preview_members: false,
    }
}

fn invite(token: String, tag: [u8; 32]) -> Invite {
    Invite {
        id: InviteId([0x5a; 16]),
        group_id: GroupId([1; 16]),
        creator_id: UserId([2; 16]),
        created_at: 1_800_000_000,
        expires_at: EXPIRES_AT,
        max_uses: Some(50),
        uses: 12,
        revoked: false,
        epoch: 0,
        tag,
        token,
        parent_id: None,
        depth: 0,
        stage: Default::default(),
        stage_changed_at: 0,
        stage_reset_at: 0,
    }
}

fn facts<'a>(g: &'a Group, i: &'a Invite, members: u32, pending: u32) -> Facts<'a> {
    Facts {
        now: 1_800_100_000,
        invite: Some(i),
        tag_matches: true,
        token_epoch: 0,
        group: g,
        members,
        pending,
        is_member: false,
        has_pending_request: false,
        is_blocked: false,
    }
}

fn bench_join(c: &mut Criterion) {
    let key = signing_key();
    let text = signed_token(&key);
    let inv = invite(text, [3; 32]);
    let grp = group(200);
    let grant = facts(&grp, &inv, 137, 4);
    let full = facts(&grp, &inv, 190, 10);
    assert_eq!(join::decide(&grant), Ok(Admission::Grant));
    assert_eq!(join::decide(&full), Err(Refusal::GroupFull));

    let mut g = c.benchmark_group("join/decide");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("grant", |b| b.iter(|| join::decide(black_box(&grant))));
    g.bench_function("refuse_group_full", |b| {
        b.iter(|| join::decide(black_box(&full)))
    });
    g.finish();
}

/// Risk scoring of one join attempt: the cost the anti-abuse layer adds
/// to every join (scoring only; the bucket upkeep is in the load harness's
/// A/B run).
fn bench_risk(c: &mut Criterion) {
    use qrgate::domain::risk::{assess, escalate, gate, Bucket, Mode, Policy, Signals, Stage};
    let p = Policy::default();
    let mut window = Bucket {
        attempts: 120,
        joins: 80,
        new_accounts: 50,
        removed: 3,
        flagged: 12,
        ..Bucket::default()
    };
    window.refuse("group_full");
    window.refuse("already_member");
    let s = Signals {
        account_age_seconds: 3_600,
        user_recent_joins: 3,
        device_accounts: 1,
        invite_last_minute: 40,
        invite_window: window.clone(),
    };
    let mut g = c.benchmark_group("risk");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("assess", |b| {
        b.iter(|| assess(black_box(&s), black_box(&p)))
    });
    g.bench_function("assess_escalate_gate", |b| {
        b.iter(|| {
            let a = assess(black_box(&s), &p);
            let stage = escalate(Stage::Open, window.flagged, &p);
            gate(Mode::Enforce, stage, a.flagged(&p), false)
        })
    });
    g.bench_function("window_sum_10_minutes", |b| {
        b.iter(|| {
            let mut sum = Bucket::default();
            for _ in 0..10 {
                sum.add(black_box(&window));
            }
            sum
        })
    });
    g.finish();
}

fn bench_qr(c: &mut Criterion) {
    let key = signing_key();
    let url = format!("http://127.0.0.1:8080/j/{}", signed_token(&key));
    let card = Card {
        title: "徒步小组 Hikers",
        subtitle: "每周六早上八点在山脚集合。Saturdays at 8, rain or shine.",
        footer: "该二维码7天内(12月13日前)有效",
        background: [30, 90, 200],
        avatar: None,
    };
    // Fail loudly before measuring if a renderer refuses the fixture.
    let checks = [
        qr::render_png(&url, 512).err(),
        qr::render_svg(&url, 512).err(),
        card::render(&url, &card).err(),
    ];
    if let Some(e) = checks.into_iter().flatten().next() {
        panic!("QR fixture does not render: {e}");
    }

    let mut g = c.benchmark_group("qr");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    g.bench_function("png_512", |b| {
        b.iter(|| qr::render_png(black_box(&url), black_box(512)))
    });
    g.bench_function("svg_512", |b| {
        b.iter(|| qr::render_svg(black_box(&url), black_box(512)))
    });
    g.bench_function("card", |b| {
        b.iter(|| card::render(black_box(&url), black_box(&card)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_token, bench_join, bench_risk, bench_qr
}
criterion_main!(benches);
