//! One integration-test binary (faster to link): each module drives the real
//! `qrgate` binary over HTTP/WebSocket on an ephemeral port with a temporary data dir.
mod api;
