//! `flashsale-operator run | crd | plan`: the controller, the CRD manifest, and the capacity
//! plan for a target (issue 7).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Parser, Subcommand, ValueEnum};
use flashsale_operator::{
    context::Context, controller, crdgen, leader, metrics::Metrics, reconcile::validate::Defaults,
    server,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "flashsale-operator",
    version,
    about = "Kubernetes operator for FlashSale resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses the in-cluster config or $KUBECONFIG).
    Run(RunArgs),
    /// Print the FlashSale CustomResourceDefinition (YAML).
    Crd,
    /// Print the unit-capacity plan (pods, DB pools, max_connections, partitions) for a target.
    Plan(flashsale_operator::plan::PlanArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only these namespaces, comma-separated (default: all namespaces). A namespaced
    /// install needs no cluster-wide permission.
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    /// (`LISTEN_ADDR`, the name booking-app uses too; `--http-addr` is still accepted.)
    #[arg(
        long,
        env = "LISTEN_ADDR",
        alias = "http-addr",
        default_value = "0.0.0.0:8080"
    )]
    listen_addr: SocketAddr,
    /// booking-app image for sales that do not name one.
    #[arg(long, env = "BOOKING_APP_IMAGE", default_value_t = Defaults::default().booking_app_image)]
    booking_app_image: String,
    /// Image prefixes (registries, or registry/path) that images named in a FlashSale must start
    /// with, comma-separated; empty: any image. A sale naming another is refused (InvalidSpec).
    #[arg(long, env = "ALLOWED_IMAGE_PREFIXES", value_delimiter = ',')]
    allowed_image_prefixes: Vec<String>,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Who may scrape the sales' metrics ports: a JSON list of NetworkPolicy peers (e.g.
    /// `[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]`),
    /// written into every sale's NetworkPolicies. Unset or `[]`: any pod. The chart sets it to
    /// the operator's own pods plus `networkPolicy.metricsFrom`.
    #[arg(long, env = "METRICS_FROM", value_parser = parse_peers, default_value = "[]")]
    metrics_from: Peers,
    /// Follow observed load: read each ready booking-app pod's /metrics (by pod IP, port 9090)
    /// every 15 s and scale up when pods serve more than measured capacity x utilization.
    /// Off by default: it needs pod-network access from the operator.
    #[arg(long, env = "OBSERVE_LOAD")]
    observe_load: bool,
    /// Run the controller only while holding the leader Lease, so replicas can run side by side
    /// (a standby takes over when the leader dies). Off: this process reconciles at once.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The Lease's name (one per installation).
    #[arg(long, env = "LEASE_NAME", default_value = "flashsale-operator")]
    lease_name: String,
    /// The Lease's namespace (the operator's own); default: the kubeconfig's namespace.
    #[arg(long, env = "LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease holds without renewal: the longest a dead leader's successor waits.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = leader::DEFAULT_LEASE_DURATION_SECONDS)]
    lease_duration_seconds: u64,
    /// Seconds before expiry the leader renews (also the clock skew tolerated between nodes).
    #[arg(long, env = "LEASE_GRACE_SECONDS", default_value_t = leader::DEFAULT_LEASE_GRACE_SECONDS)]
    lease_grace_seconds: u64,
    /// Sales applying their children at once (0: unbounded); a pass that only writes a status
    /// does not wait for them.
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = flashsale_operator::controller::CONCURRENCY)]
    concurrency: u16,
}

/// `--metrics-from`, parsed.
#[derive(Clone, Debug)]
struct Peers(Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>);

fn parse_peers(text: &str) -> Result<Peers, String> {
    serde_json::from_str(text)
        .map(Peers)
        .map_err(|e| format!("not a JSON list of NetworkPolicy peers: {e}"))
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", crdgen::crd_yaml()?),
        Command::Plan(args) => print!("{}", flashsale_operator::plan::render(&args)?),
        Command::Run(args) => run(args).await?,
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let state = server::ServerState {
        metrics: metrics.clone(),
        ready: Arc::default(),
    };
    let shutdown = CancellationToken::new();
    let http = tokio::spawn(server::serve(
        args.listen_addr,
        state.clone(),
        shutdown.clone(),
    ));

    let namespaces: Vec<String> = args
        .namespaces
        .iter()
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
        .collect();
    controller::check_crd(&client, &namespaces).await?;
    state.ready.store(true, Ordering::Relaxed);
    let metrics_gauge = metrics.leader.clone();
    let mut ctx = Context::new(
        client.clone(),
        metrics,
        Defaults {
            booking_app_image: args.booking_app_image,
            metrics_from: args.metrics_from.0,
            allowed_image_prefixes: args
                .allowed_image_prefixes
                .into_iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        },
    );
    ctx = ctx.with_concurrency(args.concurrency);
    if args.observe_load {
        let counter = flashsale_operator::autoscale::scrape::HttpRequestCounter::new()?;
        ctx = ctx.with_load_observer(flashsale_operator::autoscale::scrape::LoadObserver::new(
            Arc::new(counter),
        ));
    }
    let ctx = Arc::new(ctx);
    let watched = if namespaces.is_empty() {
        "<all>".to_string()
    } else {
        namespaces.join(",")
    };
    let election = args.leader_election.then(|| leader::Election {
        lease_name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string()),
        identity: leader::identity(),
        duration_seconds: args.lease_duration_seconds,
        grace_seconds: args.lease_grace_seconds,
    });
    tracing::info!(namespaces = %watched, leader_election = args.leader_election, "starting FlashSale controller");
    let controllers = controller::run_controllers(ctx, &namespaces);
    let led = match &election {
        Some(election) => {
            let gauge = metrics_gauge.clone();
            leader::run_while_leading(
                client.clone(),
                election,
                move |leading| {
                    gauge.set(i64::from(leading));
                },
                controllers,
            )
            .await
        }
        None => {
            metrics_gauge.set(1);
            controllers.await;
            Ok(())
        }
    };

    shutdown.cancel();
    http.await??;
    led?;
    Ok(())
}
