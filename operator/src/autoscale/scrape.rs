//! Reading the booking-app pods' request counters: the I/O edge of autoscaling. The reader is a
//! trait so tests inject counters; the HTTP one contacts pod IPs, so the controller uses it only
//! with `--observe-load` (in the test control plane pods are kwok data and must never be contacted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;

use super::{CounterSample, ObservedLoad, observed_load};
use crate::contract;

/// booking-app's request counter, as the contract crate names it for both sides.
pub use flashsale_contract::REQUEST_COUNTER;

/// One scrape must not hold a reconcile up: a pod that does not answer in time is left out.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("no {REQUEST_COUNTER} series in the exposition")]
    NoCounter,
    #[error("malformed sample line: {0}")]
    Malformed(String),
}

/// A ready booking-app pod to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    pub name: String,
    pub ip: String,
}

/// Reads one pod's request counter (requests served since it started).
pub trait RequestCounter: Send + Sync {
    fn read<'a>(&'a self, pod: &'a PodTarget) -> BoxFuture<'a, Result<f64, ScrapeError>>;
}

/// Reads `GET http://<pod IP>:9090/metrics` (the pod's metrics port).
#[derive(Debug, Clone)]
pub struct HttpRequestCounter {
    client: reqwest::Client,
}

impl HttpRequestCounter {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build()?,
        })
    }
}

impl RequestCounter for HttpRequestCounter {
    fn read<'a>(&'a self, pod: &'a PodTarget) -> BoxFuture<'a, Result<f64, ScrapeError>> {
        Box::pin(async move {
            let url = format!(
                "http://{}:{}{}",
                pod.ip,
                contract::METRICS_PORT,
                contract::METRICS_PATH
            );
            let response =
                self.client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|source| ScrapeError::Http {
                        url: url.clone(),
                        source,
                    })?;
            if !response.status().is_success() {
                return Err(ScrapeError::Status {
                    url,
                    status: response.status().as_u16(),
                });
            }
            let text = response
                .text()
                .await
                .map_err(|source| ScrapeError::Http { url, source })?;
            served_requests(&text)
        })
    }
}

/// Sum of the request counter over every route except the probes and /metrics itself, which
/// the kubelet and scrapers call at their own pace whatever the sale's load.
pub fn served_requests(exposition: &str) -> Result<f64, ScrapeError> {
    let operations = [
        contract::METRICS_PATH,
        contract::HEALTHZ_PATH,
        contract::READYZ_PATH,
    ];
    let mut total = 0.0;
    let mut found = false;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(REQUEST_COUNTER) else {
            continue;
        };
        if !rest.starts_with(['{', ' ']) {
            continue; // another metric whose name merely starts with ours
        }
        let (labels, value) =
            split_sample(rest).ok_or_else(|| ScrapeError::Malformed(line.to_owned()))?;
        let value: f64 = value
            .parse()
            .map_err(|_| ScrapeError::Malformed(line.to_owned()))?;
        found = true;
        if labels
            .get("route")
            .is_some_and(|route| operations.contains(&route.as_str()))
        {
            continue;
        }
        total += value;
    }
    if found {
        Ok(total)
    } else {
        Err(ScrapeError::NoCounter)
    }
}

/// `{a="x",b="y"} 12 [timestamp]` (what follows the metric name) → labels and the value.
/// Label values may hold `}` and `,` (route templates such as `/events/{id}`), so quotes are honoured.
fn split_sample(rest: &str) -> Option<(HashMap<String, String>, &str)> {
    let mut labels = HashMap::new();
    let after_labels = if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut name = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break &inner[i + 1..],
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut name), value);
                }
                other => name.push(other),
            }
        }
    } else {
        rest
    };
    let value = after_labels.split_whitespace().next()?;
    Some((labels, value))
}

/// Ready booking-app pods with an IP: the ones worth reading.
pub fn ready_targets(pods: &[Pod]) -> Vec<PodTarget> {
    pods.iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let ready = status
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            ready.then(|| PodTarget {
                name: pod.metadata.name.clone().unwrap_or_default(),
                ip,
            })
        })
        .collect()
}

/// Rounds closer together than this reuse the last one: a reconcile woken by its own status
/// write must not read again over a few milliseconds (noisy rates, a new status, a new wake-up).
pub const READ_INTERVAL: TimeDelta = TimeDelta::seconds(15);

/// A sale not observed for this long is forgotten: it was deleted, moved off observation, or
/// the operator lost it. Its next round starts afresh (no rate from a reading this old anyway).
pub const FORGET_AFTER: TimeDelta = TimeDelta::minutes(10);

/// One sale's last round: what each pod had served, and the load computed then.
#[derive(Debug, Clone)]
struct Round {
    samples: Vec<CounterSample>,
    at: DateTime<Utc>,
    load: Option<ObservedLoad>,
}

/// Remembers each sale's last round so the next one yields a rate.
pub struct LoadObserver {
    counter: Arc<dyn RequestCounter>,
    last: Mutex<HashMap<String, Round>>,
}

impl LoadObserver {
    pub fn new(counter: Arc<dyn RequestCounter>) -> Self {
        Self {
            counter,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Reads every pod at once and returns the load since the previous round for `sale`
    /// (`None` on the first round, or when no pod answered twice). Unreadable pods are logged
    /// and left out: a rate from the pods that answered beats no rate. Within `READ_INTERVAL`
    /// of the last round, that round's load is returned without reading.
    pub async fn observe(
        &self,
        sale: &str,
        pods: &[PodTarget],
        now: DateTime<Utc>,
    ) -> Option<ObservedLoad> {
        if let Some(round) = self
            .lock()
            .get(sale)
            .filter(|r| now >= r.at && now - r.at < READ_INTERVAL)
        {
            return round.load;
        }
        let reads = futures::future::join_all(pods.iter().map(|pod| self.counter.read(pod))).await;
        let mut current = Vec::with_capacity(pods.len());
        for (pod, read) in pods.iter().zip(reads) {
            match read {
                Ok(requests) => current.push(CounterSample {
                    pod: pod.name.clone(),
                    requests,
                    at: now,
                }),
                Err(error) => {
                    tracing::warn!(%sale, pod = %pod.name, %error, "reading the request counter failed")
                }
            }
        }
        let mut last = self.lock();
        // Deleted sales are never observed again: their rounds go once they are stale, so the
        // map holds the sales of the last few minutes, not every sale the operator ever saw.
        last.retain(|_, round| now - round.at < FORGET_AFTER);
        let previous = last
            .get(sale)
            .map(|r| r.samples.as_slice())
            .unwrap_or_default();
        let load = observed_load(previous, &current);
        last.insert(
            sale.to_owned(),
            Round {
                samples: current,
                at: now,
                load,
            },
        );
        load
    }

    /// The sales with a remembered round (for tests and diagnostics).
    pub fn remembered(&self) -> Vec<String> {
        let mut sales: Vec<String> = self.lock().keys().cloned().collect();
        sales.sort();
        sales
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Round>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP booking_http_requests HTTP requests by route and status.
# TYPE booking_http_requests counter
booking_http_requests_total{method="POST",route="/events/{id}/bookings",status="201"} 1200
booking_http_requests_total{method="POST",route="/events/{id}/bookings",status="409"} 300
booking_http_requests_total{method="GET",route="/healthz",status="200"} 40
booking_http_requests_total{method="GET",route="/readyz",status="200"} 40
booking_http_requests_total{method="GET",route="/metrics",status="200"} 7
booking_http_requests_total{method="GET",route="weird \"quoted\", {x}",status="404"} 5
booking_http_request_duration_seconds_sum{method="GET",route="/healthz"} 0.5
booking_bookings_total{stage="postgres",outcome="confirmed"} 1200
# EOF
"#;

    #[test]
    fn sums_served_requests_but_not_probes_or_scrapes() {
        assert_eq!(served_requests(EXPOSITION).unwrap(), 1200.0 + 300.0 + 5.0);
    }

    #[test]
    fn an_exposition_without_the_counter_is_an_error_not_zero() {
        assert!(matches!(
            served_requests("booking_bookings_total 3\n"),
            Err(ScrapeError::NoCounter)
        ));
        assert!(matches!(
            served_requests("booking_http_requests_total{route=\"/x\" 3\n"),
            Err(ScrapeError::Malformed(_))
        ));
    }

    #[test]
    fn reads_the_series_name_exactly() {
        assert_eq!(
            served_requests("booking_http_requests_total 9\n").unwrap(),
            9.0
        );
        assert!(matches!(
            served_requests("booking_http_requests_total_extra 9\n"),
            Err(ScrapeError::NoCounter)
        ));
    }

    struct Scripted(Mutex<HashMap<String, Vec<f64>>>);

    impl RequestCounter for Scripted {
        fn read<'a>(&'a self, pod: &'a PodTarget) -> BoxFuture<'a, Result<f64, ScrapeError>> {
            let next = self
                .0
                .lock()
                .unwrap()
                .get_mut(&pod.name)
                .and_then(|values| (!values.is_empty()).then(|| values.remove(0)));
            Box::pin(async move { next.ok_or(ScrapeError::NoCounter) })
        }
    }

    fn pod(name: &str) -> PodTarget {
        PodTarget {
            name: name.into(),
            ip: "192.0.2.1".into(),
        }
    }

    #[tokio::test]
    async fn observer_turns_two_rounds_into_a_rate_and_skips_silent_pods() {
        let script = HashMap::from([
            ("a".to_owned(), vec![100.0, 1100.0]),
            ("b".to_owned(), vec![0.0]),
        ]);
        let observer = LoadObserver::new(Arc::new(Scripted(Mutex::new(script))));
        let t0: DateTime<Utc> = "2026-12-01T18:00:00Z".parse().unwrap();
        let pods = [pod("a"), pod("b")];
        assert_eq!(observer.observe("ns/sale", &pods, t0).await, None);
        let load = observer
            .observe("ns/sale", &pods, t0 + READ_INTERVAL)
            .await
            .unwrap();
        assert_eq!(
            load,
            ObservedLoad {
                pods: 1,
                total_rps: 1000.0 / 15.0
            }
        );
        // Soon after: the same answer, nothing read (the script has no values left to give).
        assert_eq!(
            observer
                .observe("ns/sale", &pods, t0 + READ_INTERVAL + TimeDelta::seconds(1))
                .await,
            Some(load)
        );
        // Two intervals on: pod a is read again (its script is spent: an error), so no pod has a rate.
        assert_eq!(
            observer
                .observe("ns/sale", &pods, t0 + READ_INTERVAL * 3)
                .await,
            None
        );
    }

    #[tokio::test]
    async fn sales_not_observed_for_a_while_are_forgotten() {
        let script = HashMap::from([("a".to_owned(), vec![1.0; 4])]);
        let observer = LoadObserver::new(Arc::new(Scripted(Mutex::new(script))));
        let t0: DateTime<Utc> = "2026-12-01T18:00:00Z".parse().unwrap();
        observer.observe("ns/deleted", &[pod("a")], t0).await;
        observer
            .observe(
                "ns/live",
                &[pod("a")],
                t0 + FORGET_AFTER - TimeDelta::seconds(1),
            )
            .await;
        assert_eq!(observer.remembered(), ["ns/deleted", "ns/live"]);
        observer
            .observe("ns/live", &[pod("a")], t0 + FORGET_AFTER + READ_INTERVAL)
            .await;
        assert_eq!(
            observer.remembered(),
            ["ns/live"],
            "the deleted sale's round is dropped"
        );
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_read() {
        let pods: Vec<Pod> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "ready"}, "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "starting"}, "status": {"podIP": "10.0.0.2", "conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"name": "no-ip"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "pending"}}
        ]))
        .unwrap();
        assert_eq!(
            ready_targets(&pods),
            vec![PodTarget {
                name: "ready".into(),
                ip: "10.0.0.1".into()
            }]
        );
    }
}
