//! The request types' constraints as OpenAPI schemas, for their `#[schema(schema_with)]`: the
//! document states what `crate::validation` enforces, from the same constants (in `domain`), so
//! the two cannot drift.

use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};

use super::{MAX_EVENT_NAME_LEN, MAX_QUANTITY, MAX_TICKETS, MAX_USER_ID_LEN, TEXT_PATTERN};

fn text(max_chars: usize, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(TEXT_PATTERN))
        .description(Some(description))
        .build()
}

fn integer(format: KnownFormat, minimum: i64, maximum: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(format)))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
}

pub fn user_id() -> Object {
    text(
        MAX_USER_ID_LEN,
        "Who books: no control characters, not only white space",
    )
}

pub fn event_name() -> Object {
    text(
        MAX_EVENT_NAME_LEN,
        "No control characters, not only white space",
    )
}

pub fn quantity() -> Object {
    integer(KnownFormat::Int32, 1, MAX_QUANTITY.into()).build()
}

pub fn tickets() -> Object {
    integer(KnownFormat::Int64, 0, MAX_TICKETS).build()
}

pub fn per_user_limit() -> Object {
    integer(KnownFormat::Int32, 1, i32::MAX.into())
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Integer,
            Type::Null,
        ]))
        .description(Some(
            "Most tickets one user may hold for this event; unlimited when absent or null",
        ))
        .build()
}
