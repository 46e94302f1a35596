//! Passkeys (WebAuthn) as kauth uses them: the ceremonies (webauthn-rs verifies them), with
//! their state sealed into the page that runs them instead of kept on the server, so any
//! replica finishes what another began. A sealed ceremony is bound to what it is for (a
//! pending sign-in, or an account session), lives ten minutes, and is spent in the grant store
//! the first time it is finished, so neither its challenge nor a captured answer to it can be
//! used twice. A person's passkeys are stored sealed for them (see `store::passkeys`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::issuer::Issuer;
use crate::second_factors::SealingKey;
use crate::store::{GrantStore, StoreError, StoredPasskey, once_id};

/// How long a page's ceremony may be finished after it was shown (as long as a pending
/// sign-in lives).
const CEREMONY_SECS: i64 = 10 * 60;

/// How long a passkey's name may be.
pub const MAX_NAME_CHARS: usize = 60;

/// The relying party kauth is for passkeys: its issuer's host and origin.
pub struct Passkeys {
    webauthn: Webauthn,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passkeys(..)")
    }
}

/// A ceremony for a page: the options its script hands the browser (JSON), and its state,
/// sealed, which the form posts back.
pub struct Ceremony {
    pub options: String,
    pub sealed: String,
}

/// A ceremony's state as sealed into the page.
#[derive(Serialize, Deserialize)]
struct SealedState<S> {
    /// Spent in the grant store when the ceremony finishes.
    id: String,
    expires_at: i64,
    state: S,
}

/// What a sign-in ceremony checks the answer against.
#[derive(Serialize, Deserialize)]
enum SignInState {
    /// Any of the person's passkeys that the browser finds (passwordless).
    Discoverable(DiscoverableAuthentication),
    /// One of this person's passkeys (a second factor after their password, or a step-up).
    Person(String, PasskeyAuthentication),
}

/// Why a ceremony's answer was refused (said to the person as it is).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str);

const EXPIRED: Refused = Refused("This page has expired or was used already. Open it again.");
const NOT_USED: Refused = Refused("Your browser did not use a passkey. Try again, or use another way in.");
pub const UNKNOWN: Refused = Refused("That passkey is not registered with kauth, or no longer counts.");

/// What a passkey's answer to a sign-in showed.
pub struct Answered {
    /// The authenticator may back the key up (a synced passkey).
    pub backup_eligible: bool,
    /// The passkey with its counter moved, sealed anew, when it moved.
    pub resealed: Option<String>,
}

impl Passkeys {
    /// Passkeys for `issuer`, when its host can be a WebAuthn relying party (a domain name;
    /// browsers refuse IP addresses).
    pub fn for_issuer(issuer: &Issuer) -> Option<Self> {
        let url = Url::parse(&issuer.url).ok()?;
        let host = url.host_str()?.to_string();
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            tracing::info!(%host, "passkeys are off: a WebAuthn relying party needs a domain name, not an address");
            return None;
        }
        let origin = Url::parse(&url.origin().ascii_serialization()).ok()?;
        let webauthn = WebauthnBuilder::new(&host, &origin)
            .and_then(|b| b.rp_name("kauth").build())
            .inspect_err(|e| tracing::warn!(error = %e, %host, "passkeys are off"))
            .ok()?;
        Some(Self { webauthn })
    }

    /// A registration of a new passkey for `subject` (who has `existing` ones), for a page
    /// bound to `bound_to`. Asks for a discoverable credential, so it can sign in alone.
    pub fn registration(
        &self,
        key: &SealingKey,
        subject: &str,
        existing: &[StoredPasskey],
        bound_to: &str,
        now: i64,
    ) -> Option<Ceremony> {
        let exclude = existing
            .iter()
            .filter_map(|p| URL_SAFE_NO_PAD.decode(&p.credential_id).ok())
            .collect::<Vec<_>>();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(
                Uuid::from_bytes(key.person_handle(subject)),
                subject,
                subject,
                Some(exclude),
            )
            .inspect_err(|e| tracing::error!(error = %e, "cannot start a passkey registration"))
            .ok()?;
        let mut options = serde_json::to_value(options).ok()?;
        // webauthn-rs leaves the resident key "discouraged"; kauth wants a passkey the browser
        // can find by itself (passwordless sign-in), as platform passkeys always are.
        if let Some(selection) = options.pointer_mut("/publicKey/authenticatorSelection") {
            selection["residentKey"] = "preferred".into();
        }
        Some(Ceremony {
            options: options.to_string(),
            sealed: seal(key, &state, &registering(bound_to), now),
        })
    }

    /// The passkey `credential` (the browser's answer, JSON) registers, if it answers the
    /// sealed registration bound to `bound_to`; the ceremony is spent in `store` first.
    pub async fn finish_registration(
        &self,
        key: &SealingKey,
        store: &GrantStore,
        sealed: &str,
        bound_to: &str,
        credential: &str,
        now: i64,
    ) -> Result<Result<Passkey, Refused>, StoreError> {
        let (state, credential) = match spend::<PasskeyRegistration, RegisterPublicKeyCredential>(
            key,
            store,
            REGISTER,
            sealed,
            &registering(bound_to),
            credential,
            now,
        )
        .await?
        {
            Ok(opened) => opened,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(self
            .webauthn
            .finish_passkey_registration(&credential, &state)
            .map_err(|e| {
                tracing::info!(error = %e, "a passkey registration was refused");
                Refused("Your passkey could not be registered. Try again.")
            }))
    }

    /// A sign-in with a passkey for a page bound to `bound_to`: any discoverable passkey
    /// (passwordless), or one of `person`'s.
    pub fn sign_in(
        &self,
        key: &SealingKey,
        person: Option<(&str, &[StoredPasskey])>,
        bound_to: &str,
        now: i64,
    ) -> Option<Ceremony> {
        let (options, state) = match person {
            None => {
                let (options, state) = self.webauthn.start_discoverable_authentication().ok()?;
                (serde_json::to_value(options).ok()?, SignInState::Discoverable(state))
            }
            Some((subject, stored)) => {
                let passkeys: Vec<Passkey> = stored.iter().filter_map(|p| unseal(key, p)).collect();
                if passkeys.is_empty() {
                    return None;
                }
                let (options, state) = self.webauthn.start_passkey_authentication(&passkeys).ok()?;
                (
                    serde_json::to_value(options).ok()?,
                    SignInState::Person(subject.to_string(), state),
                )
            }
        };
        Some(Ceremony {
            options: options.to_string(),
            sealed: seal(key, &state, &signing_in(bound_to), now),
        })
    }

    /// Opens the browser's answer `credential` (JSON) to the sealed sign-in bound to
    /// `bound_to`, and spends the ceremony: it is answered once, right or wrong.
    pub async fn open_sign_in(
        &self,
        key: &SealingKey,
        store: &GrantStore,
        sealed: &str,
        bound_to: &str,
        credential: &str,
        now: i64,
    ) -> Result<Result<SignInAnswer, Refused>, StoreError> {
        let (state, credential) = match spend::<SignInState, PublicKeyCredential>(
            key,
            store,
            SIGN_IN,
            sealed,
            &signing_in(bound_to),
            credential,
            now,
        )
        .await?
        {
            Ok(opened) => opened,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(Ok(SignInAnswer {
            credential_id: URL_SAFE_NO_PAD.encode(credential.get_credential_id()),
            credential,
            state,
        }))
    }

    /// Checks `answer` against `stored`, the passkey registered under its credential id: the
    /// owner the ceremony expects (or the browser names), and the signature over the challenge.
    pub fn verify(&self, key: &SealingKey, answer: SignInAnswer, stored: &StoredPasskey) -> Result<Answered, Refused> {
        let Some(mut passkey) = unseal(key, stored) else {
            tracing::error!(subject = %stored.subject, "a passkey does not open with this kauth's key");
            return Err(UNKNOWN);
        };
        let credential = &answer.credential;
        let result = match answer.state {
            SignInState::Discoverable(state) => {
                // The browser names the person too: it must be the passkey's owner.
                let named = self
                    .webauthn
                    .identify_discoverable_authentication(credential)
                    .ok()
                    .map(|(handle, _)| handle);
                if named != Some(Uuid::from_bytes(key.person_handle(&stored.subject))) {
                    return Err(UNKNOWN);
                }
                self.webauthn
                    .finish_discoverable_authentication_v2(credential, state, &passkey)
            }
            SignInState::Person(subject, state) => {
                if subject != stored.subject {
                    return Err(UNKNOWN);
                }
                self.webauthn.finish_passkey_authentication(credential, &state)
            }
        };
        let result = result.map_err(|e| {
            tracing::info!(error = %e, subject = %stored.subject, "a passkey sign-in was refused");
            Refused("Your passkey did not sign in. Try again.")
        })?;
        let resealed = passkey
            .update_credential(&result)
            .filter(|changed| *changed)
            .map(|_| seal_passkey(key, &passkey, &stored.subject));
        Ok(Answered {
            backup_eligible: result.backup_eligible(),
            resealed,
        })
    }
}

/// A browser's answer to a sign-in ceremony, opened and spent, not yet checked.
pub struct SignInAnswer {
    /// The credential id it names (base64url): where its passkey is looked up.
    pub credential_id: String,
    credential: PublicKeyCredential,
    state: SignInState,
}

impl SignInAnswer {
    /// The person this ceremony was for, when it was for one (a second factor).
    pub fn for_person(&self) -> Option<&str> {
        match &self.state {
            SignInState::Person(subject, _) => Some(subject),
            SignInState::Discoverable(_) => None,
        }
    }
}

/// The two kinds of ceremony: their states open for their own kind only, and are spent apart.
const REGISTER: &str = "register";
const SIGN_IN: &str = "sign-in";

/// What a registration's state is sealed for.
fn registering(bound_to: &str) -> String {
    format!("webauthn {REGISTER}\n{bound_to}")
}

/// What a sign-in's state is sealed for.
fn signing_in(bound_to: &str) -> String {
    format!("webauthn {SIGN_IN}\n{bound_to}")
}

/// Opens the sealed state of a ceremony of `kind` sealed for `purpose`, reads the browser's
/// `answer` (JSON) to it, and spends the ceremony in `store`: it is answered once, right or
/// wrong, on any replica.
async fn spend<S: DeserializeOwned, A: DeserializeOwned>(
    key: &SealingKey,
    store: &GrantStore,
    kind: &str,
    sealed: &str,
    purpose: &str,
    answer: &str,
    now: i64,
) -> Result<Result<(S, A), Refused>, StoreError> {
    let Some((id, state)) = open::<S>(key, sealed, purpose, now) else {
        return Ok(Err(EXPIRED));
    };
    let answer = match serde_json::from_str::<A>(answer) {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(error = %e, kind, "a passkey ceremony's answer does not read");
            return Ok(Err(NOT_USED));
        }
    };
    if !store
        .use_once(&once_id("webauthn", kind, &id), now + CEREMONY_SECS)
        .await?
    {
        return Ok(Err(EXPIRED));
    }
    Ok(Ok((state, answer)))
}

fn seal<S: Serialize>(key: &SealingKey, state: &S, purpose: &str, now: i64) -> String {
    let sealed = SealedState {
        id: super::browser::random_handle(),
        expires_at: now + CEREMONY_SECS,
        state,
    };
    key.seal(
        &serde_json::to_vec(&sealed).expect("a ceremony's state serialises"),
        purpose,
    )
}

fn open<S: DeserializeOwned>(key: &SealingKey, sealed: &str, purpose: &str, now: i64) -> Option<(String, S)> {
    let state: SealedState<S> = serde_json::from_slice(&key.open(sealed, purpose)?).ok()?;
    (state.expires_at > now).then_some((state.id, state.state))
}

/// A passkey as the store keeps it: sealed for its owner.
pub fn seal_passkey(key: &SealingKey, passkey: &Passkey, subject: &str) -> String {
    key.seal(
        &serde_json::to_vec(passkey).expect("a passkey serialises"),
        &format!("passkey\n{subject}"),
    )
}

fn unseal(key: &SealingKey, stored: &StoredPasskey) -> Option<Passkey> {
    serde_json::from_slice(&key.open(&stored.sealed, &format!("passkey\n{}", stored.subject))?).ok()
}

/// Whether the authenticator may back `passkey` up (a synced passkey: a software key).
pub fn backup_eligible(passkey: &Passkey) -> bool {
    webauthn_rs::prelude::Credential::from(passkey.clone()).backup_eligible
}

/// A passkey's credential id as the store keys it.
pub fn credential_id(passkey: &Passkey) -> String {
    URL_SAFE_NO_PAD.encode(passkey.cred_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relying_party_needs_a_domain_name() {
        assert!(Passkeys::for_issuer(&Issuer::parse("https://auth.example.com").unwrap()).is_some());
        assert!(Passkeys::for_issuer(&Issuer::parse("http://localhost:8080/kauth").unwrap()).is_some());
        assert!(Passkeys::for_issuer(&Issuer::parse("http://127.0.0.1:8080").unwrap()).is_none());
    }

    #[test]
    fn a_ceremony_opens_only_for_its_purpose_and_in_its_time() {
        let key = SealingKey::new(&[5; 32]);
        let sealed = seal(&key, &"state", &signing_in("pending-1"), 1_000);
        assert!(open::<String>(&key, &sealed, &signing_in("pending-1"), 1_000).is_some());
        assert!(open::<String>(&key, &sealed, &signing_in("pending-2"), 1_000).is_none());
        assert!(open::<String>(&key, &sealed, &registering("pending-1"), 1_000).is_none());
        assert!(open::<String>(&key, &sealed, &signing_in("pending-1"), 1_000 + CEREMONY_SECS).is_none());
    }
}
