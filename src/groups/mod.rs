//! Group actors and the directory that activates and passivates them.
pub mod abuse;
pub mod actor;
pub mod analytics;
pub mod directory;
pub mod signals;

pub use actor::Caller;
pub use directory::{Directory, Shared};
