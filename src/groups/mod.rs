//! Group actors and the directory that activates and passivates them.
pub mod actor;
pub mod directory;

pub use actor::Caller;
pub use directory::{Directory, Shared};
