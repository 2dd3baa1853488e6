//! The OpenAPI document, generated from the handlers' annotations, and
//! its route.

use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "qrgate", description = "QR invitations and the join workflow behind a scan; wallets kept as a double-entry ledger; red packets; scan codes. Errors are RFC 7807 problem+json with a stable `code`."),
    paths(
        super::ops::healthz, super::ops::metrics, super::ops::backup, super::openapi::document,
        super::users::create_user, super::users::keys, super::users::logout,
        super::users::revoke_sessions, super::users::issue_session, super::users::freeze_user,
        super::users::unfreeze_user, super::api_keys::create, super::api_keys::list,
        super::api_keys::revoke,
        super::groups::create_group, super::groups::get_group, super::groups::update_group,
        super::groups::members, super::groups::set_admin, super::groups::unset_admin,
        super::groups::requests, super::groups::approve, super::groups::reject, super::groups::reject_many, super::groups::put_avatar, super::groups::delete_avatar,
        super::groups::block, super::groups::ban, super::groups::unban,
        super::invites::create_invite, super::invites::get_invite, super::invites::revoke_invite,
        super::invites::qr_png, super::invites::qr_svg, super::invites::card_png,
        super::joins::join, super::ws::ws, super::ws::ticket, super::events::events,
        super::wallets::wallet, super::wallets::entries, super::wallets::earn,
        super::wallets::ledger_check,
        super::payouts::link, super::payouts::link_start, super::payouts::link_callback, super::payouts::set_auto_payout, super::payouts::create_payout, super::payouts::list_payouts,
        super::payouts::get_payout, super::payouts::provider_notify, super::payouts::admin_payouts,
        super::payouts::large_transactions, super::payouts::set_kyc, super::payouts::reconcile, super::payouts::alerts,
        super::payouts::link_status, super::payouts::reconciliation,
        super::packets::create_packet, super::packets::get_packet, super::packets::qr_png,
        super::packets::claim, super::packets::blacklist_add, super::packets::blacklist_remove,
        super::packets::blacklist_list,
        super::codes::create_code, super::codes::get_code, super::codes::revoke_code,
        super::codes::resolve,
        super::challenges::answer_challenge, super::abuse::joins, super::abuse::invite_analytics,
        super::abuse::group_analytics, super::abuse::reset_invite, super::abuse::burn_branch,
        super::abuse::remove_member, super::abuse::flagged_groups, super::abuse::clear_flag,
        super::webhooks::list, super::webhooks::deliveries, super::webhooks::resend,
        super::webhooks::enable,
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

/// This document.
#[utoipa::path(operation_id = "openapi", responses((status = 200, description = "OpenAPI 3.1 JSON")), tag = "ops")]
#[get("/openapi.json")]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
