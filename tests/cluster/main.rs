//! Cluster tier: `kauth run` against a real kube-apiserver. Run with `make test-cluster`
//! (KUBECONFIG, or a local etcd + kube-apiserver started by tests/cluster/up.sh). Each test
//! works in namespaces of its own and starts its own `kauth run` processes.
//!
//! `harness.rs` holds what the tests share; each other module is one area.

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod clients;
mod fapi;
mod jwks;
mod people;
mod rbac;
mod replicas;
mod scale;
mod tenancy;
mod workloads;
