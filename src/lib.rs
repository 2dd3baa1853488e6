//! qrgate: QR invitations, the join workflow, wallets, red packets and scan codes.
//!
//! Layout: `domain` holds the pure rules; `groups` the actors that own state;
//! `storage` the only module that knows sled; `push` the outbox consumer and
//! WebSocket hub; `http` the thin gateway; `startup` wires them together.

pub mod accounts;
pub mod admin_cli;
pub mod avatar;
pub mod backup;
pub mod card;
pub mod clock;
pub mod codes;
pub mod config;
pub mod domain;
pub mod error;
pub mod feeds;
pub mod groups;
pub mod http;
pub mod i18n;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod push;
pub mod qr;
pub mod registry;
pub mod seed;
pub mod startup;
pub mod storage;
pub mod wallets;
pub mod webhooks;
