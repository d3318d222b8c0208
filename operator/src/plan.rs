//! `flashsale-operator plan`: the roadmap's unit-capacity table for a target, from a per-pod rate
//! measured by calibration or `make calibrate`. The same functions size a live sale.

use chrono::TimeDelta;

use crate::capacity::queue::{EVENTS_PER_SALE, QueueRequest, plan_queue};
use crate::capacity::unit::{DerivedRequest, derive, table};
use crate::capacity::{
    CapacityError, DEFAULT_MAX_CONNECTIONS_CEILING, DEFAULT_TARGET_UTILIZATION, MAX_REPLICAS,
    SizingRequest, size_replicas,
};
use crate::duration::parse_duration;
use flashsale_contract::Stage;

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Requests per second the sale must sustain.
    #[arg(long)]
    pub target_rps: u64,
    /// Requests per second one booking-app pod sustains within the SLO.
    #[arg(long)]
    pub per_pod_rps: f64,
    /// Fraction of a pod's capacity to plan for, in (0, 1].
    #[arg(long, default_value_t = DEFAULT_TARGET_UTILIZATION)]
    pub utilization: f64,
    /// Inventory stage: postgres, redis or kafka.
    #[arg(long, default_value = "postgres", value_parser = parse_stage)]
    pub stage: Stage,
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    /// Most booking-app pods allowed (default: as many as the target needs).
    #[arg(long)]
    pub max_replicas: Option<u32>,
    /// Stage kafka: decisions per second one worker makes on one event's queue (calibration's
    /// drainRps). Without it the queue is not planned and one worker is.
    #[arg(long, alias = "worker-rps")]
    pub drain_rps: Option<f64>,
    /// Stage kafka: events the target is spread over. One event's requests are one partition,
    /// decided in order by one worker; a FlashSale is one event.
    #[arg(long, default_value_t = EVENTS_PER_SALE)]
    pub events: u32,
    /// Stage kafka: how long the target load lasts (e.g. 2h), to say how long the queue needs
    /// to empty afterwards.
    #[arg(long, value_parser = parse_peak)]
    pub peak: Option<TimeDelta>,
    /// Postgres connections per pod (default: by stage, shrunk to fit).
    #[arg(long)]
    pub db_pool_size: Option<u32>,
    /// Largest Postgres max_connections to plan for.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS_CEILING)]
    pub max_connections: u32,
}

fn parse_peak(text: &str) -> Result<TimeDelta, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn parse_stage(text: &str) -> Result<Stage, String> {
    Stage::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| format!("{text:?} is not postgres, redis or kafka"))
}

/// The table `plan` prints.
pub fn render(args: &PlanArgs) -> Result<String, CapacityError> {
    let max = args.max_replicas.unwrap_or(MAX_REPLICAS);
    let api = size_replicas(&SizingRequest {
        target_rps: args.target_rps,
        per_pod_rps: Some(args.per_pod_rps),
        utilization: args.utilization,
        min_replicas: args.min_replicas,
        max_replicas: max,
    })?;
    let queue = match (args.stage.uses_kafka(), args.drain_rps) {
        (true, Some(drain_rps)) => Some(
            plan_queue(&QueueRequest {
                target_rps: args.target_rps,
                drain_rps,
                events: args.events,
                peak: args.peak,
            })
            .ok_or(CapacityError::InvalidPerPodRps(drain_rps))?,
        ),
        _ => None,
    };
    let worker_count = match (args.stage.has_worker(), &queue) {
        (false, _) => 0,
        (true, Some(q)) => q.workers,
        (true, None) => 1,
    };
    let derived = derive(&DerivedRequest {
        stage: args.stage,
        // Pools are sized for the most pods the sale may run, as the operator does.
        api_pods: args.max_replicas.unwrap_or(api.replicas),
        workers: worker_count,
        workers_any_stage: worker_count.max(1),
        pinned_pool: args.db_pool_size,
        pinned_partitions: None,
        max_connections_ceiling: args.max_connections,
    });
    Ok(table(args.stage, &api, queue.as_ref(), &derived))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        plan: PlanArgs,
    }

    fn plan(args: &str) -> Result<String, CapacityError> {
        let cli =
            Cli::try_parse_from(std::iter::once("plan").chain(args.split_whitespace())).unwrap();
        render(&cli.plan)
    }

    #[test]
    fn roadmap_numbers_come_out() {
        let text = plan("--target-rps 1000000 --per-pod-rps 4000 --utilization 1").unwrap();
        assert!(
            text.contains("ceil(1000000 / (4000 x 1.00)) = 250"),
            "{text}"
        );
        let redis =
            plan("--target-rps 1000000 --per-pod-rps 50000 --utilization 1 --stage redis").unwrap();
        assert!(redis.contains("= 20"), "{redis}");
        assert!(redis.contains("one write-behind syncer"), "{redis}");
    }

    #[test]
    fn kafka_plan_says_how_the_queue_of_one_event_behaves() {
        let text = plan(
            "--target-rps 100000 --per-pod-rps 20000 --stage kafka --drain-rps 5000 --peak 10m",
        )
        .unwrap();
        // One event: one worker decides it, whatever the target; the rest queues.
        let workers = text.lines().find(|l| l.contains("workers")).unwrap();
        assert!(workers.contains(" 1 "), "{workers}");
        assert!(text.contains("the queue grows by 95000 rps: a 10m peak leaves 57000000 requests queued, the last decided 3h10m after it ends"), "{text}");
    }

    #[test]
    fn kafka_plan_sizes_workers_and_partitions_for_many_events() {
        let text = plan(
            "--target-rps 100000 --per-pod-rps 20000 --stage kafka --worker-rps 5000 --events 100",
        )
        .unwrap();
        // 100000 / 5000 = 20 workers (the queue keeps up), and as many partitions.
        let partitions = text
            .lines()
            .find(|l| l.contains("Kafka partitions"))
            .unwrap();
        assert!(partitions.contains(" 20 "), "{partitions}");
        assert!(
            text.contains(
                "20 workers decide 100 events in order at 100000 rps: the queue keeps up"
            ),
            "{text}"
        );
    }

    #[test]
    fn bad_inputs_are_errors_not_tables() {
        assert_eq!(
            plan("--target-rps 1000 --per-pod-rps 0"),
            Err(CapacityError::InvalidPerPodRps(0.0))
        );
        assert_eq!(
            plan("--target-rps 1000 --per-pod-rps 10 --utilization 1.5"),
            Err(CapacityError::InvalidUtilization(1.5))
        );
        assert!(
            Cli::try_parse_from([
                "plan",
                "--target-rps",
                "1",
                "--per-pod-rps",
                "1",
                "--stage",
                "mongo"
            ])
            .is_err()
        );
    }

    #[test]
    fn max_replicas_clamps_and_says_what_the_sale_gets() {
        let text = plan("--target-rps 1000000 --per-pod-rps 4000 --max-replicas 100").unwrap();
        assert!(text.contains("the sale will get only 280000 rps"), "{text}");
    }
}
