//! The grants of the token endpoint, one module each, and what the grants for clients and for
//! people share. `token.rs` parses the request once into a [`TokenRequest`] (the grant type,
//! the authenticated client, the form and headers, the time) and calls the grant's `grant`
//! function with it: a new grant is a new module here and a new variant of
//! [`GrantType`](crate::crd::GrantType); what cuts across every grant (a sender constraint
//! such as DPoP) is a field of the request and of issuance, not a parameter of each grant.

use std::sync::Arc;

use axum::http::HeaderMap;
use jiff::Timestamp;

use crate::provider::form::Form;
use crate::provider::state::ProviderState;
use crate::registry::{RegisteredClient, Snapshot};

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
mod for_clients;
mod for_people;
pub mod refresh_token;
pub mod token_exchange;

pub use for_people::released_claims;

/// One token request, read and checked once by the token endpoint.
pub struct TokenRequest<'a> {
    /// What the provider shares.
    pub state: &'a ProviderState,
    /// The clients, scopes and keys of this request (one snapshot for all of it).
    pub snapshot: &'a Snapshot,
    /// The request's headers (a sender constraint's proof rides in one: DPoP, next).
    #[allow(dead_code)]
    pub headers: &'a HeaderMap,
    /// Its form.
    pub form: &'a Form,
    /// The client: authenticated by the endpoint, or identified by a grant that does so itself
    /// (see [`GrantType::identifies_its_client`](crate::crd::GrantType::identifies_its_client)),
    /// and allowed this grant type.
    pub client: Arc<RegisteredClient>,
    /// When the request is judged.
    pub now: Timestamp,
}
