//! kauth: a Kubernetes-native OAuth 2.0 / OpenID Connect provider and client operator.

pub mod credentials;
pub mod crd;
pub mod keys;
pub mod validation;
