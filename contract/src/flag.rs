//! Long flags the operator passes to booking-app, without the leading `--` (as clap's
//! `long = ...` takes them); `arg` writes one as a command-line argument.

/// `booking-app worker --drain`: process the stage's backlog (redis: every stream entry written
/// behind and acknowledged; kafka: every request decided, group lag 0), then exit 0. The
/// operator runs it as a Job before switching a live sale to another stage.
pub const DRAIN: &str = "drain";

/// `booking-app loadgen`: the calibration Job's flags.
pub const URL: &str = "url";
pub const FIND_CAPACITY: &str = "find-capacity";
pub const SLO_P99_MS: &str = "slo-p99-ms";
pub const TERMINATION_MESSAGE_PATH: &str = "termination-message-path";
pub const NO_PROGRESS: &str = "no-progress";

/// `--<long>`.
pub fn arg(long: &str) -> String {
    format!("--{long}")
}
