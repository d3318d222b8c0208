//! Which streams the syncer reads: every event in the index, each given the consumer group on
//! its stream once; sold-out events whose stream is empty leave the index.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Syncer;
use crate::stage::StageError;
use crate::stage::redis::connection::classify;
use crate::stage::redis::keys::SYNC_GROUP;

/// How long the syncer works from the event index it last read.
const EVENTS_REFRESH: Duration = Duration::from_secs(1);

impl Syncer {
    /// The events loaded into Redis, each with the group on its stream. The index is read at
    /// most every `EVENTS_REFRESH` (a pass under load takes tens of milliseconds, and a round trip
    /// costs a Redis event-loop iteration): a new event is synced that much later at worst.
    pub(super) async fn events(&mut self) -> Result<Vec<Uuid>, StageError> {
        if let Some((read, events)) = &self.events_read
            && read.elapsed() < EVENTS_REFRESH
        {
            return Ok(events.clone());
        }
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.event_index())
            .query_async(&mut self.redis)
            .await
            .map_err(classify)?;
        let events: Vec<Uuid> = members.iter().filter_map(|m| m.parse().ok()).collect();
        let new: Vec<Uuid> = events
            .iter()
            .copied()
            .filter(|id| !self.grouped.contains(id))
            .collect();
        for id in new {
            let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.keys.event(id).stream)
                .arg(SYNC_GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut self.redis)
                .await;
            match created {
                Ok(()) => {}
                Err(err) if err.code() == Some("BUSYGROUP") => {}
                Err(err) => return Err(classify(err)),
            }
            self.grouped.insert(id);
        }
        self.events_read = Some((Instant::now(), events.clone()));
        Ok(events)
    }

    /// Stops watching sold-out events whose stream is empty: no booking can enter it any more
    /// (a stream entry is added by the same script that lowers `remaining`, so `remaining` 0
    /// read first means every entry is already there). A reload after data loss registers the
    /// event again.
    pub(super) async fn forget_finished(&mut self, events: &[Uuid]) -> Result<(), StageError> {
        let mut pipe = redis::pipe();
        for &id in events {
            let keys = self.keys.event(id);
            pipe.hget(&keys.inventory, "remaining").xlen(&keys.stream);
        }
        let state: Vec<(Option<i64>, i64)> =
            pipe.query_async(&mut self.redis).await.map_err(classify)?;
        let finished: Vec<String> = events
            .iter()
            .zip(state)
            .filter(|(_, state)| *state == (Some(0), 0))
            .map(|(id, _)| id.to_string())
            .collect();
        if !finished.is_empty() {
            let _: i64 = redis::cmd("SREM")
                .arg(self.keys.event_index())
                .arg(&finished)
                .query_async(&mut self.redis)
                .await
                .map_err(classify)?;
            if let Some((_, watched)) = &mut self.events_read {
                watched.retain(|id| !finished.contains(&id.to_string()));
            }
            tracing::info!(
                events = finished.len(),
                "sold out and fully synced: no longer watched"
            );
        }
        Ok(())
    }
}
