//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` and the body types.
//! Every route is registered through `routes()`, so the router and the document cannot diverge.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, bookings, events, health, metrics};

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    info(
        title = "booking-app",
        description = "Flash-sale booking API. Every error is `{\"error\":{\"code\",\"message\"}}`."
    ),
    tags(
        (name = "events", description = "Events and their inventory"),
        (name = "bookings", description = "Booking requests and their outcome"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme the operations name: a JWT whose `sub` is the user.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
    }
}

/// Every route of the API with its documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(events::create_event))
        .routes(routes!(events::get_event))
        .routes(routes!(bookings::create_booking))
        .routes(routes!(bookings::get_booking))
        .routes(routes!(bookings::watch_booking))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
}

/// The whole document (e.g. for a client generator or an API fuzzer).
pub fn document() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| document().to_json().expect("OpenAPI document serializes"));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes the README documents; each must be in the generated document.
    const DOCUMENTED: &[(&str, &str)] = &[
        ("post", "/events"),
        ("get", "/events/{id}"),
        ("post", "/events/{id}/bookings"),
        ("get", "/bookings/{id}"),
        ("get", "/bookings/{id}/events"),
        // The probe and scrape paths the operator configures.
        ("get", flashsale_contract::HEALTHZ_PATH),
        ("get", flashsale_contract::READYZ_PATH),
        ("get", flashsale_contract::METRICS_PATH),
        ("get", "/openapi.json"),
    ];

    #[test]
    fn every_route_is_in_the_document() {
        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        let paths = doc["paths"].as_object().expect("paths");
        for (method, path) in DOCUMENTED {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} missing"
            );
        }
        let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            operations,
            DOCUMENTED.len(),
            "document has routes the README does not list: {paths:?}"
        );
        assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
        for schema in ["Event", "NewEvent", "Booking", "BookingBody", "ErrorBody"] {
            assert!(
                doc["components"]["schemas"].get(schema).is_some(),
                "schema {schema} missing"
            );
        }
    }

    /// The request bodies are as strict in the document as in `validation`: a fuzzer that
    /// trusts the document sends only what is accepted, and what it knows is invalid is refused.
    #[test]
    fn request_schemas_state_what_validation_enforces() {
        use crate::domain::{MAX_QUANTITY, MAX_TICKETS, MAX_USER_ID_LEN};
        use crate::validation::{MAX_EVENT_NAME_LEN, MAX_IDEMPOTENCY_KEY_LEN, TEXT_PATTERN};

        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let booking = &schemas["BookingBody"];
        assert_eq!(booking["additionalProperties"], false, "{booking}");
        // The user is the token's subject: `user_id` may be omitted.
        assert_eq!(booking["required"], serde_json::json!(["quantity"]));
        let user = &booking["properties"]["user_id"];
        assert_eq!(user["maxLength"], MAX_USER_ID_LEN);
        assert_eq!(user["minLength"], 1);
        assert_eq!(user["pattern"], TEXT_PATTERN);
        let quantity = &booking["properties"]["quantity"];
        assert_eq!(
            (quantity["minimum"].clone(), quantity["maximum"].clone()),
            (1.into(), MAX_QUANTITY.into())
        );

        let event = &schemas["NewEvent"];
        assert_eq!(event["additionalProperties"], false, "{event}");
        assert_eq!(event["required"], serde_json::json!(["name", "tickets"]));
        assert_eq!(event["properties"]["name"]["maxLength"], MAX_EVENT_NAME_LEN);
        assert_eq!(event["properties"]["tickets"]["maximum"], MAX_TICKETS);
        assert_eq!(event["properties"]["per_user_limit"]["minimum"], 1);

        let params = doc["paths"]["/events/{id}/bookings"]["post"]["parameters"]
            .as_array()
            .unwrap();
        let key = params
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .expect("Idempotency-Key parameter");
        assert_eq!(key["schema"]["maxLength"], MAX_IDEMPOTENCY_KEY_LEN, "{key}");
        assert_eq!(
            key["schema"]["pattern"],
            crate::validation::IDEMPOTENCY_KEY_PATTERN
        );
    }
}
