//! Anti-abuse rules for joins, as plain functions:
//!
//! - [`assess`]: the risk score of one join attempt from the signals the
//!   server has (account age, the user's join rate, the invitation's recent
//!   pattern, a device id shared by many accounts), with its reasons;
//! - [`escalate`]: the step-up stage of one invitation from the flagged
//!   attempts through it in the recent window (open -> challenge ->
//!   approval -> paused; it never steps down by itself, an admin resets it);
//! - [`gate`]: what a join through an invitation needs now (nothing, a
//!   solved challenge, an approval, or it is refused because the invitation
//!   is paused);
//! - [`Bucket`]: the per-minute analytics of an invitation or a group, from
//!   which the invitation's signals are summed.
//!
//! The GroupActor gathers the facts, calls these, and records the outcome.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the server does with risk scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No scoring at all.
    Off,
    /// Score, record and count, but never challenge, step up or pause.
    Observe,
    /// Score and act on it.
    #[default]
    Enforce,
}

/// Points each signal adds to a join's score (the score is capped at 100).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub new_account: u32,
    pub user_join_burst: u32,
    pub invite_burst: u32,
    pub invite_failures: u32,
    pub invite_new_accounts: u32,
    pub invite_removed: u32,
    pub shared_device: u32,
    pub user_claim_burst: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            new_account: 20,
            user_join_burst: 25,
            invite_burst: 20,
            invite_failures: 15,
            invite_new_accounts: 20,
            invite_removed: 25,
            shared_device: 30,
            user_claim_burst: 25,
        }
    }
}

/// The `[risk]` section of the configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub mode: Mode,
    /// Accounts younger than this are "new".
    pub new_account_seconds: i64,
    /// Joins by one user across all groups within `user_window_seconds`
    /// above which the user looks automated.
    pub user_window_seconds: i64,
    pub user_joins_threshold: u32,
    /// Join attempts through one invitation in the last minute above which
    /// it is being hammered.
    pub invite_attempts_per_minute: u32,
    /// The invitation's ratios below count only once this many attempts
    /// (or joins) were seen in the window.
    pub min_sample: u64,
    /// Share of refused attempts through the invitation (harvested links
    /// produce many refusals: expired tokens, full groups, blocked users).
    pub invite_failure_share: f64,
    /// Share of its recent joiners that were new accounts.
    pub invite_new_account_share: f64,
    /// Share of its recent joiners later removed or blocked.
    pub invite_removed_share: f64,
    /// Distinct accounts seen with one `X-Device-Id` above which the device
    /// is shared by an account farm.
    pub device_accounts_threshold: u32,
    /// Claims by one user across all packets within `user_window_seconds`
    /// above which the user looks automated.
    pub user_claims_threshold: u32,
    /// A claim on a campaign packet scoring this much or more must solve a
    /// challenge first (enforce mode). With the default weights a new
    /// account, a shared device or a claim burst each reach it; above 100
    /// no claim is ever asked.
    pub claim_challenge_score: u32,
    pub weights: Weights,
    /// A join scoring this much or more is flagged.
    pub flag_score: u32,
    /// The window (minutes) over which an invitation's signals and flagged
    /// attempts are summed.
    pub window_minutes: u32,
    /// Flagged attempts through one invitation within the window that move
    /// it to the challenge, approval and paused stages.
    pub challenge_after_flagged: u64,
    pub approval_after_flagged: u64,
    pub pause_after_flagged: u64,
    /// Group reputation: once a group saw this many attempts in the window
    /// and at least this share was flagged, it is listed for the operator
    /// and its members may create only `suspect_invites_per_hour`
    /// invitations an hour.
    pub reputation_min_attempts: u64,
    pub reputation_flagged_share: f64,
    pub suspect_invites_per_hour: u32,
    /// Per-minute analytics are kept this many days.
    pub analytics_retention_days: u32,
    pub challenge: ChallengePolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Enforce,
            new_account_seconds: 24 * 3600,
            user_window_seconds: 600,
            user_joins_threshold: 10,
            invite_attempts_per_minute: 30,
            min_sample: 10,
            invite_failure_share: 0.5,
            invite_new_account_share: 0.5,
            invite_removed_share: 0.2,
            device_accounts_threshold: 3,
            user_claims_threshold: 10,
            claim_challenge_score: 20,
            weights: Weights::default(),
            flag_score: 50,
            window_minutes: 10,
            challenge_after_flagged: 10,
            approval_after_flagged: 100,
            pause_after_flagged: 500,
            reputation_min_attempts: 50,
            reputation_flagged_share: 0.5,
            suspect_invites_per_hour: 5,
            analytics_retention_days: 30,
            challenge: ChallengePolicy::default(),
        }
    }
}

/// The human-verification challenge.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengePolicy {
    /// `pow` (built in) or `captcha` (an external provider, see `captcha`).
    pub kind: ChallengeKind,
    /// Proof of work: leading zero bits asked of SHA-256(id ":" solution).
    /// Each bit doubles the expected work: 16 bits is about 65k hashes
    /// (well under a second on a phone's browser), which a bot pays on
    /// every join.
    pub pow_bits: u8,
    /// How long a challenge may be answered.
    pub ttl_seconds: i64,
    /// An hCaptcha / reCAPTCHA / Turnstile compatible "siteverify" endpoint.
    pub captcha: Option<Captcha>,
}

impl Default for ChallengePolicy {
    fn default() -> Self {
        ChallengePolicy {
            kind: ChallengeKind::Pow,
            pow_bits: 16,
            ttl_seconds: 300,
            captcha: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeKind {
    Pow,
    Captcha,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Pow => "pow",
            ChallengeKind::Captcha => "captcha",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Captcha {
    /// POSTed `secret=..&response=..` (form encoded); answers JSON with a
    /// boolean `success`.
    pub verify_url: String,
    pub secret: String,
    /// Given to the client with the challenge, for the provider's widget.
    pub site_key: String,
}

impl Policy {
    /// Check the values an operator wrote.
    pub fn validate(&self) -> Result<(), String> {
        for (name, share) in [
            ("invite_failure_share", self.invite_failure_share),
            ("invite_new_account_share", self.invite_new_account_share),
            ("invite_removed_share", self.invite_removed_share),
            ("reputation_flagged_share", self.reputation_flagged_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("risk.{name} must be between 0 and 1"));
            }
        }
        if !(self.challenge_after_flagged <= self.approval_after_flagged
            && self.approval_after_flagged <= self.pause_after_flagged)
        {
            return Err(
                "risk: challenge_after_flagged <= approval_after_flagged <= pause_after_flagged"
                    .into(),
            );
        }
        if self.window_minutes == 0 || self.window_minutes > 60 {
            return Err("risk.window_minutes must be 1 to 60".into());
        }
        if self.challenge.pow_bits > 32 {
            return Err("risk.challenge.pow_bits must be at most 32".into());
        }
        if self.challenge.ttl_seconds < 5 {
            return Err("risk.challenge.ttl_seconds must be at least 5".into());
        }
        if self.challenge.kind == ChallengeKind::Captcha && self.challenge.captcha.is_none() {
            return Err("risk.challenge.kind = \"captcha\" needs [risk.challenge.captcha]".into());
        }
        if self.suspect_invites_per_hour == 0 {
            return Err("risk.suspect_invites_per_hour must be at least 1".into());
        }
        Ok(())
    }
}

/// Why a join scored what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NewAccount,
    UserJoinBurst,
    InviteBurst,
    InviteFailures,
    InviteNewAccounts,
    InviteRemoved,
    SharedDevice,
    /// Claims only: many claims by the user in the user window.
    UserClaimBurst,
}

impl Reason {
    /// The reasons a join can have (carried in a join challenge's id).
    const ALL: [Reason; 7] = [
        Reason::NewAccount,
        Reason::UserJoinBurst,
        Reason::InviteBurst,
        Reason::InviteFailures,
        Reason::InviteNewAccounts,
        Reason::InviteRemoved,
        Reason::SharedDevice,
    ];

    /// The reasons as a bit set (carried inside a challenge id).
    pub fn to_bits(reasons: &[Reason]) -> u8 {
        reasons.iter().fold(0, |acc, r| {
            acc | Reason::ALL
                .iter()
                .position(|x| x == r)
                .map_or(0, |i| 1u8 << i)
        })
    }

    pub fn from_bits(bits: u8) -> Vec<Reason> {
        Reason::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, r)| *r)
            .collect()
    }
}

/// What the server knows when a join attempt arrives.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub account_age_seconds: i64,
    /// Join attempts by this user across all groups in the user window,
    /// this one included.
    pub user_recent_joins: u32,
    /// Distinct accounts seen with the client's device id (0: none sent).
    pub device_accounts: u32,
    /// Attempts through the invitation in the current minute, this one included.
    pub invite_last_minute: u64,
    /// The invitation's window (see [`Bucket`]), before this attempt.
    pub invite_window: Bucket,
}

/// A join's score, 0 to 100, and the signals that raised it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    pub score: u32,
    pub reasons: Vec<Reason>,
}

impl Assessment {
    pub fn flagged(&self, p: &Policy) -> bool {
        self.score >= p.flag_score
    }
}

fn share(part: u64, whole: u64, min_sample: u64, above: f64) -> bool {
    whole >= min_sample.max(1) && part as f64 / whole as f64 > above
}

/// The score of the signals that fire (each `(fires, reason, points)`),
/// capped at 100, with their reasons.
fn sum(rules: impl IntoIterator<Item = (bool, Reason, u32)>) -> Assessment {
    let mut a = Assessment::default();
    for (hit, reason, points) in rules {
        if hit && points > 0 {
            a.score = a.score.saturating_add(points);
            a.reasons.push(reason);
        }
    }
    a.score = a.score.min(100);
    a
}

pub fn assess(s: &Signals, p: &Policy) -> Assessment {
    let w = &p.weights;
    let win = &s.invite_window;
    let joined = win.joins + win.requests;
    let rules = [
        (
            s.account_age_seconds < p.new_account_seconds,
            Reason::NewAccount,
            w.new_account,
        ),
        (
            s.user_recent_joins > p.user_joins_threshold,
            Reason::UserJoinBurst,
            w.user_join_burst,
        ),
        (
            s.invite_last_minute > u64::from(p.invite_attempts_per_minute),
            Reason::InviteBurst,
            w.invite_burst,
        ),
        (
            share(
                win.refused(),
                win.attempts,
                p.min_sample,
                p.invite_failure_share,
            ),
            Reason::InviteFailures,
            w.invite_failures,
        ),
        (
            share(
                win.new_accounts,
                joined,
                p.min_sample,
                p.invite_new_account_share,
            ),
            Reason::InviteNewAccounts,
            w.invite_new_accounts,
        ),
        (
            share(win.removed, joined, p.min_sample, p.invite_removed_share),
            Reason::InviteRemoved,
            w.invite_removed,
        ),
        (
            s.device_accounts > p.device_accounts_threshold,
            Reason::SharedDevice,
            w.shared_device,
        ),
    ];
    sum(rules)
}

/// What the server knows when a claim arrives.
#[derive(Debug, Clone, Default)]
pub struct ClaimSignals {
    pub account_age_seconds: i64,
    /// Claims by this user across all packets in the user window, this one
    /// included.
    pub user_recent_claims: u32,
    /// Distinct accounts seen with the client's device id (0: none sent).
    pub device_accounts: u32,
}

/// A claim's score, from the signals a farm of fresh accounts shows.
pub fn assess_claim(s: &ClaimSignals, p: &Policy) -> Assessment {
    let w = &p.weights;
    let rules = [
        (
            s.account_age_seconds < p.new_account_seconds,
            Reason::NewAccount,
            w.new_account,
        ),
        (
            s.user_recent_claims > p.user_claims_threshold,
            Reason::UserClaimBurst,
            w.user_claim_burst,
        ),
        (
            s.device_accounts > p.device_accounts_threshold,
            Reason::SharedDevice,
            w.shared_device,
        ),
    ];
    sum(rules)
}

/// Whether a claim so assessed must solve a challenge before it is paid,
/// should the packet be a campaign's (enforce mode only).
pub fn claim_needs_challenge(a: &Assessment, p: &Policy) -> bool {
    p.mode == Mode::Enforce && a.score >= p.claim_challenge_score
}

/// An invitation's step-up stage. Ordered: each stage asks more than the one before.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Only flagged joins are challenged.
    #[default]
    Open,
    /// Every join through the invitation must solve a challenge.
    Challenge,
    /// Every join must solve a challenge and then waits for a moderator.
    Approval,
    /// No join goes through until a moderator resets the invitation.
    Paused,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Open => "open",
            Stage::Challenge => "challenge",
            Stage::Approval => "approval",
            Stage::Paused => "paused",
        }
    }
}

/// The stage an invitation should be at with `flagged` attempts in the
/// window; never lower than `current`.
pub fn escalate(current: Stage, flagged: u64, p: &Policy) -> Stage {
    let by_count = if flagged >= p.pause_after_flagged {
        Stage::Paused
    } else if flagged >= p.approval_after_flagged {
        Stage::Approval
    } else if flagged >= p.challenge_after_flagged {
        Stage::Challenge
    } else {
        Stage::Open
    };
    current.max(by_count)
}

/// What a join through an invitation needs before it is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Admit as the group's rules say.
    Pass,
    /// Answer `challenge_required`.
    Challenge,
    /// Admit as a join request whatever the group's setting.
    Approval,
    /// Refuse: the invitation is paused.
    Paused,
}

/// `solved`: the attempt carries a challenge this server issued and the
/// caller solved.
pub fn gate(mode: Mode, stage: Stage, flagged: bool, solved: bool) -> Gate {
    if mode != Mode::Enforce {
        return Gate::Pass;
    }
    let wants_challenge = flagged || stage >= Stage::Challenge;
    match stage {
        Stage::Paused => Gate::Paused,
        _ if wants_challenge && !solved => Gate::Challenge,
        Stage::Approval => Gate::Approval,
        _ => Gate::Pass,
    }
}

/// Counts of one minute of one invitation (or one group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bucket {
    /// Tokens checked by a landing page (a scan that did not join yet).
    #[serde(default)]
    pub scans: u64,
    /// Join attempts that reached the group (`POST /v1/join`, challenge answers).
    #[serde(default)]
    pub attempts: u64,
    /// Memberships granted directly.
    #[serde(default)]
    pub joins: u64,
    /// Join requests queued for approval.
    #[serde(default)]
    pub requests: u64,
    /// Attempts whose score reached `flag_score`.
    #[serde(default)]
    pub flagged: u64,
    #[serde(default)]
    pub challenges_issued: u64,
    #[serde(default)]
    pub challenges_passed: u64,
    #[serde(default)]
    pub challenges_failed: u64,
    /// Joins and requests by new accounts.
    #[serde(default)]
    pub new_accounts: u64,
    /// Members who came through it and were later removed or blocked.
    #[serde(default)]
    pub removed: u64,
    /// Refused attempts by error code (`challenge_required` not included).
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
}

impl Bucket {
    pub fn add(&mut self, o: &Bucket) {
        self.scans += o.scans;
        self.attempts += o.attempts;
        self.joins += o.joins;
        self.requests += o.requests;
        self.flagged += o.flagged;
        self.challenges_issued += o.challenges_issued;
        self.challenges_passed += o.challenges_passed;
        self.challenges_failed += o.challenges_failed;
        self.new_accounts += o.new_accounts;
        self.removed += o.removed;
        for (k, v) in &o.refusals {
            *self.refusals.entry(k.clone()).or_default() += v;
        }
    }

    pub fn refused(&self) -> u64 {
        self.refusals.values().sum()
    }

    pub fn refuse(&mut self, code: &str) {
        *self.refusals.entry(code.to_string()).or_default() += 1;
    }

    pub fn is_empty(&self) -> bool {
        *self == Bucket::default()
    }
}

/// Whether a group's recent window makes it suspect.
pub fn suspect(window: &Bucket, p: &Policy) -> bool {
    window.attempts >= p.reputation_min_attempts.max(1)
        && window.flagged as f64 / window.attempts as f64 >= p.reputation_flagged_share
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_user() -> Signals {
        Signals {
            account_age_seconds: 90 * 24 * 3600,
            user_recent_joins: 1,
            device_accounts: 1,
            invite_last_minute: 1,
            invite_window: Bucket::default(),
        }
    }

    #[test]
    fn an_established_user_scores_zero() {
        let a = assess(&old_user(), &Policy::default());
        assert_eq!(a, Assessment::default());
        assert!(!a.flagged(&Policy::default()));
    }

    /// One row per signal: each raises the score by its weight, alone.
    #[test]
    fn each_signal_adds_its_weight() {
        let p = Policy::default();
        let w = &p.weights;
        type Tweak = fn(&mut Signals);
        let rows: Vec<(Tweak, Reason, u32)> = vec![
            (
                |s| s.account_age_seconds = 60,
                Reason::NewAccount,
                w.new_account,
            ),
            (
                |s| s.user_recent_joins = 11,
                Reason::UserJoinBurst,
                w.user_join_burst,
            ),
            (
                |s| s.invite_last_minute = 31,
                Reason::InviteBurst,
                w.invite_burst,
            ),
            (
                |s| {
                    s.invite_window.attempts = 10;
                    s.invite_window.refusals.insert("group_full".into(), 6);
                },
                Reason::InviteFailures,
                w.invite_failures,
            ),
            (
                |s| {
                    s.invite_window.joins = 10;
                    s.invite_window.new_accounts = 6;
                },
                Reason::InviteNewAccounts,
                w.invite_new_accounts,
            ),
            (
                |s| {
                    s.invite_window.joins = 10;
                    s.invite_window.removed = 3;
                },
                Reason::InviteRemoved,
                w.invite_removed,
            ),
            (
                |s| s.device_accounts = 4,
                Reason::SharedDevice,
                w.shared_device,
            ),
        ];
        for (tweak, reason, points) in rows {
            let mut s = old_user();
            tweak(&mut s);
            let a = assess(&s, &p);
            assert_eq!(a.reasons, vec![reason], "{reason:?}");
            assert_eq!(a.score, points, "{reason:?}");
        }
    }

    #[test]
    fn claims_from_fresh_shared_or_bursting_accounts_are_challenged() {
        let p = Policy::default();
        let settled = ClaimSignals {
            account_age_seconds: p.new_account_seconds,
            user_recent_claims: p.user_claims_threshold,
            device_accounts: p.device_accounts_threshold,
        };
        let a = assess_claim(&settled, &p);
        assert_eq!(a.score, 0);
        assert!(!claim_needs_challenge(&a, &p));
        for (tweak, reason) in [
            (
                (|s: &mut ClaimSignals| s.account_age_seconds -= 1) as fn(&mut ClaimSignals),
                Reason::NewAccount,
            ),
            (|s| s.user_recent_claims += 1, Reason::UserClaimBurst),
            (|s| s.device_accounts += 1, Reason::SharedDevice),
        ] {
            let mut s = settled.clone();
            tweak(&mut s);
            let a = assess_claim(&s, &p);
            assert_eq!(a.reasons, vec![reason]);
            assert!(claim_needs_challenge(&a, &p), "{reason:?}");
            for mode in [Mode::Observe, Mode::Off] {
                let quiet = Policy {
                    mode,
                    ..Policy::default()
                };
                assert!(!claim_needs_challenge(&a, &quiet), "{mode:?}");
            }
            let never = Policy {
                claim_challenge_score: 101,
                ..Policy::default()
            };
            assert!(!claim_needs_challenge(&a, &never));
        }
        // a claim reason is not a join reason: it stays out of a join challenge's bits
        assert_eq!(Reason::to_bits(&[Reason::UserClaimBurst]), 0);
    }

    #[test]
    fn thresholds_are_strict_and_ratios_need_a_sample() {
        let p = Policy::default();
        let mut s = old_user();
        s.user_recent_joins = 10;
        s.invite_last_minute = 30;
        s.device_accounts = 3;
        s.account_age_seconds = p.new_account_seconds;
        // 9 joins, all new and all removed: below the sample size
        s.invite_window.joins = 9;
        s.invite_window.new_accounts = 9;
        s.invite_window.removed = 9;
        assert_eq!(assess(&s, &p).score, 0);
        // exactly half new is not more than half
        s.invite_window.joins = 10;
        s.invite_window.new_accounts = 5;
        s.invite_window.removed = 2;
        assert_eq!(assess(&s, &p).score, 0);
    }

    #[test]
    fn a_bot_wave_is_flagged_and_the_score_is_capped() {
        let p = Policy::default();
        let s = Signals {
            account_age_seconds: 5,
            user_recent_joins: 50,
            device_accounts: 40,
            invite_last_minute: 300,
            invite_window: Bucket {
                attempts: 300,
                joins: 100,
                new_accounts: 100,
                removed: 50,
                refusals: [("group_full".to_string(), 200)].into(),
                ..Bucket::default()
            },
        };
        let a = assess(&s, &p);
        assert_eq!(a.score, 100);
        assert_eq!(a.reasons.len(), 7);
        assert!(a.flagged(&p));
        // fresh accounts bursting through one link are flagged even without the rest
        let s = Signals {
            account_age_seconds: 5,
            user_recent_joins: 1,
            device_accounts: 0,
            invite_last_minute: 40,
            invite_window: Bucket {
                attempts: 20,
                joins: 20,
                new_accounts: 20,
                ..Bucket::default()
            },
        };
        assert!(assess(&s, &p).flagged(&p));
    }

    #[test]
    fn reasons_round_trip_as_bits() {
        let all = Reason::ALL.to_vec();
        assert_eq!(Reason::from_bits(Reason::to_bits(&all)), all);
        let some = vec![Reason::NewAccount, Reason::SharedDevice];
        assert_eq!(Reason::to_bits(&some), 0b100_0001);
        assert_eq!(Reason::from_bits(Reason::to_bits(&some)), some);
        assert!(Reason::from_bits(0).is_empty());
    }

    #[test]
    fn stages_only_go_up() {
        let p = Policy::default();
        assert_eq!(escalate(Stage::Open, 0, &p), Stage::Open);
        assert_eq!(escalate(Stage::Open, 9, &p), Stage::Open);
        assert_eq!(escalate(Stage::Open, 10, &p), Stage::Challenge);
        assert_eq!(escalate(Stage::Open, 100, &p), Stage::Approval);
        assert_eq!(escalate(Stage::Challenge, 500, &p), Stage::Paused);
        assert_eq!(escalate(Stage::Approval, 0, &p), Stage::Approval);
        assert_eq!(escalate(Stage::Paused, 0, &p), Stage::Paused);
    }

    #[test]
    fn gate_table() {
        use Gate as G;
        use Stage as S;
        let rows = [
            // (stage, flagged, solved) -> gate
            ((S::Open, false, false), G::Pass),
            ((S::Open, true, false), G::Challenge),
            ((S::Open, true, true), G::Pass),
            ((S::Challenge, false, false), G::Challenge),
            ((S::Challenge, false, true), G::Pass),
            ((S::Approval, false, false), G::Challenge),
            ((S::Approval, true, true), G::Approval),
            ((S::Paused, false, true), G::Paused),
        ];
        for ((stage, flagged, solved), want) in rows {
            assert_eq!(
                gate(Mode::Enforce, stage, flagged, solved),
                want,
                "{stage:?} flagged={flagged} solved={solved}"
            );
            assert_eq!(gate(Mode::Observe, stage, flagged, solved), G::Pass);
            assert_eq!(gate(Mode::Off, stage, flagged, solved), G::Pass);
        }
    }

    #[test]
    fn buckets_add_and_suspect_groups() {
        let mut a = Bucket {
            attempts: 2,
            flagged: 1,
            ..Bucket::default()
        };
        a.refuse("blocked");
        let mut b = a.clone();
        b.refuse("blocked");
        b.refuse("group_full");
        a.add(&b);
        assert_eq!(a.attempts, 4);
        assert_eq!(a.refusals["blocked"], 3);
        assert_eq!(a.refused(), 4);
        let p = Policy::default();
        assert!(!suspect(&a, &p), "too few attempts");
        let w = Bucket {
            attempts: 60,
            flagged: 30,
            ..Bucket::default()
        };
        assert!(suspect(&w, &p));
        let w = Bucket {
            attempts: 60,
            flagged: 29,
            ..Bucket::default()
        };
        assert!(!suspect(&w, &p));
    }

    #[test]
    fn policy_validation() {
        assert!(Policy::default().validate().is_ok());
        let p = Policy {
            invite_failure_share: 1.5,
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        let p = Policy {
            approval_after_flagged: 5,
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        let mut p = Policy::default();
        p.challenge.kind = ChallengeKind::Captcha;
        assert!(p.validate().is_err());
    }
}
