//! The grants of the token endpoint, one module each, and what the grants for clients and for
//! people share. `token.rs` parses `grant_type` into a [`GrantType`](crate::crd::GrantType),
//! authenticates the client once, and calls the grant's `grant` function; a new grant is a new
//! module here and a new variant there.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
mod for_clients;
mod for_people;
pub mod refresh_token;
pub mod token_exchange;

pub use for_people::released_claims;
