mod access;
mod crash;
mod errors;
mod flow;
mod helpers;
mod ops;
mod qr;
mod ws;
