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

/// The secret an enrollment page shows, as bytes.
pub fn enrolled_secret(page: &str) -> Vec<u8> {
    let start = page.find(r#"<code id="secret">"#).expect("an enrollment page") + r#"<code id="secret">"#.len();
    let base32 = &page[start..start + page[start..].find('<').unwrap()];
    kauth::second_factors::secret_from_base32(base32).unwrap()
}

/// Now, in Unix seconds (what a TOTP app reads).
pub fn now() -> u64 {
    jiff::Timestamp::now().as_second() as u64
}

/// Where a walk through the pages ended, and what it saw on the way.
pub struct Walk {
    /// The client's redirect URI with the code, or the last page.
    pub end: Result<url::Url, Step>,
    pub pages: Vec<String>,
    pub recovery_codes: Vec<String>,
}

/// Walks the pages from `url`: the password when asked, `second` for the code page (given
/// the page), consent allowed; stops at the client's redirect URI or at a page that is not
/// a redirect.
pub async fn walk(
    b: &Browser,
    p: &super::TestProvider,
    url: &str,
    user: (&str, &str),
    second: impl Fn(&str) -> String,
) -> Walk {
    let mut walk = Walk {
        end: Err(Step {
            status: StatusCode::OK,
            location: None,
            body: String::new(),
        }),
        pages: Vec::new(),
        recovery_codes: Vec::new(),
    };
    let mut step = b.get(url).await;
    loop {
        let to = match (&step.status, &step.location) {
            (&StatusCode::SEE_OTHER | &StatusCode::FOUND, Some(to)) => to.clone(),
            // The recovery codes page: remember them, follow its link.
            (&StatusCode::OK, None) if step.body.contains("recovery-codes") => {
                let list = &step.body[step.body.find("recovery-codes").unwrap()..];
                walk.recovery_codes = list
                    .split("<code>")
                    .skip(1)
                    .map(|c| c[..c.find('<').unwrap()].to_string())
                    .collect();
                let start = step.body.find(r#"id="continue" href=""#).unwrap() + r#"id="continue" href=""#.len();
                let href = step.body[start..start + step.body[start..].find('"').unwrap()].replace("&amp;", "&");
                walk.pages.push("recovery codes".into());
                step = Step {
                    status: StatusCode::SEE_OTHER,
                    location: Some(href),
                    body: String::new(),
                };
                continue;
            }
            _ => {
                walk.end = Err(step);
                return walk;
            }
        };
        // The client's redirect URI, or the account page a sign-in to it comes back to.
        if !to.starts_with(&format!("{}/", p.url)) || to == format!("{}/account", p.url) {
            walk.end = Ok(url::Url::parse(&to).unwrap());
            return walk;
        }
        let page = b.get(&to).await;
        if page.status == StatusCode::SEE_OTHER || page.status == StatusCode::FOUND {
            // Not a page yet (an /authorize on the way in): follow it.
            step = page;
            continue;
        }
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let request = super::hidden_field(&page.body, "request");
        let csrf = super::hidden_field(&page.body, "csrf");
        let path = url::Url::parse(&to).unwrap().path().to_string();
        walk.pages.push(path.clone());
        step = if path.ends_with("/login/second-factor") {
            let code = second(&page.body);
            let mut form = vec![
                ("request", request.as_str()),
                ("csrf", csrf.as_str()),
                ("code", code.as_str()),
            ];
            let enroll = page
                .body
                .contains(r#"name="enroll""#)
                .then(|| super::hidden_field(&page.body, "enroll"));
            if let Some(enroll) = &enroll {
                form.push(("enroll", enroll));
            }
            b.post(&format!("{}/login/second-factor", p.url), &form).await
        } else if path.ends_with("/login") {
            b.log_in(&p.url, &request, &csrf, user).await
        } else {
            let form = [
                ("request", request.as_str()),
                ("csrf", csrf.as_str()),
                ("decision", "allow"),
            ];
            b.post(&format!("{}/consent", p.url), &form).await
        };
    }
}
