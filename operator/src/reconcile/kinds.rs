//! The kinds of child a sale has, listed once. `PerKind<F>` holds one value for each kind `K`,
//! of the type the family `F` gives (`Objects`: the desired or observed objects, `Cached`: the
//! controller's cache of the kind). `PerKind::try_zip` runs one step, generic over the kind, for
//! every kind at once: the controller's watches, `observe`'s reads and the applier's checks of
//! names all go through it, so a new kind is a new field here and a new arm nowhere.

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::runtime::reflector::Store as Cache;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;

/// What every child kind is: a namespaced API object the operator can list, watch and apply,
/// and whose events say what in them a reconcile reads (`triggers::Digest`).
pub trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + crate::triggers::Digest
    + Send
    + Sync
    + 'static
{
}
/// The kinds, by name (a blanket impl would repeat the bounds above: Rust has no trait aliases).
macro_rules! child_kinds {
    ($($kind:ty),*) => {$( impl Child for $kind {} )*};
}
child_kinds!(
    Secret,
    Service,
    StatefulSet,
    PodDisruptionBudget,
    Deployment,
    Job,
    NetworkPolicy
);

/// What a `PerKind` holds for each kind `K`.
pub trait Family {
    type Of<K: Child>: Send + Sync;
}

/// The objects of the kind (desired, or observed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects;
impl Family for Objects {
    type Of<K: Child> = Vec<K>;
}

/// The controller's cache of the kind, when one is kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cached;
impl Family for Cached {
    type Of<K: Child> = Option<Cache<K>>;
}

/// Nothing but the kind itself: for a step that needs no input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nothing;
impl Family for Nothing {
    type Of<K: Child> = ();
}

/// One `F::Of<K>` for every kind of child (the order they are applied in is the applier's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerKind<F: Family> {
    pub secrets: F::Of<Secret>,
    pub services: F::Of<Service>,
    pub stateful_sets: F::Of<StatefulSet>,
    pub pdbs: F::Of<PodDisruptionBudget>,
    pub deployments: F::Of<Deployment>,
    pub jobs: F::Of<Job>,
    pub network_policies: F::Of<NetworkPolicy>,
}

impl PerKind<Nothing> {
    /// Every kind, with nothing attached: the input of a step that needs only the kind.
    pub fn every() -> Self {
        Self::default()
    }
}

/// A step done for each kind `K` (a closure cannot be generic over the kind): given the kind's
/// values in two `PerKind`s, a future of its value in `Out`. The step itself runs in turn, kind
/// after kind; the futures it returns run together.
pub trait KindStep<'a, A: Family, B: Family> {
    type Out: Family;
    fn run<K: Child>(
        &mut self,
        a: &'a A::Of<K>,
        b: &'a B::Of<K>,
    ) -> BoxFuture<'a, Result<<Self::Out as Family>::Of<K>>>;
}

impl<A: Family> PerKind<A> {
    /// `step` on every kind's value here and in `other`; the first error ends it. (A boxed
    /// future: the compiler cannot see that an `async fn` of this shape is `Send`.)
    pub fn try_zip<'a, B: Family, S: KindStep<'a, A, B> + 'a>(
        &'a self,
        other: &'a PerKind<B>,
        step: &mut S,
    ) -> BoxFuture<'a, Result<PerKind<S::Out>>> {
        let secrets = step.run(&self.secrets, &other.secrets);
        let services = step.run(&self.services, &other.services);
        let stateful_sets = step.run(&self.stateful_sets, &other.stateful_sets);
        let pdbs = step.run(&self.pdbs, &other.pdbs);
        let deployments = step.run(&self.deployments, &other.deployments);
        let jobs = step.run(&self.jobs, &other.jobs);
        let network_policies = step.run(&self.network_policies, &other.network_policies);
        async move {
            let (secrets, services, stateful_sets, pdbs, deployments, jobs, network_policies) =
                futures::try_join!(secrets, services, stateful_sets, pdbs, deployments, jobs, network_policies)?;
            Ok(PerKind {
                secrets,
                services,
                stateful_sets,
                pdbs,
                deployments,
                jobs,
                network_policies,
            })
        }
        .boxed()
    }
}

impl<T: Send + Sync + 'static> PerKind<Same<T>> {
    /// The values of every kind, in field order, when they have one type.
    pub fn into_vec(self) -> Vec<T> {
        vec![
            self.secrets,
            self.services,
            self.stateful_sets,
            self.pdbs,
            self.deployments,
            self.jobs,
            self.network_policies,
        ]
    }
}

/// The same type `T` for every kind (e.g. the conflicts found among a kind's names).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Same<T>(std::marker::PhantomData<T>);
impl<T: Send + Sync> Family for Same<T> {
    type Of<K: Child> = T;
}
