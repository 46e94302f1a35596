//! The grants of the token endpoint, one module each, and what the grants for clients and for
//! people share. `token.rs` parses the request once into a [`TokenRequest`] (`token_request.rs`:
//! the authenticated client, the form and headers, the binding, the time) and calls the grant's `grant`
//! function with it: a new grant is a new module here and a new variant of
//! [`GrantType`](crate::crd::GrantType); what cuts across every grant (a sender constraint
//! such as DPoP) is a field of the request and of issuance, not a parameter of each grant.

pub use super::token_request::TokenRequest;

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
mod for_clients;
mod for_people;
pub mod refresh_token;
pub mod token_exchange;

pub use for_people::released_claims;
