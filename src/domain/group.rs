//! Groups, members, invitations and join requests: the plain data the
//! GroupActor owns, and the newtypes that validate client input on the way in.

use serde::{Deserialize, Serialize};

use super::ids::{GroupId, InviteId, RequestId, UserId};
use super::risk::{Reason, Stage};

/// Deepest chain of re-shared invitations (a child of a child of ...).
pub const MAX_INVITE_DEPTH: u8 = 16;

pub const MAX_TTL_SECONDS: i64 = 7 * 24 * 3600;
pub const DEFAULT_TTL_SECONDS: i64 = MAX_TTL_SECONDS;
pub const MAX_USES_LIMIT: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupStatus {
    Active,
    Banned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn moderates(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub description: String,
    pub owner_id: UserId,
    pub member_limit: u32,
    pub approval_required: bool,
    pub status: GroupStatus,
    /// Bumped by a ban: tokens carrying an older epoch are burned for good.
    pub epoch: u32,
    pub ban_reason: Option<String>,
    pub created_at: i64,
    /// Owner's override of the configured per-group join rate.
    pub join_rate_per_minute: Option<u32>,
    /// The group's avatar, if one was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<AvatarRef>,
    /// The join page shows the initials of a few members (the owner's
    /// choice: an invitation on a poster is public).
    #[serde(default)]
    pub preview_members: bool,
}

/// What a group record keeps of its avatar (stored apart, in chunks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarRef {
    /// The first 16 hex digits of the JPEG's blake3 hash (also its version).
    pub hash: String,
    pub len: u32,
    pub chunks: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: UserId,
    pub role: Role,
    pub joined_at: i64,
    /// The invitation the member came through, and who created it (lineage).
    pub via_invite: Option<InviteId>,
    pub invited_by: Option<UserId>,
    /// The join's risk assessment, when it scored or was challenged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<JoinRisk>,
}

/// What the risk scoring said about a join, kept with the membership (or
/// request) for the group's moderators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinRisk {
    pub score: u32,
    pub reasons: Vec<Reason>,
    /// The join went through a solved challenge.
    #[serde(default)]
    pub challenged: bool,
    /// The joiner's account was new.
    #[serde(default)]
    pub new_account: bool,
}

/// How a membership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Departure {
    /// Removed by a moderator or an operator.
    Removed,
    Blocked,
    /// The member left.
    Left,
}

/// A membership that ended: kept so the lineage of who came through which
/// invitation survives removals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FormerMember {
    pub member: Member,
    pub left_at: i64,
    pub how: Departure,
    pub by: Option<UserId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invite {
    pub id: InviteId,
    pub group_id: GroupId,
    pub creator_id: UserId,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
    pub epoch: u32,
    /// Keyed blake3 digest of the issued token (see `token::Parsed::tag`).
    pub tag: [u8; 32],
    /// The token itself, so its QR code can be rendered again.
    pub token: String,
    /// The invitation this one re-shares (lineage), and how deep it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<InviteId>,
    #[serde(default)]
    pub depth: u8,
    /// Step-up stage, and when it last changed (set or reset).
    #[serde(default)]
    pub stage: Stage,
    #[serde(default)]
    pub stage_changed_at: i64,
    /// When a moderator last reset the stage: flagged attempts before it
    /// no longer count.
    #[serde(default)]
    pub stage_reset_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: RequestId,
    pub user_id: UserId,
    pub invite_id: InviteId,
    pub invited_by: UserId,
    pub created_at: i64,
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<JoinRisk>,
}

// ---------- invitation caps ----------

/// Why one more invitation may not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteCap {
    /// The group stores as many as it may (revoked and expired included).
    Stored,
    /// The creator made as many as they may within the hour.
    Rate { retry_after_secs: u64 },
}

/// Whether one more invitation may be made: the group's stored ones
/// (revoked and expired count: a create-and-revoke loop fills memory as
/// surely as live ones) under `max_stored`, and those its creator made in
/// the last hour (`creator_made`: their creation times) under `per_hour`.
pub fn may_create_invite(
    stored: usize,
    max_stored: usize,
    creator_made: &[i64],
    per_hour: u32,
    now: i64,
) -> Result<(), InviteCap> {
    if stored >= max_stored {
        return Err(InviteCap::Stored);
    }
    let recent: Vec<i64> = creator_made
        .iter()
        .copied()
        .filter(|t| *t > now - 3600)
        .collect();
    if recent.len() >= per_hour as usize {
        let oldest = recent.iter().min().copied().unwrap_or(now);
        return Err(InviteCap::Rate {
            retry_after_secs: u64::try_from(oldest + 3600 - now).unwrap_or(1).max(1),
        });
    }
    Ok(())
}

// ---------- validated input ----------

/// Whether `c` is an invisible Unicode format character (general category
/// Cf: bidi overrides and isolates, zero-width spaces, word joiners, ...),
/// which text shown to other people must not carry: it can reorder or hide
/// what they read. Zero-width joiners and non-joiners stay allowed (emoji
/// sequences and several scripts need them), as do the tag characters of
/// emoji subdivision flags.
pub fn hidden_format_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.general_category() == GeneralCategory::Format
        && !matches!(c, '\u{200C}' | '\u{200D}' | '\u{E0020}'..='\u{E007F}')
}

/// Why text shown to others is refused, if it is: control characters
/// (other than a newline) and hidden format characters.
pub fn refuse_hidden(field: &str, t: &str) -> Result<(), String> {
    if t.chars().any(|c| c.is_control() && c != '\n') {
        return Err(format!("`{field}` must not contain control characters"));
    }
    if let Some(c) = t.chars().find(|c| hidden_format_char(*c)) {
        return Err(format!(
            "`{field}` must not contain invisible formatting characters such as bidi overrides (found U+{:04X})",
            c as u32
        ));
    }
    Ok(())
}

fn clean_text(field: &str, s: &str, min: usize, max: usize) -> Result<String, String> {
    let t = s.trim();
    let n = t.chars().count();
    if n < min || n > max {
        return Err(format!(
            "`{field}` must be {min} to {max} characters (got {n})"
        ));
    }
    refuse_hidden(field, t)?;
    Ok(t.to_string())
}

macro_rules! text_field {
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Trimmed; refused outside its length or with control characters.
            pub fn parse(s: &str) -> Result<Self, String> {
                clean_text($field, s, $min, $max).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }
    };
}

text_field!(
    /// A group's name: 1 to 64 characters.
    GroupName, "name", 1, 64
);
text_field!(
    /// A group's description: at most 280 characters.
    Description, "description", 0, 280
);
text_field!(
    /// A user's display name: 1 to 64 characters.
    UserName, "name", 1, 64
);
text_field!(
    /// Why the operator banned a group: at most 280 characters.
    BanReason, "reason", 0, 280
);

/// The sizes a group may have (`member_limit`).
pub const MEMBER_TIERS: [u32; 3] = [100, 200, 500];

/// A group's size, one of [`MEMBER_TIERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLimit(u32);

impl MemberLimit {
    /// `None` is the smallest tier.
    pub fn parse(n: Option<u32>) -> Result<Self, String> {
        match n.unwrap_or(MEMBER_TIERS[0]) {
            l if MEMBER_TIERS.contains(&l) => Ok(MemberLimit(l)),
            other => Err(format!(
                "`member_limit` must be 100, 200 or 500 (the group tiers); got {other}"
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Any size, for unit tests that need a small group.
    #[cfg(test)]
    pub fn unchecked(n: u32) -> Self {
        MemberLimit(n)
    }
}

pub fn parse_ttl(ttl: Option<i64>) -> Result<i64, String> {
    match ttl.unwrap_or(DEFAULT_TTL_SECONDS) {
        t if (1..=MAX_TTL_SECONDS).contains(&t) => Ok(t),
        t => Err(format!(
            "`ttl_seconds` must be between 1 and {MAX_TTL_SECONDS} (7 days, the maximum validity of an invitation); got {t}"
        )),
    }
}

pub fn parse_max_uses(n: Option<u32>) -> Result<Option<u32>, String> {
    match n {
        None => Ok(None),
        Some(u) if (1..=MAX_USES_LIMIT).contains(&u) => Ok(Some(u)),
        Some(u) => Err(format!(
            "`max_uses` must be between 1 and {MAX_USES_LIMIT}; got {u}"
        )),
    }
}

/// An active group of 100 with defaults, for unit tests.
#[cfg(test)]
pub fn test_group(id: GroupId, owner: UserId) -> Group {
    Group {
        id,
        name: "g".into(),
        description: String::new(),
        owner_id: owner,
        member_limit: 100,
        approval_required: false,
        status: GroupStatus::Active,
        epoch: 0,
        ban_reason: None,
        created_at: 0,
        join_rate_per_minute: None,
        avatar: None,
        preview_members: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_ttl() {
        assert_eq!(MemberLimit::parse(None).map(MemberLimit::get), Ok(100));
        assert_eq!(MemberLimit::parse(Some(500)).map(MemberLimit::get), Ok(500));
        assert!(MemberLimit::parse(Some(101)).is_err());
        assert_eq!(parse_ttl(None), Ok(604_800));
        assert_eq!(parse_ttl(Some(604_800)), Ok(604_800));
        assert!(parse_ttl(Some(604_801)).unwrap_err().contains("7 days"));
        assert!(parse_ttl(Some(0)).is_err());
        assert!(parse_ttl(Some(-5)).is_err());
        assert_eq!(parse_max_uses(Some(1)), Ok(Some(1)));
        assert!(parse_max_uses(Some(0)).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(GroupName::parse("  Hikers  ").unwrap().as_str(), "Hikers");
        assert!(GroupName::parse("   ").is_err());
        assert!(GroupName::parse(&"x".repeat(65)).is_err());
        assert!(GroupName::parse(&"登".repeat(64)).is_ok());
        assert!(GroupName::parse("a\u{0}b").is_err());
        // Invitation caps: stored ones of the group, the creator's per hour.
        assert_eq!(
            may_create_invite(5, 5, &[], 10, 100),
            Err(InviteCap::Stored)
        );
        assert_eq!(
            may_create_invite(3, 5, &[4000, 4100, 10], 2, 5000),
            Err(InviteCap::Rate {
                retry_after_secs: 2600
            }),
            "two in the hour; the one from t=10 is older"
        );
        assert_eq!(may_create_invite(3, 5, &[4000, 10], 2, 5000), Ok(()));
        // Bidi overrides and isolates, zero-width spaces: refused.
        for hidden in [
            "\u{202E}", "\u{2066}", "\u{200F}", "\u{200B}", "\u{FEFF}", "\u{061C}",
        ] {
            let e = GroupName::parse(&format!("abc{hidden}def")).unwrap_err();
            assert!(e.contains("invisible"), "{e}");
            assert!(UserName::parse(&format!("x{hidden}")).is_err());
            assert!(Description::parse(&format!("x{hidden}")).is_err());
        }
        // Emoji sequences (ZWJ), Persian (ZWNJ) and subdivision flags (tags) stay.
        for fine in [
            "👨\u{200D}👩\u{200D}👧 family",
            "می\u{200C}خواهم",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            "徒步小组 Hikers",
        ] {
            assert!(GroupName::parse(fine).is_ok(), "{fine:?}");
        }
        assert!(Description::parse("").is_ok());
        assert!(BanReason::parse(&"x".repeat(281))
            .unwrap_err()
            .contains("`reason`"));
    }
}
