//! The WeChat JS-SDK configuration a web page needs before it may call
//! `requestMerchantTransfer` (the user's confirmation of a transfer, in
//! WeChat's browser): the official account's `jsapi_ticket`, and the
//! signature of the page's URL under it.
//!
//! ```text
//! POST /cgi-bin/stable_token {"grant_type":"client_credential","appid","secret"}
//! 200 {"access_token":"..","expires_in":7200}   | {"errcode":40125,"errmsg":".."}
//! GET  /cgi-bin/ticket/getticket?access_token=..&type=jsapi
//! 200 {"errcode":0,"errmsg":"ok","ticket":"..","expires_in":7200}
//! ```
//!
//! `stable_token` (not `token`) so that fetching one does not invalidate
//! the access token the operator's other systems hold for the same
//! account. The page then calls
//! `wx.config({appId, timestamp, nonceStr, signature, jsApiList: ["requestMerchantTransfer"]})`.

use serde::Serialize;
use sha1::{Digest, Sha1};

/// What `wx.config` takes (besides `jsApiList`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsapiConfig {
    #[serde(rename = "appId")]
    pub app_id: String,
    pub timestamp: i64,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    pub signature: String,
}

/// The JS-SDK signature: SHA-1 (hex) of
/// `jsapi_ticket=T&noncestr=N&timestamp=TS&url=URL`, the URL being the
/// page's own, without its `#` fragment.
pub fn signature(ticket: &str, nonce_str: &str, timestamp: i64, url: &str) -> String {
    let url = url.split('#').next().unwrap_or(url);
    let text =
        format!("jsapi_ticket={ticket}&noncestr={nonce_str}&timestamp={timestamp}&url={url}");
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of WeChat's JS-SDK documentation (附录1).
    #[test]
    fn the_documented_example_signs_alike() {
        let s = signature(
            "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
            "Wm3WZYTPz0wzccnW",
            1414587457,
            "http://mp.weixin.qq.com?params=value#fragment",
        );
        assert_eq!(s, "0f9de62fce790f9a083d5c99e95740ceb90c27ed");
    }
}
