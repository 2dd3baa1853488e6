//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http;

#[derive(OpenApi)]
#[openapi(
    info(title = "qrgate", description = "QR invitations and the join workflow behind a scan; wallets kept as a double-entry ledger; red packets; scan codes. Errors are RFC 7807 problem+json with a stable `code`."),
    paths(
        http::ops::healthz, http::ops::metrics, http::ops::openapi,
        http::users::create_user, http::users::keys,
        http::groups::create_group, http::groups::get_group, http::groups::update_group,
        http::groups::members, http::groups::set_admin, http::groups::unset_admin,
        http::groups::requests, http::groups::approve, http::groups::reject,
        http::groups::block, http::groups::ban, http::groups::unban,
        http::invites::create_invite, http::invites::get_invite, http::invites::revoke_invite,
        http::invites::qr_png, http::invites::qr_svg, http::invites::card_png,
        http::invites::join, http::ws::ws,
        http::wallets::wallet, http::wallets::entries, http::wallets::earn,
        http::wallets::ledger_check,
        http::payouts::link, http::payouts::set_auto_payout, http::payouts::create_payout, http::payouts::list_payouts,
        http::payouts::get_payout, http::payouts::provider_notify, http::payouts::admin_payouts,
        http::payouts::large_transactions, http::payouts::set_kyc, http::payouts::reconcile, http::payouts::alerts,
        http::payouts::link_status, http::payouts::reconciliation,
        http::packets::create_packet, http::packets::get_packet, http::packets::qr_png,
        http::packets::claim, http::packets::blacklist_add, http::packets::blacklist_remove,
        http::packets::blacklist_list,
        http::codes::create_code, http::codes::get_code, http::codes::revoke_code,
        http::codes::resolve,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
