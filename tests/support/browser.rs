//! A browser for the HTTP tier: a cookie-keeping client that walks kauth's sign-in and
//! consent pages step by step.

use reqwest::StatusCode;
use reqwest::redirect::Policy;

/// A browser: keeps cookies, does not follow redirects (each step is checked).
pub struct Browser {
    pub http: reqwest::Client,
}

/// One response, reduced to what the flow needs.
#[derive(Debug)]
pub struct Step {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn step(r: reqwest::Response) -> Step {
        let status = r.status();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        Step {
            status,
            location,
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&self, url: &str) -> Step {
        Self::step(self.http.get(url).send().await.unwrap()).await
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Step {
        Self::step(self.http.post(url).form(form).send().await.unwrap()).await
    }

    /// Posts the sign-in form of the pending `request` (with its `csrf` token) as `user`.
    pub async fn log_in(&self, issuer: &str, request: &str, csrf: &str, (username, password): (&str, &str)) -> Step {
        let form = [
            ("request", request),
            ("csrf", csrf),
            ("username", username),
            ("password", password),
        ];
        self.post(&format!("{issuer}/login"), &form).await
    }

    /// Follows the flow from `url` through the login and consent pages, signing in as
    /// `user` and allowing everything; returns where kauth finally sent the browser.
    pub async fn sign_in(&self, issuer: &str, url: &str, user: (&str, &str)) -> url::Url {
        let mut step = self.get(url).await;
        loop {
            assert_eq!(step.status, StatusCode::SEE_OTHER, "{}", step.body);
            let to = step.location.clone().unwrap();
            if !to.starts_with(&format!("{issuer}/")) {
                return url::Url::parse(&to).unwrap();
            }
            let page = self.get(&to).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            let request = super::hidden_field(&page.body, "request");
            let csrf = super::hidden_field(&page.body, "csrf");
            step = if to.contains("/login") {
                let form = [
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("username", user.0),
                    ("password", user.1),
                ];
                self.post(&format!("{}/login", issuer), &form).await
            } else {
                let form = [
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("decision", "allow"),
                ];
                self.post(&format!("{}/consent", issuer), &form).await
            };
        }
    }
}

impl Browser {
    /// Types a device's `user_code` at /device, signs in as `user` when asked, and answers
    /// the confirmation with `decision` (`allow` or `deny`). Returns the pages it went
    /// through (`/login`, `/consent`) and the last response.
    pub async fn answer_device(
        &self,
        issuer: &str,
        user_code: &str,
        user: (&str, &str),
        decision: &str,
    ) -> (Vec<String>, Step) {
        let mut visited = Vec::new();
        let mut step = self
            .post(&format!("{issuer}/device"), &[("user_code", user_code)])
            .await;
        while step.status == StatusCode::SEE_OTHER {
            let to = step.location.clone().unwrap();
            let page = self.get(&to).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            let request = super::hidden_field(&page.body, "request");
            let csrf = super::hidden_field(&page.body, "csrf");
            let path = url::Url::parse(&to).unwrap().path().to_string();
            visited.push(path.clone());
            step = if path.ends_with("/login") {
                let form = [
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("username", user.0),
                    ("password", user.1),
                ];
                self.post(&format!("{issuer}/login"), &form).await
            } else {
                let form = [
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("decision", decision),
                ];
                self.post(&format!("{issuer}/consent"), &form).await
            };
        }
        (visited, step)
    }
}

pub fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
