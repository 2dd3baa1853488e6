//! Domain rules as plain types and functions: no actors, no I/O.
pub mod books;
pub mod challenge;
pub mod code;
pub mod events;
pub mod forward;
pub mod group;
pub mod ids;
pub mod join;
pub mod ledger;
pub mod packet;
pub mod payout;
pub mod placement;
pub mod reconcile;
pub mod risk;
pub mod roster;
pub mod session;
pub mod token;
