//! What one write is about: the resource type, the namespace, who writes and how.

use std::sync::Arc;

use super::error::Target;
use super::fields::Scope;
use super::registry::ResourceType;

pub(crate) struct Ctx {
    pub rt: Arc<ResourceType>,
    /// Empty for cluster-scoped types.
    pub ns: String,
    pub manager: String,
    pub dry_run: bool,
    /// Test seeding: `.status` is written along with the rest and no precondition applies.
    pub seed: bool,
}

impl Ctx {
    pub fn target<'a>(&'a self, name: &'a str) -> Target<'a> {
        Target {
            group: &self.rt.group,
            kind: &self.rt.plural,
            name,
        }
    }

    pub(crate) fn kind_target<'a>(&'a self, name: &'a str) -> Target<'a> {
        Target {
            group: &self.rt.group,
            kind: &self.rt.kind,
            name,
        }
    }

    pub(crate) fn main_scope(&self) -> Scope {
        Scope::Main {
            has_status: self.rt.status_subresource && !self.seed,
        }
    }
}
