//! kauth's pure core: what the resources mean and what is served, with no I/O. The CRD types
//! (`crd`), their judgement (`fields`, `schema_bounds`, `validation`, `secret_contents`,
//! `secret_templates`), who may claim what (`claims`), the catalog that joins them
//! (`catalog`), the registry snapshot the provider serves (`registry`), client secrets
//! (`credentials`), clients' own public keys (`client_keys`), people's second factors
//! (`second_factors`), signing keys and tokens (`keys`, `tokens`), the issuer and what is
//! published under it (`issuer`, `published`), and workloads' names (`service_account`).
//!
//! This crate depends on no runtime, network, Kubernetes client or database: the compiler keeps
//! I/O out of it. The adapters (the controller, standalone) and the provider in the `kauth`
//! crate read and write the world and ask this crate what it means.

pub mod catalog;
pub mod claims;
pub mod client_keys;
pub mod crd;
pub mod credentials;
pub mod fields;
pub mod issuer;
pub mod keys;
pub mod published;
pub mod registry;
pub mod schema_bounds;
pub mod second_factors;
pub mod secret_contents;
pub mod secret_templates;
pub mod service_account;
pub mod tokens;
pub mod validation;
