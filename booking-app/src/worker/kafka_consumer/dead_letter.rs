//! The dead-letter topic (`<requests topic>.dlq`): a record no worker can decide — not a booking
//! request, values the API would refuse, an event that does not exist — is copied there with the
//! reason in a header before its offset is committed, so it is kept for a human and never stops
//! the queue. The API never produces such a record, so no client waits for it.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::stage::kafka::record::RecordError;
use crate::worker::kafka_consumer::decide::Verdict;

/// Header naming why the record was not decided (a `reason` label of `kafka_dead_letters`).
pub const REASON_HEADER: &str = "dead-letter-reason";
/// Header naming where the record was read: `<topic>/<partition>/<offset>`.
pub const SOURCE_HEADER: &str = "dead-letter-source";

/// One record to set aside.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub reason: &'static str,
}

/// The reason of a record that did not decode.
pub fn undecodable(err: &RecordError) -> &'static str {
    match err {
        RecordError::Empty => "empty",
        RecordError::Malformed(_) => "malformed",
        RecordError::UnknownVersion(_) => "unknown_version",
    }
}

/// The reason of a decoded record the worker would not decide, `None` for the others.
pub fn undecided(verdict: Verdict) -> Option<&'static str> {
    match verdict {
        Verdict::Invalid(field) => Some(match field {
            "quantity" => "invalid_quantity",
            "user_id" => "invalid_user_id",
            "Idempotency-Key" => "invalid_idempotency_key",
            _ => "invalid",
        }),
        Verdict::UnknownEvent => Some("unknown_event"),
        Verdict::Confirmed | Verdict::Rejected(_) | Verdict::Duplicate => None,
    }
}

/// Produces `letters` to `topic` and waits for every acknowledgement (the caller commits the
/// offsets only after this returned `Ok`, so a letter is never lost between the two).
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    source_topic: &str,
    letters: &[DeadLetter],
    timeout: Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    let sends = letters.iter().map(|letter| {
        let source = format!("{source_topic}/{}/{}", letter.partition, letter.offset);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: REASON_HEADER,
                value: Some(letter.reason),
            })
            .insert(Header {
                key: SOURCE_HEADER,
                value: Some(&source),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &letter.payload {
            record = record.payload(payload.as_slice());
        }
        producer.send(record, timeout)
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(err, _)| err)?;
    }
    Ok(())
}
