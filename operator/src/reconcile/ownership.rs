//! The operator applies only over objects it owns (issue 14). A child's name may already be taken
//! by an object someone else made (a team's own `<sale>-booking-app` Service): force-applying over
//! it took it over, and deleting the sale then garbage-collected it. Such an object is left
//! untouched and reported as a `Conflict` (condition and Warning Event) naming it.
//! A name is looked up just before its first apply: an object created by someone else in the
//! instant between the two would still be applied over (server-side apply cannot require that an
//! object does not exist). Once created, a child is listed with the sale's owner reference and
//! checked again on every pass.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::ObjectMeta;

/// An object in the way of a child: it has the child's name and is not this sale's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub kind: &'static str,
    pub name: String,
    /// Who owns it instead, for the message: "Kind/name" of its controller, or "nothing".
    pub owner: String,
}

impl Conflict {
    pub fn new(kind: &'static str, meta: &ObjectMeta) -> Self {
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .or_else(|| meta.owner_references.iter().flatten().next())
            .map_or_else(|| "nothing".into(), |o| format!("{}/{}", o.kind, o.name));
        Self {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            owner,
        }
    }

    pub fn message(&self) -> String {
        format!(
            "{} {} already exists and is not this FlashSale's (its owner: {}); it is left untouched: delete or rename it, or rename the sale",
            self.kind, self.name, self.owner
        )
    }
}

/// The object may be applied over by the sale of uid `sale_uid`: the sale is its controller.
/// The one place this rule lives; a child kept beyond the sale (credentials kept with a volume)
/// widens it here, not in the applier.
pub fn accepts(owner_refs: &[OwnerReference], sale_uid: &str) -> bool {
    owner_refs
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == sale_uid)
}

/// `accepts` for an object's metadata, widened by the one child a sale leaves behind on purpose:
/// its credentials Secret, handed to the kept Postgres volume when the sale was deleted
/// (`teardown::keep_credentials`), which a sale of the same name adopts.
pub fn accepts_meta(meta: &ObjectMeta, sale_uid: &str, sale_name: &str) -> bool {
    accepts(
        meta.owner_references.as_deref().unwrap_or_default(),
        sale_uid,
    ) || super::teardown::is_kept_with_volume(meta, sale_name)
}

/// The message of all conflicts of a pass, one sentence each.
pub fn summary(conflicts: &[Conflict]) -> Option<String> {
    (!conflicts.is_empty()).then(|| {
        conflicts
            .iter()
            .map(Conflict::message)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "flashsale.dev/v1alpha1".into(),
            kind: "FlashSale".into(),
            name: "f0".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn only_the_sale_as_controller_is_accepted() {
        assert!(accepts(&[owner("u1", Some(true))], "u1"));
        assert!(!accepts(&[], "u1"), "owned by nothing");
        assert!(!accepts(&[owner("u2", Some(true))], "u1"), "another sale");
        assert!(
            !accepts(&[owner("u1", None)], "u1"),
            "a plain owner reference is not control"
        );
    }

    #[test]
    fn a_conflict_names_the_object_and_its_owner() {
        let unowned = ObjectMeta {
            name: Some("f0-booking-app".into()),
            ..Default::default()
        };
        let c = Conflict::new("Service", &unowned);
        assert!(
            c.message()
                .starts_with("Service f0-booking-app already exists")
        );
        assert!(c.message().contains("its owner: nothing"));
        let owned = ObjectMeta {
            owner_references: Some(vec![owner("u2", Some(true))]),
            ..unowned
        };
        assert_eq!(Conflict::new("Secret", &owned).owner, "FlashSale/f0");
        assert_eq!(summary(&[]), None);
    }
}
