//! The server-rendered pages people see: sign-in, consent, sign-out, the account page and
//! errors. Plain HTML forms (no JavaScript but the passkey ceremony's one script, on the pages
//! that offer passkeys, and nothing else works differently without it), labelled fields,
//! visible focus, text contrast above WCAG AA, and every value escaped by askama.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::browser::{PASSKEY_SCRIPT, page_headers};

/// Shared look: system fonts, one column, a strong focus ring. Inline, because the pages'
/// Content-Security-Policy allows no other source.
const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1a1a1a;background:#f4f5f7}
main{max-width:26rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.15)}
h1{font-size:1.4rem;margin:0 0 1rem}
p.meta{color:#4a4a4a;margin:0 0 1.25rem}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=text],input[type=password]{width:100%;padding:.6rem;border:1px solid #6b6b6b;border-radius:4px;font:inherit}
button{font:inherit;padding:.6rem 1.2rem;border-radius:4px;border:1px solid #0b4f9c;cursor:pointer;margin-top:1.25rem}
button.primary{background:#0b4f9c;color:#fff}
button.secondary{background:#fff;color:#0b4f9c}
:focus-visible{outline:3px solid #e8a200;outline-offset:2px}
.alert{border-left:4px solid #b00020;background:#fdecee;color:#5c0011;padding:.75rem;margin-bottom:1rem}
ul.scopes{padding-left:1.2rem}
ul.scopes li{margin:.4rem 0}
code{font-size:.9em;color:#333}
p.or{text-align:center;color:#4a4a4a;margin:1.25rem 0 .5rem}
ul.upstream{list-style:none;padding:0;margin:0}
a.button{display:block;text-align:center;padding:.6rem;border:1px solid #0b4f9c;border-radius:4px;color:#0b4f9c;text-decoration:none;margin-top:.5rem}
";

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in · {{ client }}</title><style>{{ style|safe }}</style></head>
<body><main>
<h1>Sign in</h1>
<p class="meta">to continue to <strong>{{ client }}</strong></p>
{% if let Some(error) = error %}<div class="alert" role="alert" id="error">{{ error }}</div>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="request" value="{{ request }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{{ username }}" autocomplete="username" autocapitalize="none" spellcheck="false" required{% if username.is_empty() %} autofocus{% endif %}{% if error.is_some() %} aria-describedby="error"{% endif %}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required{% if !username.is_empty() %} autofocus{% endif %}>
<button type="submit" class="primary">Sign in</button>
</form>
{% if let Some(pk) = passkey %}<p class="or">or</p>
<form method="post" action="{{ pk.action }}" data-passkey="get" data-options="{{ pk.options }}">
<input type="hidden" name="request" value="{{ request }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="ceremony" value="{{ pk.sealed }}">
<input type="hidden" name="credential" value="">
<button type="submit" class="secondary" id="passkey">Sign in with a passkey</button>
<p role="status" class="meta"></p>
</form>{% endif %}
{% if !upstream.is_empty() %}<p class="or">or</p>
<ul class="upstream">{% for (name, href) in upstream %}<li><a class="button" href="{{ href }}">Sign in with {{ name }}</a></li>{% endfor %}</ul>{% endif %}
</main>{% if passkey.is_some() %}<script>{{ script|safe }}</script>{% endif %}</body></html>"#
)]
struct LoginPage<'a> {
    style: &'a str,
    client: &'a str,
    action: &'a str,
    request: &'a str,
    csrf: &'a str,
    username: &'a str,
    error: Option<&'a str>,
    upstream: &'a [(String, String)],
    passkey: Option<&'a PasskeyForm>,
    script: &'a str,
}

/// A form that runs a passkey ceremony: where it posts, the options the script hands the
/// browser (JSON), and the ceremony's sealed state.
pub struct PasskeyForm {
    pub action: String,
    pub options: String,
    pub sealed: String,
}

/// What the sign-in form shows and posts.
pub struct LoginForm<'a> {
    pub client: &'a str,
    pub action: &'a str,
    pub request: &'a str,
    pub csrf: &'a str,
    /// Prefilled username (`login_hint`, or what was typed).
    pub username: &'a str,
    /// Upstream providers: (name, start URL).
    pub upstream: &'a [(String, String)],
    /// Sign in with a passkey instead (when passkeys are on).
    pub passkey: Option<&'a PasskeyForm>,
}

/// One line on the consent page.
pub struct ScopeLine {
    pub value: String,
    pub description: String,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Allow access · {{ client }}</title><style>{{ style|safe }}</style></head>
<body><main>
<h1>Allow {{ client }}?</h1>
<p class="meta">Signed in as <strong>{{ person }}</strong>. {{ client }} asks to:</p>
<ul class="scopes">
{% for s in scopes %}<li>{{ s.description }} <code>{{ s.value }}</code></li>
{% endfor %}</ul>
<form method="post" action="{{ action }}">
<input type="hidden" name="request" value="{{ request }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<button type="submit" name="decision" value="allow" class="primary" autofocus>Allow</button>
<button type="submit" name="decision" value="deny" class="secondary">Deny</button>
</form>
</main></body></html>"#
)]
struct ConsentPage<'a> {
    style: &'a str,
    client: &'a str,
    person: &'a str,
    scopes: &'a [ScopeLine],
    action: &'a str,
    request: &'a str,
    csrf: &'a str,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in a device</title><style>{{ style|safe }}</style></head>
<body><main>
<h1>Sign in a device</h1>
<p class="meta">Enter the code the device shows you.</p>
{% if let Some(error) = error %}<div class="alert" role="alert" id="error">{{ error }}</div>{% endif %}
<form method="post" action="{{ action }}">
<label for="user_code">Code</label>
<input type="text" id="user_code" name="user_code" value="{{ user_code }}" autocomplete="one-time-code" autocapitalize="characters" spellcheck="false" required autofocus{% if error.is_some() %} aria-describedby="error"{% endif %}>
<button type="submit" class="primary">Continue</button>
</form>
</main></body></html>"#
)]
struct DevicePage<'a> {
    style: &'a str,
    action: &'a str,
    user_code: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{ title }}</title><style>{{ style|safe }}</style></head>
<body><main>
<h1>{{ title }}</h1>
<p{% if alert %} class="alert" role="alert"{% endif %}>{{ text }}</p>
{% if let Some(link) = link %}<p><a href="{{ link }}">{{ link }}</a></p>
{% endif %}{% if let Some((action, csrf)) = confirm %}<form method="post" action="{{ action }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
{% for (name, value) in carried %}<input type="hidden" name="{{ name }}" value="{{ value }}">
{% endfor %}
<button type="submit" name="confirm" value="yes" class="primary" autofocus>Sign out</button>
</form>{% endif %}
</main></body></html>"#
)]
struct MessagePage<'a> {
    style: &'a str,
    title: &'a str,
    text: &'a str,
    alert: bool,
    /// A link under the text.
    link: Option<&'a str>,
    confirm: Option<(&'a str, &'a str)>,
    /// Parameters the confirmation form passes on.
    carried: &'a [(&'a str, &'a str)],
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Second factor · {{ client }}</title><style>{{ style|safe }}</style></head>
<body><main>
{% if let Some(e) = enroll %}<h1>Set up a second factor</h1>
<p class="meta">Signing in to <strong>{{ client }}</strong> needs a code from an authenticator app as well as your password. Add this account to your app, then enter the code it shows.</p>
<p><a href="{{ e.uri }}">Add to an authenticator app on this device</a></p>
<p>Or enter this key in the app: <code id="secret">{{ e.secret }}</code></p>
{% else %}<h1>{% if code %}Enter your code{% else %}Use your passkey{% endif %}</h1>
<p class="meta">to continue to <strong>{{ client }}</strong>, as <strong>{{ person }}</strong></p>
{% endif %}{% if let Some(error) = error %}<div class="alert" role="alert" id="error">{{ error }}</div>{% endif %}
{% if let Some(pk) = passkey %}<form method="post" action="{{ pk.action }}" data-passkey="get" data-options="{{ pk.options }}">
<input type="hidden" name="request" value="{{ request }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="ceremony" value="{{ pk.sealed }}">
<input type="hidden" name="credential" value="">
<button type="submit" class="primary" id="passkey">Use a passkey</button>
<p role="status" class="meta"></p>
</form>{% if code %}<p class="or">or</p>{% endif %}
{% endif %}{% if code %}<form method="post" action="{{ action }}">
<input type="hidden" name="request" value="{{ request }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
{% if let Some(e) = enroll %}<input type="hidden" name="enroll" value="{{ e.sealed }}">
{% endif %}<label for="code">{% if enroll.is_some() %}Code from the app{% else %}Code from your authenticator app, or a recovery code{% endif %}</label>
<input type="text" id="code" name="code" autocomplete="one-time-code" autocapitalize="none" spellcheck="false" required autofocus{% if error.is_some() %} aria-describedby="error"{% endif %}>
<button type="submit" class="primary">Continue</button>
</form>{% endif %}
</main>{% if passkey.is_some() %}<script>{{ script|safe }}</script>{% endif %}</body></html>"#
)]
struct SecondFactorPage<'a> {
    style: &'a str,
    client: &'a str,
    person: &'a str,
    action: &'a str,
    request: &'a str,
    csrf: &'a str,
    error: Option<&'a str>,
    enroll: Option<&'a Enrollment>,
    /// The code field (TOTP or a recovery code) is shown.
    code: bool,
    passkey: Option<&'a PasskeyForm>,
    script: &'a str,
}

/// What the enrollment form shows and carries: the `otpauth://` URI, the key in base32, and the
/// secret sealed for this person and request (so the page keeps no state on the server).
pub struct Enrollment {
    pub uri: String,
    pub secret: String,
    pub sealed: String,
}

/// What the second-factor form shows and posts.
pub struct SecondFactorForm<'a> {
    pub client: &'a str,
    pub person: &'a str,
    pub action: &'a str,
    pub request: &'a str,
    pub csrf: &'a str,
    /// Set while the person enrolls.
    pub enroll: Option<&'a Enrollment>,
    /// The person has an authenticator app (or is enrolling one): ask for its code.
    pub code: bool,
    /// Use one of the person's passkeys.
    pub passkey: Option<&'a PasskeyForm>,
}

/// The second-factor form of a pending request: a code, or an enrollment.
pub fn second_factor(status: StatusCode, form: &SecondFactorForm<'_>, error: Option<&str>) -> Response {
    let p = SecondFactorPage {
        style: STYLE,
        client: form.client,
        person: form.person,
        action: form.action,
        request: form.request,
        csrf: form.csrf,
        error,
        enroll: form.enroll,
        code: form.code,
        passkey: form.passkey,
        script: PASSKEY_SCRIPT,
    };
    page(status, p.render())
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Recovery codes</title><style>{{ style|safe }}</style></head>
<body><main>
<h1>Save your recovery codes</h1>
<p class="meta">Each lets you in once if you lose your authenticator app. kauth shows them only now: keep them somewhere safe.</p>
<ul class="scopes" id="recovery-codes">
{% for c in codes %}<li><code>{{ c }}</code></li>
{% endfor %}</ul>
<a class="button" id="continue" href="{{ next }}">I saved them: continue</a>
</main></body></html>"#
)]
struct RecoveryCodesPage<'a> {
    style: &'a str,
    codes: &'a [String],
    next: &'a str,
}

/// The recovery codes of a fresh enrollment, shown once, with the way on.
pub fn recovery_codes(codes: &[String], next: &str) -> Response {
    let p = RecoveryCodesPage {
        style: STYLE,
        codes,
        next,
    };
    page(StatusCode::OK, p.render())
}

fn page(status: StatusCode, rendered: Result<String, askama::Error>) -> Response {
    let mut response = match rendered {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a page");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    };
    page_headers(&mut response);
    response
}

/// The sign-in form for a pending request.
pub fn login(status: StatusCode, form: &LoginForm<'_>, error: Option<&str>) -> Response {
    let p = LoginPage {
        style: STYLE,
        client: form.client,
        action: form.action,
        request: form.request,
        csrf: form.csrf,
        username: form.username,
        error,
        upstream: form.upstream,
        passkey: form.passkey,
        script: PASSKEY_SCRIPT,
    };
    page(status, p.render())
}

/// The form where a person types the code a device shows (RFC 8628 §3.3).
pub fn device(status: StatusCode, action: &str, user_code: &str, error: Option<&str>) -> Response {
    let p = DevicePage {
        style: STYLE,
        action,
        user_code,
        error,
    };
    page(status, p.render())
}

/// The consent form for a pending request.
pub fn consent(client: &str, person: &str, scopes: &[ScopeLine], action: &str, request: &str, csrf: &str) -> Response {
    let p = ConsentPage {
        style: STYLE,
        client,
        person,
        scopes,
        action,
        request,
        csrf,
    };
    page(StatusCode::OK, p.render())
}

/// An error page: what went wrong, and no link back to a client that may not be genuine.
pub fn error(status: StatusCode, text: &str) -> Response {
    titled_error(status, "Sign-in failed", text)
}

/// An error page of sign-out (RP-initiated logout).
pub fn logout_error(status: StatusCode, text: &str) -> Response {
    titled_error(status, "Sign-out failed", text)
}

fn titled_error(status: StatusCode, title: &str, text: &str) -> Response {
    let p = MessagePage {
        style: STYLE,
        title,
        text,
        alert: true,
        link: None,
        confirm: None,
        carried: &[],
    };
    page(status, p.render())
}

/// A plain message.
pub fn message(title: &str, text: &str) -> Response {
    let p = MessagePage {
        style: STYLE,
        title,
        text,
        alert: false,
        link: None,
        confirm: None,
        carried: &[],
    };
    page(StatusCode::OK, p.render())
}

/// A page of `status` titled `title` with `text` and a `link` under it (404s of browser paths,
/// the landing page).
pub fn notice(status: StatusCode, title: &str, text: &str, link: &str) -> Response {
    let p = MessagePage {
        style: STYLE,
        title,
        text,
        alert: false,
        link: Some(link),
        confirm: None,
        carried: &[],
    };
    page(status, p.render())
}

/// Asks whether to sign out (a logout request that did not prove where it came from),
/// passing the request's `carried` parameters on.
pub fn confirm_logout(action: &str, csrf: &str, carried: &[(&str, &str)]) -> Response {
    let p = MessagePage {
        style: STYLE,
        title: "Sign out?",
        text: "Sign out of kauth on this browser.",
        alert: false,
        link: None,
        confirm: Some((action, csrf)),
        carried,
    };
    page(StatusCode::OK, p.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_passkey_script_a_page_carries_is_the_one_its_policy_allows() {
        let passkey = PasskeyForm {
            action: "/login/passkey".into(),
            options: r#"{"publicKey":{"challenge":"<"x">"}}"#.into(),
            sealed: "sealed".into(),
        };
        let form = LoginForm {
            client: "shop/web",
            action: "/login",
            request: "req",
            csrf: "tok",
            username: "",
            upstream: &[],
            passkey: Some(&passkey),
        };
        let r = login(StatusCode::OK, &form, None);
        let policy = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        let html = body(r).await;
        let script = html
            .split("<script>")
            .nth(1)
            .unwrap()
            .split("</script>")
            .next()
            .unwrap();
        use base64::Engine;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, script.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(policy.contains(&format!("script-src 'sha256-{hash}'")), "{policy}");
        assert_eq!(html.matches("<script").count(), 1);
        // The options reach the script as an attribute, escaped (JSON with quotes and brackets).
        assert!(html.contains("data-options=\"{&#34;publicKey&#34;"), "{html}");
        assert!(!html.contains("<\"x\">"), "{html}");
        // A page without a passkey form carries no script.
        let plain = LoginForm { passkey: None, ..form };
        assert!(!body(login(StatusCode::OK, &plain, None)).await.contains("<script"));
    }

    #[tokio::test]
    async fn pages_escape_what_they_show_and_label_their_fields() {
        let upstream = [(
            "Corp <SSO>".to_string(),
            "/connector/corp/start?request=req".to_string(),
        )];
        let form = LoginForm {
            client: "<script>x</script>",
            action: "/login",
            request: "req",
            csrf: "tok",
            username: "a\"b",
            upstream: &upstream,
            passkey: None,
        };
        let r = login(StatusCode::UNAUTHORIZED, &form, Some("wrong username or password"));
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        let html = body(r).await;
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&#60;script&#62;"), "{html}");
        assert!(
            html.contains(r#"value="a&#34;b""#) || html.contains(r#"value="a&quot;b""#),
            "{html}"
        );
        assert!(html.contains(r#"<label for="username">"#) && html.contains(r#"id="username""#));
        assert!(html.contains(r#"role="alert""#));
        assert!(html.contains("Sign in with Corp &#60;SSO&#62;"), "{html}");
        let lines = [ScopeLine {
            value: "orders.read".into(),
            description: "Read <b>orders</b>".into(),
        }];
        let html = body(consent("shop/web", "alice", &lines, "/consent", "r", "c")).await;
        assert!(html.contains("Read &#60;b&#62;orders&#60;/b&#62;"), "{html}");
        assert!(html.contains(r#"value="allow""#) && html.contains(r#"value="deny""#));
    }
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Your account</title><style>{{ style|safe }}</style></head>
<body><main>
<h1>Your account</h1>
<p class="meta">Signed in as <strong>{{ v.person }}</strong></p>
<h2>Apps you allowed</h2>
{% if v.apps.is_empty() %}<p>No apps yet.</p>
{% else %}<ul class="scopes">
{% for a in v.apps %}<li><strong>{{ a.name }}</strong><br>
{% if !a.scopes.is_empty() %}<code>{{ a.scopes }}</code><br>{% endif %}allowed {{ a.allowed }}{% if a.refresh_tokens > 0 %}, {{ a.refresh_tokens }} refresh token(s){% endif %}
<form method="post" action="{{ v.revoke_action }}">
<input type="hidden" name="csrf" value="{{ v.csrf }}">
<input type="hidden" name="client" value="{{ a.client_uid }}">
<button type="submit" class="secondary">Revoke access</button>
</form></li>
{% endfor %}</ul>
{% endif %}<h2>Where you are signed in</h2>
<ul class="scopes">
{% for s in v.sessions %}<li>since {{ s.signed_in }}, with {{ s.how }}{% if s.this_browser %} (this browser){% else %}
<form method="post" action="{{ v.end_session_action }}">
<input type="hidden" name="csrf" value="{{ v.csrf }}">
<input type="hidden" name="sid" value="{{ s.sid }}">
<button type="submit" class="secondary">Sign out there</button>
</form>{% endif %}</li>
{% endfor %}</ul>
<form method="post" action="{{ v.sign_out_action }}">
<input type="hidden" name="csrf" value="{{ v.csrf }}">
<button type="submit" class="secondary">Sign out everywhere</button>
</form>
<h2>Second factor</h2>
{% if let Some(left) = v.second_factor %}<p>An authenticator app is set up; {{ left }} recovery code(s) left.</p>
<form method="post" action="{{ v.remove_factor_action }}">
<input type="hidden" name="csrf" value="{{ v.csrf }}">
<button type="submit" class="secondary">Remove the authenticator app</button>
</form>
{% else %}<p>No authenticator app set up. An app that requires a second factor will ask you to add one when you next sign in to it.</p>
{% endif %}{% if let Some(pk) = v.passkeys %}<h2>Passkeys</h2>
{% if pk.registered.is_empty() %}<p>None yet. A passkey signs you in without a password, with your device's screen lock or security key.</p>
{% else %}<ul class="scopes" id="passkeys">
{% for p in pk.registered %}<li><strong>{{ p.name }}</strong>, added {{ p.added }}, {{ p.used }}
<form method="post" action="{{ pk.remove_action }}">
<input type="hidden" name="csrf" value="{{ v.csrf }}">
<input type="hidden" name="passkey" value="{{ p.id }}">
<button type="submit" class="secondary">Remove</button>
</form></li>
{% endfor %}</ul>
{% endif %}{% if let Some(add) = pk.add %}<form method="post" action="{{ add.action }}" data-passkey="create" data-options="{{ add.options }}">
<input type="hidden" name="csrf" value="{{ v.csrf }}">
<input type="hidden" name="ceremony" value="{{ add.sealed }}">
<input type="hidden" name="credential" value="">
<label for="passkey-name">Name for a new passkey</label>
<input type="text" id="passkey-name" name="name" maxlength="60" placeholder="e.g. work laptop">
<button type="submit" class="primary" id="add-passkey">Add a passkey</button>
<p role="status" class="meta"></p>
</form>{% endif %}{% endif %}</main>{% if v.passkeys.is_some() %}<script>{{ script|safe }}</script>{% endif %}</body></html>"#
)]
struct AccountPage<'a> {
    style: &'a str,
    v: &'a AccountView,
    script: &'a str,
}

/// What the account page shows.
pub struct AccountView {
    pub person: String,
    /// The forms' CSRF token.
    pub csrf: String,
    pub revoke_action: String,
    pub sign_out_action: String,
    pub end_session_action: String,
    pub remove_factor_action: String,
    pub sessions: Vec<AccountSession>,
    pub apps: Vec<AccountApp>,
    /// Recovery codes left, when a second factor is set up.
    pub second_factor: Option<i64>,
    /// The person's passkeys, when passkeys are on.
    pub passkeys: Option<AccountPasskeys>,
}

/// The passkeys section of the account page.
pub struct AccountPasskeys {
    pub registered: Vec<AccountPasskey>,
    pub remove_action: String,
    /// Adding one (not when the person has the most allowed).
    pub add: Option<PasskeyForm>,
}

/// One passkey on the account page.
pub struct AccountPasskey {
    pub id: String,
    pub name: String,
    pub added: String,
    pub used: String,
}

/// One session on the account page.
pub struct AccountSession {
    /// Its `sid`: the handle the page names it by (never its stored id).
    pub sid: String,
    pub signed_in: String,
    pub how: String,
    pub this_browser: bool,
}

/// One allowed app on the account page.
pub struct AccountApp {
    pub name: String,
    pub client_uid: String,
    pub scopes: String,
    pub allowed: String,
    pub refresh_tokens: i64,
}

/// The account page.
pub fn account(view: &AccountView) -> Response {
    let p = AccountPage {
        style: STYLE,
        v: view,
        script: PASSKEY_SCRIPT,
    };
    page(StatusCode::OK, p.render())
}
