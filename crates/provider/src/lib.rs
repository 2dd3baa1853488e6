//! Payment-provider integration: WeChat Pay API v3 merchant transfers
//! (商家转账, `/v3/fund-app/mch-transfer/transfer-bills`).
//!
//! - [`adapter`]: the [`adapter::PayoutProvider`] trait the server uses,
//!   implemented by the client.
//! - [`money`]: exact yuan string <-> integer fen conversion.
//! - [`sign`]: SHA256-with-RSA request (`Authorization`) and response /
//!   notification (`Wechatpay-*` headers) signatures, RSA key helpers, nonces.
//! - [`notify`]: the AES-256-GCM encrypted `MCHTRANSFER.BILL.FINISHED`
//!   notification.
//! - [`bill`]: the backtick-prefixed daily transfer bill.
//! - [`wire`]: the requests and answers of the transfer API and their limits.
//! - [`client`]: the merchant-side HTTP adapter (OAuth, transfers, queries,
//!   bills, notification checks).
//!
//! Each module has its own error enum; [`ProviderError`] wraps them all for
//! callers that want a single type (`?` converts).
//!
//! Typical merchant-side handling of a notification:
//!
//! 1. [`sign::verify_response`] over the raw body with the `Wechatpay-*`
//!    headers and the provider's public key (chosen by `Wechatpay-Serial`);
//! 2. [`notify::parse_and_decrypt`] with the APIv3 key;
//! 3. apply the final [`notify::TransferState`] idempotently, keyed by
//!    `out_bill_no`.

pub mod adapter;
pub mod bill;
pub mod client;
pub mod jsapi;
pub mod money;
pub mod notify;
mod reply;
pub mod sign;
pub mod tls;
pub mod wire;

use thiserror::Error;

pub use bill::{parse_bill, write_bill, Bill, BillError, BillRow, BillSummary};
pub use money::{format_yuan, parse_yuan, MoneyError};
pub use notify::{
    decrypt_resource, encrypt_resource, parse_and_decrypt, Envelope, NotifyError, Resource,
    TransferResult, TransferState,
};
pub use sign::{
    build_authorization, parse_authorization, sign_response, verify_request, verify_response,
    AuthHeader, SignError,
};

/// Any error of the provider module.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// See [`MoneyError`].
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// See [`SignError`].
    #[error(transparent)]
    Sign(#[from] SignError),
    /// See [`NotifyError`].
    #[error(transparent)]
    Notify(#[from] NotifyError),
    /// See [`BillError`].
    #[error(transparent)]
    Bill(#[from] BillError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole merchant-side flow: the simulator builds and signs a
    /// notification, the merchant verifies and decrypts it.
    #[test]
    fn notification_end_to_end() -> Result<(), ProviderError> {
        let (private, public) = sign::tests::test_keys();
        let api_v3_key = notify::api_v3_key_from_str("0123456789abcdefghijklmnopqrstuv")?;
        let result = TransferResult {
            mch_id: Some("1900000001".into()),
            mchid: None,
            out_bill_no: "T1".into(),
            transfer_bill_no: "P1".into(),
            state: TransferState::Success,
            amount: parse_yuan("0.10")?,
            openid: "o-1".into(),
            fail_reason: None,
            create_time: None,
            update_time: "2024-01-05T10:00:00+08:00".into(),
        };
        let body = notify::build_notification(
            &api_v3_key,
            "EV-1",
            "2024-01-05T10:00:01+08:00",
            "done",
            &result,
        )?;
        let now = 1_704_420_001;
        let headers = sign::sign_response_headers(private, "SERIAL", now, body.as_bytes())?;
        verify_response(
            public,
            &headers.timestamp,
            &headers.nonce,
            body.as_bytes(),
            &headers.signature,
            now + 5,
            sign::DEFAULT_MAX_SKEW_SECS,
        )?;
        let (_, got) = parse_and_decrypt(&api_v3_key, body.as_bytes())?;
        assert_eq!(got, result);
        assert_eq!(format_yuan(got.amount), "0.10");

        // Tampered body: signature check fails with a typed error.
        let tampered = body.replacen("EV-1", "EV-2", 1);
        let err = verify_response(
            public,
            &headers.timestamp,
            &headers.nonce,
            tampered.as_bytes(),
            &headers.signature,
            now,
            300,
        )
        .map_err(ProviderError::from);
        assert!(matches!(
            err,
            Err(ProviderError::Sign(SignError::BadSignature))
        ));
        Ok(())
    }
}
