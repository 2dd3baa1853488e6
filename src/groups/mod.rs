//! Group actors and the directory that activates and passivates them.
//!
//! - `actor.rs`: the actor's state, its reads, invitations and the
//!   moderators' decisions on requests, blocks, admins and settings;
//! - `join.rs`: a join and the answer to its challenge;
//! - `moderation.rs`: lineage, analytics, resets, burns and removals;
//! - `analytics.rs`, `signals.rs`: the per-minute counts and the user-level
//!   risk signals a join reads;
//! - `shared.rs`: what every group actor needs from the process;
//! - `directory.rs`: finding, creating and sweeping groups.
pub mod actor;
pub mod analytics;
pub mod directory;
pub mod join;
pub mod moderation;
pub mod shared;
pub mod signals;

pub use actor::Caller;
pub use directory::Directory;
pub use shared::Shared;
