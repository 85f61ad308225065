//! 64-bit digests that stand in for strings in the controllers' per-route memories: a `String` (or a
//! whole `ObjectRef`) per route, held for a leadership term in several maps, cost more than many of the
//! facts kept under it. Two keys sharing a digest need two of the same 64 bits; each memory that uses
//! one says what such a collision would cost.

use std::hash::{Hash, Hasher};

/// A digest of `value`: the same for equal values within a process.
pub fn of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// The digest of an object's namespace and name: what controllers queue and remember objects by.
pub fn of_name(namespace: Option<&str>, name: &str) -> u64 {
    of(&(namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_different_namespaces_or_none_have_different_digests() {
        assert_eq!(of_name(Some("apps"), "ios"), of_name(Some("apps"), "ios"));
        assert_ne!(of_name(Some("apps"), "ios"), of_name(Some("web"), "ios"));
        assert_ne!(of_name(Some("apps"), "ios"), of_name(None, "ios"));
        assert_ne!(
            of_name(Some("apps"), "ios"),
            of_name(Some("apps"), "android")
        );
    }
}
