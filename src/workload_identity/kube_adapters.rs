//! The cluster behind the verifier: the service-account issuer's keys and TokenReview, read
//! through the Kubernetes API. The verifier itself (`super`) knows only the two traits.

use futures::future::BoxFuture;
use jsonwebtoken::jwk::JwkSet;

use super::{KeySource, TokenReviewer};

/// The issuer keys of the cluster the client talks to, read through the Kubernetes API
/// (`/openid/v1/jwks`, served by the apiserver with the cluster's CA and credentials).
pub struct KubeIssuerKeys {
    client: kube::Client,
}

impl KubeIssuerKeys {
    /// Keys fetched with `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// The `issuer` of the cluster's service-account discovery document.
    pub async fn discover_issuer(client: &kube::Client) -> Result<String, String> {
        let req = axum::http::Request::get("/.well-known/openid-configuration")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let doc: serde_json::Value = client.request(req).await.map_err(|e| e.to_string())?;
        doc["issuer"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "the discovery document has no issuer".into())
    }
}

impl KeySource for KubeIssuerKeys {
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>> {
        Box::pin(async move {
            let req = axum::http::Request::get("/openid/v1/jwks")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            self.client.request::<JwkSet>(req).await.map_err(|e| e.to_string())
        })
    }
}

/// TokenReview through the Kubernetes API.
pub struct KubeTokenReviewer {
    client: kube::Client,
}

impl KubeTokenReviewer {
    /// Reviews with `client` (needs `create` on `tokenreviews`).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str, audiences: &'a [String]) -> BoxFuture<'a, Result<Option<String>, String>> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        Box::pin(async move {
            let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_string(),
                    audiences: Some(audiences.to_vec()),
                },
                ..Default::default()
            };
            let answer = api
                .create(&kube::api::PostParams::default(), &review)
                .await
                .map_err(|e| e.to_string())?;
            let status = answer.status.unwrap_or_default();
            Ok(status
                .authenticated
                .unwrap_or(false)
                .then(|| status.user.and_then(|u| u.username))
                .flatten())
        })
    }
}
