//! The sale's own event (`SALE_EVENT_*`, which the operator fills in from a FlashSale's
//! `spec.event`): created with its fixed id before the API serves. Every stage reads events from
//! Postgres on demand (stage redis loads the inventory on first use), so the row is all it takes.

use sqlx::PgPool;
use uuid::Uuid;

use super::{StageError, records};
use crate::config::SaleEventConfig;
use crate::domain::{Event, NewEvent};
use crate::validation::validate_new_event;

/// The configured sale event, or None when no `SALE_EVENT_*` is set. Id, name and tickets go
/// together; a per-user limit alone is refused too (it would silently do nothing).
pub fn from_config(config: &SaleEventConfig) -> Result<Option<(Uuid, NewEvent)>, StageError> {
    let SaleEventConfig {
        sale_event_id,
        sale_event_name,
        sale_event_tickets,
        sale_event_per_user_limit,
    } = config;
    match (sale_event_id, sale_event_name, sale_event_tickets) {
        (None, None, None) if sale_event_per_user_limit.is_none() => Ok(None),
        (Some(id), Some(name), Some(tickets)) => {
            let new = NewEvent {
                name: name.clone(),
                tickets: *tickets,
                per_user_limit: *sale_event_per_user_limit,
            };
            validate_new_event(&new).map_err(|e| {
                StageError::Invalid(format!(
                    "SALE_EVENT_{}: {}",
                    e.field.to_uppercase(),
                    e.problem
                ))
            })?;
            Ok(Some((*id, new)))
        }
        _ => {
            let missing: Vec<&str> = [
                ("SALE_EVENT_ID", sale_event_id.is_none()),
                ("SALE_EVENT_NAME", sale_event_name.is_none()),
                ("SALE_EVENT_TICKETS", sale_event_tickets.is_none()),
            ]
            .into_iter()
            .filter_map(|(var, absent)| absent.then_some(var))
            .collect();
            Err(StageError::Invalid(format!(
                "the sale event is configured only in part: set SALE_EVENT_ID, SALE_EVENT_NAME and SALE_EVENT_TICKETS \
                 (and optionally SALE_EVENT_PER_USER_LIMIT) together, or none of them; missing {}",
                missing.join(", ")
            )))
        }
    }
}

/// Creates the configured sale event if absent. An existing one is kept as stored, even when the
/// settings differ: its tickets may be partly sold, and changing them could resurrect sold ones.
pub async fn ensure(pool: &PgPool, config: &SaleEventConfig) -> Result<Option<Event>, StageError> {
    let Some((id, new)) = from_config(config)? else {
        return Ok(None);
    };
    let (event, created) = records::ensure_event(pool, id, &new).await?;
    if created {
        tracing::info!(event = %id, tickets = event.tickets, "sale event created");
    } else if (event.tickets, &event.name, event.per_user_limit)
        != (new.tickets, &new.name, new.per_user_limit)
    {
        tracing::warn!(
            event = %id,
            stored_tickets = event.tickets,
            configured_tickets = new.tickets,
            stored_per_user_limit = ?event.per_user_limit,
            configured_per_user_limit = ?new.per_user_limit,
            remaining = event.remaining,
            "sale event exists with other settings; keeping the stored event (inventory is never changed)"
        );
    } else {
        tracing::info!(event = %id, remaining = event.remaining, "sale event already exists");
    }
    Ok(Some(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: bool, name: bool, tickets: bool, limit: bool) -> SaleEventConfig {
        SaleEventConfig {
            sale_event_id: id.then(Uuid::new_v4),
            sale_event_name: name.then(|| "Tour".into()),
            sale_event_tickets: tickets.then_some(100),
            sale_event_per_user_limit: limit.then_some(2),
        }
    }

    #[test]
    fn no_settings_means_no_sale_event() {
        assert!(
            from_config(&config(false, false, false, false))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn all_settings_make_the_event_and_the_limit_is_optional() {
        let (_, new) = from_config(&config(true, true, true, true))
            .unwrap()
            .unwrap();
        assert_eq!(
            (new.name.as_str(), new.tickets, new.per_user_limit),
            ("Tour", 100, Some(2))
        );
        let (_, new) = from_config(&config(true, true, true, false))
            .unwrap()
            .unwrap();
        assert_eq!(new.per_user_limit, None);
    }

    #[test]
    fn part_of_the_settings_is_refused_naming_what_is_missing() {
        let err = from_config(&config(true, false, true, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing SALE_EVENT_NAME"), "{err}");
        let err = from_config(&config(false, false, false, true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SALE_EVENT_ID, SALE_EVENT_NAME, SALE_EVENT_TICKETS"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_are_refused_like_post_events() {
        let mut c = config(true, true, true, false);
        c.sale_event_tickets = Some(-1);
        let err = from_config(&c).unwrap_err().to_string();
        assert!(err.contains("SALE_EVENT_TICKETS"), "{err}");
    }
}
