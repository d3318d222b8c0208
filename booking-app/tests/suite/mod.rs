//! The behaviour every stage must show, written once and parameterised by stage:
//! `stage_suite!(name, Stage::X)` instantiates all of it as `#[tokio::test]`s in module `name`
//! (`stage_suite!(name, Stage::X, configure)` for one form of a stage).
//! Each test makes its own events, so tests run in parallel on one database.

pub mod api;
pub mod auth;
pub mod bad_input;
pub mod concurrency;
pub mod retention;

/// One `#[tokio::test]` per suite function for `$stage`, in module `$name`; `$configure` (a
/// `fn(&mut Config)`) selects one form of a stage that has several (stage postgres: batched or
/// per-booking decisions).
#[macro_export]
macro_rules! stage_suite {
    ($name:ident, $stage:expr) => {
        $crate::stage_suite!($name, $stage, |_| {});
    };
    ($name:ident, $stage:expr, $configure:expr) => {
        mod $name {
            use booking_app::domain::Stage;
            use $crate::common::Target;

            const TARGET: Target = Target { stage: $stage, configure: $configure };

            $crate::stage_suite!(@tests
                api::event_round_trip_and_booking_read_back,
                api::refusals_are_409_with_their_reason,
                api::booking_status_streams_as_server_sent_events,
                api::booking_events_match_the_openapi_booking_schema,
                api::idempotent_retries_book_once,
                api::reused_idempotency_key_is_refused,
                api::the_same_key_from_two_users_books_twice,
                api::operations_endpoints_answer,
                api::every_documented_route_is_served,
                auth::requests_without_a_token_are_401,
                auth::expired_misdirected_or_forged_tokens_are_401,
                auth::the_token_names_the_user_and_the_body_cannot_name_another,
                auth::only_admins_create_events,
                auth::per_user_limit_holds_however_the_body_is_written,
                auth::a_booking_is_read_by_its_owner_or_an_admin,
                bad_input::bad_booking_requests_are_4xx_and_write_nothing,
                bad_input::bad_event_requests_are_4xx_and_write_nothing,
                bad_input::bad_ids_and_routes_are_4xx_json,
                concurrency::concurrent_bookings_never_oversell,
                concurrency::last_ticket_is_sold_once,
                concurrency::per_user_limit_holds_under_concurrency,
                retention::a_refused_key_is_a_new_request_after_the_retention,
            );
        }
    };
    (@tests $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                $crate::common::init_logs();
                $crate::suite::$module::$test(TARGET).await;
            }
        )*
    };
}
