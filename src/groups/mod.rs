//! Group actors and the directory that activates and passivates them.
//!
//! - `actor.rs`: the actor's state, activation, timers and reads;
//! - `invites.rs`: creating and revoking invitations;
//! - `decisions.rs`: approvals, blocks, admins, settings and bans;
//! - `join.rs`: a join and the answer to its challenge;
//! - `moderation.rs`: lineage, analytics, resets, burns and removals;
//! - `analytics.rs`, `signals.rs`: the per-minute counts and the user-level
//!   risk signals a join reads;
//! - `shared.rs`: what every group actor needs from the process;
//! - `directory.rs`: finding, creating and sweeping groups.
pub mod actor;
pub mod analytics;
pub mod decisions;
pub mod directory;
pub mod invites;
pub mod join;
pub mod moderation;
pub mod shared;
pub mod signals;

pub use actor::Caller;
pub use directory::Directory;
pub use shared::Shared;

#[cfg(test)]
mod tests;
