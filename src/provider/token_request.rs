//! One token request as every grant and issuance see it: read and checked once by the token
//! endpoint. It sits below the grants and issuance (both take it), so a concern of every token
//! (a sender constraint, see `sender.rs`) is a field here and a step of issuance, not a
//! parameter of each grant.

use std::sync::Arc;

use axum::http::HeaderMap;
use jiff::Timestamp;

use super::form::Form;
use super::sender::Binding;
use super::state::ProviderState;
use crate::registry::{RegisteredClient, Snapshot};

/// One token request, read and checked once by the token endpoint.
pub struct TokenRequest<'a> {
    /// What the provider shares.
    pub state: &'a ProviderState,
    /// The clients, scopes and keys of this request (one snapshot for all of it).
    pub snapshot: &'a Snapshot,
    /// The request's headers.
    #[allow(dead_code)]
    pub headers: &'a HeaderMap,
    /// What its tokens are bound to, decided once (see [`super::sender`]).
    pub binding: Binding,
    /// Its form.
    pub form: &'a Form,
    /// The client: authenticated by the endpoint, or identified by a grant that does so itself
    /// (see [`GrantType::identifies_its_client`](crate::crd::GrantType::identifies_its_client)),
    /// and allowed this grant type.
    pub client: Arc<RegisteredClient>,
    /// When the request is judged.
    pub now: Timestamp,
}
