//! The outbound client as `openidconnect`'s HTTP client (upstream sign-in, `kauth login`).

use super::{HttpError, Outbound};

/// An OpenID client configured from its issuer's discovery document (authorization and token
/// endpoints known; userinfo maybe).
pub type Discovered = openidconnect::core::CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

impl<'c> openidconnect::AsyncHttpClient<'c> for Outbound {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.send("openid", request))
    }
}
