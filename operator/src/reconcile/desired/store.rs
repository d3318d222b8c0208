//! The shape the three in-cluster stores share: a one-replica StatefulSet with a data volume and
//! a headless Service (clients resolve the name straight to the pod).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{self, Component};
use super::names::DATA_VOLUME;
use super::pod::{meta, pod_security};
use crate::reconcile::validate::{InCluster, Sale};

/// What differs between the stores' pods. The container is given without its ports and its
/// mount of the data volume: `stateful_set` adds both, from `ports` and `data_dir`.
pub struct StoreShape {
    pub name: String,
    pub component: Component,
    pub container: Container,
    /// Named ports of the container, served by the Service too.
    pub ports: Vec<(&'static str, i32)>,
    /// UID the image's server runs as.
    pub uid: i64,
    /// Where the container mounts the data volume.
    pub data_dir: &'static str,
    pub extra_volumes: Vec<Volume>,
    /// Whether the data volume outlives the StatefulSet. Postgres keeps it (the bookings);
    /// Redis and Kafka hold nothing once drained, and stale counters must not come back.
    pub keep_data: bool,
}

pub fn stateful_set(sale: &Sale, store: &InCluster, shape: StoreShape) -> (StatefulSet, Service) {
    let selector = labels::selector(&sale.name, shape.component, None);
    let pod_labels = labels::labels(&sale.name, shape.component, None);
    let retention = if shape.keep_data { "Retain" } else { "Delete" };
    let mut container = shape.container;
    container.ports = Some(
        shape
            .ports
            .iter()
            .map(|(name, port)| ContainerPort {
                name: Some((*name).into()),
                container_port: *port,
                ..ContainerPort::default()
            })
            .collect(),
    );
    let data = VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: shape.data_dir.into(),
        ..VolumeMount::default()
    };
    let other_mounts = container.volume_mounts.take().into_iter().flatten();
    container.volume_mounts = Some(std::iter::once(data).chain(other_mounts).collect());
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(pod_labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: store.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), store.storage.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let sts = StatefulSet {
        metadata: meta(sale, shape.name.clone(), shape.component, None),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(shape.name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security(shape.uid, true)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    volumes: (!shape.extra_volumes.is_empty()).then_some(shape.extra_volumes),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    let service = Service {
        metadata: meta(sale, shape.name, shape.component, None),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(
                shape
                    .ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some((*name).into()),
                        port: *port,
                        target_port: Some(IntOrString::String((*name).into())),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    (sts, service)
}
