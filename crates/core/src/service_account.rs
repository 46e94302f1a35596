//! A ServiceAccount named by namespace and name: a workload's identity, which clients may be
//! bound to (the registry indexes them by it; `workload_identity` verifies the tokens).

/// A ServiceAccount, as named by a token's `sub`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccountRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceAccountRef {
    /// Parses `system:serviceaccount:<namespace>:<name>`.
    pub fn from_subject(sub: &str) -> Option<Self> {
        let rest = sub.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then(|| Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}
