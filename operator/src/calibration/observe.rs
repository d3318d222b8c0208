//! Reading a calibration attempt back from the API: is the scratch pod Ready, and how did the
//! loadgen Job end. `job_state` is pure (tested on plain objects); `observe` only fetches.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use crate::reconcile::observe::{Observed, find};
use crate::reconcile::validate::Sale;

use super::{
    CalibrationKey, JobState, LOADGEN_CONTAINER, Observation, ResultError, job_name, read_result,
    server_name,
};

/// Label the Job controller puts on its pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Longest piece of a failed container's message quoted in a condition.
const QUOTED_MESSAGE: usize = 300;

/// The attempt's scratch Deployment and Job come from the sale's children `observed` already
/// listed; only the Job's pods are fetched, and only once the Job exists.
pub async fn observe(
    client: &Client,
    sale: &Sale,
    observed: &Observed,
    key: &CalibrationKey,
    attempt: u32,
) -> Result<Observation, kube::Error> {
    let server = find(
        &observed.children.deployments,
        &server_name(&sale.name, key, attempt),
    );
    let name = job_name(&sale.name, key, attempt);
    let job = find(&observed.children.jobs, &name);
    let job_pods = match job {
        Some(_) => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &sale.namespace);
            pods.list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={name}")))
                .await?
                .items
        }
        None => Vec::new(),
    };
    Ok(Observation {
        server_ready: server_ready(server),
        job: job_state(job, &job_pods, key.slo_p99_ms),
    })
}

/// The scratch Deployment has its one pod Ready.
pub fn server_ready(deployment: Option<&Deployment>) -> bool {
    deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= 1
}

/// How the loadgen Job ended, from its pod's terminated container first (that is where the
/// result is), then from the Job's own conditions (deadline, pod never started).
pub fn job_state(job: Option<&Job>, pods: &[Pod], slo_p99_ms: u32) -> JobState {
    let Some(job) = job else {
        return JobState::Absent;
    };
    if let Some(terminated) = pods.iter().find_map(loadgen_terminated) {
        return ended(terminated, slo_p99_ms);
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if let Some(failed) = holds("Failed") {
        let why = failed
            .message
            .clone()
            .or_else(|| failed.reason.clone())
            .unwrap_or_else(|| "no reason given".into());
        return JobState::Failed(format!("the loadgen Job failed: {why}"));
    }
    if holds("Complete").is_some() {
        return JobState::Failed(
            "the loadgen Job completed but its pod, and with it the result, is gone".into(),
        );
    }
    JobState::Running
}

fn loadgen_terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .find(|s| s.name == LOADGEN_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

fn ended(terminated: &ContainerStateTerminated, slo_p99_ms: u32) -> JobState {
    let message = terminated.message.as_deref().unwrap_or_default();
    let parsed = read_result(message, slo_p99_ms);
    if terminated.exit_code == 0 {
        return match parsed {
            Ok(result) => JobState::Succeeded(result),
            Err(error) => JobState::Failed(error.to_string()),
        };
    }
    // loadgen writes its result before exiting 3 (no rate met the SLO): say that, not just "3".
    let detail = match parsed {
        Err(error @ (ResultError::NoCapacity { .. } | ResultError::AboveSlo { .. })) => {
            error.to_string()
        }
        _ if !message.trim().is_empty() => quote(message.trim()),
        _ => terminated
            .reason
            .clone()
            .unwrap_or_else(|| "no message".into()),
    };
    JobState::Failed(format!(
        "loadgen exited with code {}: {detail}",
        terminated.exit_code
    ))
}

fn quote(message: &str) -> String {
    match message.char_indices().nth(QUOTED_MESSAGE) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    fn pod(terminated: Option<serde_json::Value>) -> Pod {
        let state = match terminated {
            Some(t) => serde_json::json!({"terminated": t}),
            None => serde_json::json!({"running": {}}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j-abcde"},
            "status": {"containerStatuses": [{"name": "loadgen", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state}]}
        }))
        .unwrap()
    }

    const GOOD: &str = r#"{"perPodRps":4210.5,"sloP99Ms":200,"p99Ms":183.2,"errorRate":0.001}"#;

    #[test]
    fn a_clean_exit_with_a_result_succeeds() {
        let pods = [pod(Some(
            serde_json::json!({"exitCode": 0, "message": GOOD}),
        ))];
        match job_state(Some(&job(serde_json::json!([]))), &pods, 200) {
            JobState::Succeeded(result) => assert_eq!(result.per_pod_rps, 4210.5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_clean_exit_without_a_message_is_a_failure_not_a_guess() {
        let pods = [pod(Some(
            serde_json::json!({"exitCode": 0, "reason": "Completed"}),
        ))];
        let state = job_state(Some(&job(serde_json::json!([]))), &pods, 200);
        assert_eq!(state, JobState::Failed(ResultError::Missing.to_string()));
    }

    #[test]
    fn no_capacity_exit_says_what_loadgen_saw() {
        let message = r#"{"perPodRps":0.0,"sloP99Ms":200,"p99Ms":950.0,"errorRate":0.2}"#;
        let pods = [pod(Some(
            serde_json::json!({"exitCode": 3, "message": message}),
        ))];
        let JobState::Failed(why) = job_state(Some(&job(serde_json::json!([]))), &pods, 200) else {
            panic!()
        };
        assert!(
            why.contains("code 3") && why.contains("p99 950 ms"),
            "{why}"
        );
    }

    #[test]
    fn a_crash_quotes_its_message_or_reason() {
        let pods = [pod(Some(
            serde_json::json!({"exitCode": 137, "reason": "OOMKilled"}),
        ))];
        let JobState::Failed(why) = job_state(Some(&job(serde_json::json!([]))), &pods, 200) else {
            panic!()
        };
        assert_eq!(why, "loadgen exited with code 137: OOMKilled");
        let long = "x".repeat(1000);
        let pods = [pod(Some(
            serde_json::json!({"exitCode": 1, "message": long}),
        ))];
        let JobState::Failed(why) = job_state(Some(&job(serde_json::json!([]))), &pods, 200) else {
            panic!()
        };
        assert!(why.chars().count() < 400, "{}", why.len());
    }

    #[test]
    fn job_conditions_speak_when_no_pod_ended() {
        let failed = job(
            serde_json::json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]),
        );
        assert_eq!(
            job_state(Some(&failed), &[], 200),
            JobState::Failed("the loadgen Job failed: DeadlineExceeded".into())
        );
        let complete = job(serde_json::json!([{"type": "Complete", "status": "True"}]));
        assert!(matches!(
            job_state(Some(&complete), &[], 200),
            JobState::Failed(_)
        ));
        assert_eq!(
            job_state(Some(&job(serde_json::json!([]))), &[pod(None)], 200),
            JobState::Running
        );
        assert_eq!(job_state(None, &[], 200), JobState::Absent);
    }

    #[test]
    fn server_is_ready_with_one_ready_replica() {
        let d: Deployment =
            serde_json::from_value(serde_json::json!({"status": {"readyReplicas": 1}})).unwrap();
        assert!(server_ready(Some(&d)));
        assert!(!server_ready(Some(&Deployment::default())));
        assert!(!server_ready(None));
    }
}
