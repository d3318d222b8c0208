//! Test helpers for the built children: the pod and first container of a workload, and where a
//! file a container is told about is mounted from.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};

/// A built object that runs pods from a template.
pub trait Workload {
    fn template(&self) -> &PodTemplateSpec;
}

impl Workload for Deployment {
    fn template(&self) -> &PodTemplateSpec {
        &self.spec.as_ref().expect("a Deployment spec").template
    }
}

impl Workload for StatefulSet {
    fn template(&self) -> &PodTemplateSpec {
        &self.spec.as_ref().expect("a StatefulSet spec").template
    }
}

impl Workload for Job {
    fn template(&self) -> &PodTemplateSpec {
        &self.spec.as_ref().expect("a Job spec").template
    }
}

/// The pod spec of the workload's template.
pub fn pod(workload: &impl Workload) -> &PodSpec {
    workload.template().spec.as_ref().expect("a pod spec")
}

/// The first container of the workload's pod template.
pub fn container(workload: &impl Workload) -> &Container {
    &pod(workload).containers[0]
}

/// The container's variables by name (it must have some).
pub fn env_of(container: &Container) -> BTreeMap<String, EnvVar> {
    let vars = container.env.as_ref().expect("the container has variables");
    vars.iter().map(|e| (e.name.clone(), e.clone())).collect()
}

/// The read-only mount of the first container that `path` lies under, the pod's volume behind
/// it, and the file's path inside that volume.
pub fn mount_of<'a>(pod: &'a PodSpec, path: &str) -> (&'a VolumeMount, &'a Volume, String) {
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path.starts_with(&format!("{}/", m.mount_path)))
        .unwrap_or_else(|| panic!("{path} is in no mounted directory"));
    assert_eq!(mount.read_only, Some(true), "{path} is mounted writable");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("the pod has no volume {}", mount.name));
    (
        mount,
        volume,
        path[mount.mount_path.len() + 1..].to_string(),
    )
}
