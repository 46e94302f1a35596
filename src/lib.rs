//! kauth: a Kubernetes-native OAuth 2.0 / OpenID Connect provider and client operator.

pub mod catalog;
pub mod claims;
pub mod cluster_auth;
pub mod connectors;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod followed;
pub mod issuer;
pub mod keys;
pub mod login;
pub mod manifests;
pub mod metrics;
pub mod oidc_http;
pub mod people;
pub mod provider;
pub mod registry;
pub mod revocation;
pub mod run;
pub mod standalone;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod validation;
pub mod workload_identity;
