//! Where stage redis keeps what: every Redis key name in one place, shared by the stage and the
//! syncer. One event's keys share the `{event_id}` hash tag, so a Redis Cluster would keep them in
//! one slot. The claim of an idempotency key is global, outside any event's slot, and the booking
//! script touches it too (one write per booking): stage redis assumes a single Redis primary.

use redis::RedisWrite;
use uuid::Uuid;

/// The consumer group of the write-behind syncer on every event's stream.
pub const SYNC_GROUP: &str = "syncer";

/// Fields of a stream entry: the booking as JSON, and its idempotency key ('' for none).
pub const ENTRY_BOOKING: &str = "booking";
pub const ENTRY_KEY: &str = "key";

/// The last part of each of an event's keys, in `EventKeys::as_array` order.
const EVENT_KEY_SUFFIXES: [&str; 5] = [
    "inventory",
    "holdings",
    "idempotency",
    "bookings",
    "unsynced",
];

/// Key names under one prefix, so several deployments (or test runs) can share one Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// The keys of one event, in the order the Lua scripts take them (`KEYS[1..5]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKeys {
    /// Hash: name, tickets, limit (-1: none), created_at, remaining.
    pub inventory: String,
    /// Hash: user id -> tickets the user holds.
    pub holdings: String,
    /// Hash: idempotency key -> the first answer (booking JSON).
    pub idempotency: String,
    /// Stream: decisions Postgres does not have yet (entries are deleted once synced).
    pub stream: String,
    /// Hash: booking id -> booking JSON, for the confirmed bookings in the stream, so
    /// `GET /bookings/{id}` finds them before Postgres has them. Emptied with the stream.
    pub unsynced: String,
}

impl EventKeys {
    pub fn as_array(&self) -> [&str; 5] {
        [
            &self.inventory,
            &self.holdings,
            &self.idempotency,
            &self.stream,
            &self.unsynced,
        ]
    }
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn event(&self, id: Uuid) -> EventKeys {
        let base = format!("{}:{{{id}}}", self.prefix);
        let [inventory, holdings, idempotency, stream, unsynced] =
            EVENT_KEY_SUFFIXES.map(|s| format!("{base}:{s}"));
        EventKeys {
            inventory,
            holdings,
            idempotency,
            stream,
            unsynced,
        }
    }

    /// Writes `event(id)`'s keys, in the scripts' order, as the next arguments of a command,
    /// straight into its buffer (the booking path builds one command per request).
    pub fn write_event_args(&self, out: &mut impl RedisWrite, id: Uuid) {
        for suffix in EVENT_KEY_SUFFIXES {
            out.write_arg_fmt(format_args!("{}:{{{id}}}:{suffix}", self.prefix));
        }
    }

    /// Writes `key_claim(idempotency_key)` as the next argument of a command.
    pub fn write_key_claim_arg(&self, out: &mut impl RedisWrite, idempotency_key: &str) {
        out.write_arg_fmt(format_args!(
            "{}:idempotency-key:{{{idempotency_key}}}",
            self.prefix
        ));
    }

    /// Set of the ids of events loaded into Redis: the streams the syncer reads.
    pub fn event_index(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// String: the event an `Idempotency-Key` was first used for. Global, because keys are unique
    /// across events; tagged by the key itself, so it hashes outside the event's slot. The booking
    /// script claims it in the same call (its KEYS[6]), which needs a single Redis primary: a
    /// Redis Cluster would refuse the call as CROSSSLOT.
    pub fn key_claim(&self, idempotency_key: &str) -> String {
        format!("{}:idempotency-key:{{{idempotency_key}}}", self.prefix)
    }

    /// The event whose stream `key` is (`None` for any other key).
    pub fn event_of_stream(&self, key: &str) -> Option<Uuid> {
        let tagged = key
            .strip_prefix(&self.prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:bookings")?;
        tagged.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot Redis Cluster computes: the part between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("key has a hash tag");
        let close = key[open + 1..].find('}').expect("hash tag is closed") + open + 1;
        &key[open + 1..close]
    }

    #[test]
    fn one_events_keys_share_one_hash_tag() {
        let keys = Keys::new("flashsale");
        let id = Uuid::new_v4();
        for key in keys.event(id).as_array() {
            assert_eq!(hash_tag(key), id.to_string(), "{key}");
        }
    }

    #[test]
    fn keys_written_into_a_command_are_the_named_keys() {
        let keys = Keys::new("test:run-1");
        let id = Uuid::new_v4();
        let mut written: Vec<Vec<u8>> = Vec::new();
        keys.write_event_args(&mut written, id);
        keys.write_key_claim_arg(&mut written, "key-7");
        let mut expected: Vec<Vec<u8>> = keys
            .event(id)
            .as_array()
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        expected.push(keys.key_claim("key-7").into_bytes());
        assert_eq!(written, expected);
    }

    #[test]
    fn stream_key_names_its_event() {
        let keys = Keys::new("test:run-1");
        let id = Uuid::new_v4();
        assert_eq!(keys.event_of_stream(&keys.event(id).stream), Some(id));
        assert_eq!(keys.event_of_stream(&keys.event(id).inventory), None);
        assert_eq!(
            Keys::new("other").event_of_stream(&keys.event(id).stream),
            None
        );
    }
}
