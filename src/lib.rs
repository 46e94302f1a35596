//! kauth: a Kubernetes-native OAuth 2.0 / OpenID Connect provider and client operator.

// The pure core lives in its own crate (crates/core, no I/O); its modules are re-exported under
// their names, so `crate::catalog` and `kauth::catalog` mean the same everywhere.
pub use kauth_core::{
    catalog, claims, client_keys, crd, credentials, fields, issuer, keys, published, registry, schema_bounds,
    second_factors, secret_contents, secret_templates, service_account, tokens, validation,
};

pub mod audit;
pub mod cluster_auth;
pub mod connectors;
pub mod controller;
pub mod files;
pub mod followed;
pub mod login;
pub mod manifests;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod people;
pub mod provider;
pub mod revocation;
pub mod run;
pub mod secret_usage;
pub mod standalone;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod workload_identity;
