//! The seam between the server and a payment provider's API: what the
//! payout job, the account link and reconciliation need, whatever protocol
//! carries it.
//!
//! [`ProviderClient`] implements it for WeChat Pay's merchant transfer API
//! (商家转账, `transfer-bills`), the only one merchants opened after
//! 2025-01-15 get. The legacy enterprise payment API (企业付款到零钱: v2
//! XML, `partner_trade_no`, `check_name`, MD5 signatures, a client
//! certificate) would be a second implementation; it is not built.

use std::future::Future;
use std::pin::Pin;

use crate::client::{
    ClientError, NotifyHeaders, OAuthTokens, ProviderClient, TransferRequest, TransferStatus,
};
use crate::jsapi::JsapiConfig;
use crate::notify::TransferResult;

/// A call to the provider (not `Send`: await it on the actix runtime).
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + 'a>>;

/// A payment provider as the server uses it.
pub trait PayoutProvider: Send + Sync {
    /// The remark the user sees on a transfer.
    fn remark(&self) -> &str;
    /// Creates (or finds, with the same number and fields) a transfer.
    fn create_transfer<'a>(&'a self, t: &'a TransferRequest) -> Call<'a, TransferStatus>;
    /// A transfer by our number; `None` when the provider has none.
    fn query_transfer<'a>(&'a self, out_bill_no: &'a str) -> Call<'a, Option<TransferStatus>>;
    /// Asks to cancel a transfer the user has not confirmed.
    fn cancel_transfer<'a>(&'a self, out_bill_no: &'a str) -> Call<'a, TransferStatus>;
    /// Checks and opens a transfer notification.
    fn verify_notification(
        &self,
        h: &NotifyHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<TransferResult, ClientError>;
    /// Where a browser authorizes the account link.
    fn authorize_url(&self, redirect_uri: &str, state: &str) -> String;
    /// Exchanges an OAuth code for tokens.
    fn exchange_code<'a>(&'a self, code: &'a str) -> Call<'a, OAuthTokens>;
    /// Refreshes an access token.
    fn refresh<'a>(&'a self, refresh_token: &'a str) -> Call<'a, OAuthTokens>;
    /// The daily bill of `date`, as text.
    fn download_bill(&self, date: chrono::NaiveDate) -> Call<'_, String>;
    /// The JS-SDK configuration for a page at `url` that lets the user
    /// confirm a transfer in WeChat's browser.
    fn jsapi_config<'a>(&'a self, url: &'a str) -> Call<'a, JsapiConfig>;
}

impl PayoutProvider for ProviderClient {
    fn remark(&self) -> &str {
        ProviderClient::remark(self)
    }
    fn create_transfer<'a>(&'a self, t: &'a TransferRequest) -> Call<'a, TransferStatus> {
        Box::pin(ProviderClient::create_transfer(self, t))
    }
    fn query_transfer<'a>(&'a self, out_bill_no: &'a str) -> Call<'a, Option<TransferStatus>> {
        Box::pin(ProviderClient::query_transfer(self, out_bill_no))
    }
    fn cancel_transfer<'a>(&'a self, out_bill_no: &'a str) -> Call<'a, TransferStatus> {
        Box::pin(ProviderClient::cancel_transfer(self, out_bill_no))
    }
    fn verify_notification(
        &self,
        h: &NotifyHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<TransferResult, ClientError> {
        ProviderClient::verify_notification(self, h, body, now)
    }
    fn authorize_url(&self, redirect_uri: &str, state: &str) -> String {
        ProviderClient::authorize_url(self, redirect_uri, state)
    }
    fn exchange_code<'a>(&'a self, code: &'a str) -> Call<'a, OAuthTokens> {
        Box::pin(ProviderClient::exchange_code(self, code))
    }
    fn refresh<'a>(&'a self, refresh_token: &'a str) -> Call<'a, OAuthTokens> {
        Box::pin(ProviderClient::refresh(self, refresh_token))
    }
    fn download_bill(&self, date: chrono::NaiveDate) -> Call<'_, String> {
        Box::pin(ProviderClient::download_bill(self, date))
    }
    fn jsapi_config<'a>(&'a self, url: &'a str) -> Call<'a, JsapiConfig> {
        Box::pin(ProviderClient::jsapi_config(self, url))
    }
}
