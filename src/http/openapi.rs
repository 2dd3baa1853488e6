//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http;

#[derive(OpenApi)]
#[openapi(
    info(title = "qrgate", description = "QR invitations and the join workflow behind a scan; wallets kept as a double-entry ledger; red packets; scan codes. Errors are RFC 7807 problem+json with a stable `code`."),
    paths(
        http::ops::healthz, http::ops::metrics, http::ops::openapi,
        http::users::create_user, http::users::keys, http::users::logout,
        http::users::revoke_sessions, http::users::issue_session, http::users::freeze_user,
        http::users::unfreeze_user, http::api_keys::create, http::api_keys::list,
        http::api_keys::revoke,
        http::groups::create_group, http::groups::get_group, http::groups::update_group,
        http::groups::members, http::groups::set_admin, http::groups::unset_admin,
        http::groups::requests, http::groups::approve, http::groups::reject,
        http::groups::block, http::groups::ban, http::groups::unban,
        http::invites::create_invite, http::invites::get_invite, http::invites::revoke_invite,
        http::invites::qr_png, http::invites::qr_svg, http::invites::card_png,
        http::invites::join, http::ws::ws, http::ws::ticket,
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
        http::abuse::answer_challenge, http::abuse::joins, http::abuse::invite_analytics,
        http::abuse::group_analytics, http::abuse::reset_invite, http::abuse::burn_branch,
        http::abuse::remove_member, http::abuse::flagged_groups, http::abuse::clear_flag,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&Bearer, &Problems)
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

/// Errors as they are sent: every `Problem` body is
/// `application/problem+json`, and every operation documents a `default`
/// response for the errors any route can give (malformed JSON, a missing
/// token, a body too large, the wrong content type, rate limits, storage
/// unavailable, overload).
struct Problems;

impl Modify for Problems {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        const PROBLEM: &str = "application/problem+json";
        let problem_ref = || RefOr::Ref(Ref::from_schema_name("Problem"));
        let is_problem = |c: &utoipa::openapi::Content| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"));
        for item in api.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for resp in op.responses.responses.values_mut() {
                    if let RefOr::T(r) = resp {
                        if let Some(c) = r.content.get("application/json") {
                            if is_problem(c) {
                                if let Some(c) = r.content.shift_remove("application/json") {
                                    r.content.insert(PROBLEM.to_string(), c);
                                }
                            }
                        }
                    }
                }
                op.responses
                    .responses
                    .entry("default".to_string())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(
                                    "An error, as RFC 7807 problem+json; switch on `code` \
                                 (see docs/api.md, Errors).",
                                )
                                .content(
                                    PROBLEM,
                                    ContentBuilder::new().schema(Some(problem_ref())).build(),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
}
