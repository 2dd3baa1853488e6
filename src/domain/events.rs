//! Events appended to the outbox with the state change that caused them, and
//! fanned out after it is durable (WebSocket, counters).

use serde::{Deserialize, Serialize};

use super::ids::{GroupId, InviteId, PacketId, PayoutId, RequestId, UserId};
use super::payout::PayoutState;

/// What happened. Serialised with a `type` field, as pushed to WebSocket clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    MemberJoined {
        group_id: GroupId,
        user_id: UserId,
        via_invite: Option<InviteId>,
        /// Set when the membership came from an approved join request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approved_request: Option<RequestId>,
    },
    JoinRequested {
        group_id: GroupId,
        request_id: RequestId,
        user_id: UserId,
        via_invite: InviteId,
    },
    JoinApproved {
        group_id: GroupId,
        request_id: RequestId,
        user_id: UserId,
        /// None when an operator decided.
        decided_by: Option<UserId>,
    },
    JoinRejected {
        group_id: GroupId,
        request_id: RequestId,
        user_id: UserId,
        /// None when an operator decided.
        decided_by: Option<UserId>,
    },
    JoinRequestExpired {
        group_id: GroupId,
        request_id: RequestId,
        user_id: UserId,
    },
    /// The invitation a request came through was revoked (or its branch
    /// burned): the request is gone and its seat free.
    JoinRequestDropped {
        group_id: GroupId,
        request_id: RequestId,
        user_id: UserId,
        invite_id: InviteId,
    },
    InviteRevoked {
        group_id: GroupId,
        invite_id: InviteId,
    },
    MemberBlocked {
        group_id: GroupId,
        user_id: UserId,
    },
    /// A member was removed by a moderator or an operator, or left.
    MemberRemoved {
        group_id: GroupId,
        user_id: UserId,
        /// None when an operator removed them.
        by: Option<UserId>,
        left: bool,
    },
    /// An invitation's step-up stage changed (sent to the group's moderators).
    InviteStageChanged {
        group_id: GroupId,
        invite_id: InviteId,
        stage: super::risk::Stage,
        /// Flagged join attempts through it in the window.
        flagged: u64,
    },
    /// A group was listed for the operator: most of its recent joins were flagged.
    GroupFlagged {
        group_id: GroupId,
        attempts: u64,
        flagged: u64,
    },
    GroupBanned {
        group_id: GroupId,
        reason: String,
    },
    GroupUnbanned {
        group_id: GroupId,
    },
    /// The user's payout account changed to another one (sent to the user:
    /// if they did not do it, their session is someone else's too).
    LinkChanged {
        openid_hint: String,
    },
    /// A payout changed state (sent to its user).
    PayoutUpdated {
        payout_id: PayoutId,
        status: PayoutState,
        amount: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fail_reason: Option<String>,
        /// While `awaiting_confirmation`: what the app hands to WeChat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirm: Option<crate::domain::payout::Confirm>,
    },
    /// A share was claimed (sent to the claimant and the sender).
    PacketClaimed {
        packet_id: PacketId,
        user_id: UserId,
        amount: u64,
        /// Shares left after this one.
        left: u32,
        /// Referral bonus paid for this claim, and to whom.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        referrer: Option<UserId>,
        #[serde(default)]
        bonus: u64,
    },
    /// The last share was claimed (sent to the sender).
    PacketEmpty {
        packet_id: PacketId,
        claimed: u64,
    },
    /// The packet closed and what was left went back to the funder.
    PacketRefunded {
        packet_id: PacketId,
        amount: u64,
    },
    /// The packet's circuit breaker paused claims (sent to the sender).
    PacketPaused {
        packet_id: PacketId,
        retry_after_secs: u64,
    },
    /// A transfer or a day's payouts at or above
    /// `payouts.large_transaction_fen` (for the operator: webhooks only).
    LargeTransaction {
        user_id: UserId,
        /// `single_transfer` or `daily_total`.
        kind: String,
        amount: u64,
    },
    /// A payout has not ended `payouts.stuck_after_seconds` after it was
    /// made (for the operator: webhooks only; once per payout and start).
    PayoutStuck {
        payout_id: PayoutId,
        user_id: UserId,
        amount: u64,
        status: PayoutState,
    },
    /// A provider notification failed its signature or protocol check (for
    /// the operator: webhooks only; at most one a minute, the rest counted
    /// in `GET /v1/admin/alerts`).
    NotificationForged {
        peer: String,
        reason: String,
    },
}

/// An event and who receives it: the subscribers of its group topic and the
/// listed users directly (on their own connection, subscribed or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Outbox sequence number, assigned by storage when the event is written.
    pub seq: u64,
    pub at: i64,
    pub group: Option<GroupId>,
    pub users: Vec<UserId>,
    pub kind: EventKind,
}

impl Event {
    /// An event for the listed users only (no group topic).
    pub fn for_users(users: Vec<UserId>, at: i64, kind: EventKind) -> Self {
        Event {
            seq: 0,
            at,
            group: None,
            users,
            kind,
        }
    }

    pub fn for_group(group: GroupId, users: Vec<UserId>, at: i64, kind: EventKind) -> Self {
        Event {
            seq: 0,
            at,
            group: Some(group),
            users,
            kind,
        }
    }
}
