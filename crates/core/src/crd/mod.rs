//! The three custom resources of `kauth.dev/v1alpha1` and their status helpers.

mod conditions;
pub mod limits;
mod oauth_client;
mod scope;
mod signing_key;

pub use conditions::{Conditions, condition_is_true, set_condition};
pub use oauth_client::*;
pub use scope::*;
pub use signing_key::*;

use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

/// API group of every kauth resource.
pub const GROUP: &str = "kauth.dev";

/// All CRDs as one multi-document YAML stream, as `kauth crds` prints it.
pub fn crds_yaml() -> String {
    let crds = [OAuthClient::crd(), Scope::crd(), SigningKey::crd()];
    let mut out = String::new();
    for crd in crds {
        // Single-version CRDs: merge_crds only normalises the storage flag here.
        let crd = merge_crds(vec![crd], "v1alpha1").expect("one version per CRD");
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).expect("CRDs serialise to YAML"));
    }
    out
}
