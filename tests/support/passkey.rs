//! A software passkey for the HTTP tier: 1Password's passkey-rs (a WebAuthn client over a
//! CTAP2 authenticator whose keychain, in memory, finds its own credentials, with user
//! verification) answers the ceremonies kauth's pages carry, as a browser's would.

use passkey_authenticator::{
    Authenticator, CredentialStore, DiscoverabilitySupport, StoreInfo, UiHint, UserCheck, UserValidationMethod,
};
use passkey_client::{Client, DefaultClientData};
use passkey_crypto::AvailableBackend;
use passkey_types::Passkey;
use passkey_types::ctap2::make_credential::{Options, PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity};
use passkey_types::ctap2::{Aaguid, Ctap2Error, StatusCode};
use passkey_types::webauthn::{CredentialCreationOptions, CredentialRequestOptions, PublicKeyCredentialDescriptor};

/// The device's passkeys. Unlike passkey-rs's MemoryStore, it finds them by itself for an
/// empty allow list (discoverable credentials: a passwordless sign-in names nobody).
#[derive(Default)]
struct Keychain(Vec<Passkey>);

#[async_trait::async_trait]
impl CredentialStore for Keychain {
    type PasskeyItem = Passkey;

    async fn find_credentials(
        &self,
        allowed: Option<&[PublicKeyCredentialDescriptor]>,
        rp_id: &str,
        _user_handle: Option<&[u8]>,
    ) -> Result<Vec<Passkey>, StatusCode> {
        let found: Vec<Passkey> = self
            .0
            .iter()
            .filter(|p| p.rp_id == rp_id)
            .filter(|p| match allowed {
                Some(list) if !list.is_empty() => list.iter().any(|d| *d.id == *p.credential_id),
                _ => true,
            })
            .cloned()
            .collect();
        if found.is_empty() {
            Err(Ctap2Error::NoCredentials.into())
        } else {
            Ok(found)
        }
    }

    async fn save_credential(
        &mut self,
        cred: Passkey,
        _user: PublicKeyCredentialUserEntity,
        _rp: PublicKeyCredentialRpEntity,
        _options: Options,
    ) -> Result<(), StatusCode> {
        self.0.retain(|p| p.credential_id != cred.credential_id);
        self.0.push(cred);
        Ok(())
    }

    async fn update_credential(&mut self, cred: &Passkey) -> Result<(), StatusCode> {
        for p in &mut self.0 {
            if p.credential_id == cred.credential_id {
                *p = cred.clone();
            }
        }
        Ok(())
    }

    async fn get_info(&self) -> StoreInfo {
        StoreInfo {
            discoverability: DiscoverabilitySupport::ForcedDiscoverable,
        }
    }
}

/// The person at the device: always present, always verified (their PIN or fingerprint).
struct Verified;

#[async_trait::async_trait]
impl UserValidationMethod for Verified {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        _hint: UiHint<'a, Self::PasskeyItem>,
        presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        Ok(UserCheck { presence, verification })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

/// A device with passkeys on it.
pub struct SoftPasskey {
    client: Client<Keychain, Verified, AvailableBackend, public_suffix::PublicSuffixList, ()>,
}

impl SoftPasskey {
    pub fn new() -> Self {
        let authenticator = Authenticator::new(Aaguid::new_empty(), Keychain::default(), Verified, AvailableBackend);
        Self {
            client: Client::new(authenticator).allows_insecure_localhost(true),
        }
    }

    /// Creates a passkey from a page's options (JSON) at `origin`: the answer, as JSON.
    pub async fn create(&mut self, origin: &str, options: &str) -> String {
        let options: CredentialCreationOptions =
            serde_json::from_str(options).unwrap_or_else(|e| panic!("{e}: {options}"));
        let origin = url::Url::parse(origin).unwrap();
        let created = self
            .client
            .register(&origin, options, DefaultClientData)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        serde_json::to_string(&created).unwrap()
    }

    /// Signs in with a passkey on this device, answering a page's options (JSON) at `origin`.
    pub async fn get(&mut self, origin: &str, options: &str) -> Result<String, String> {
        let options: CredentialRequestOptions =
            serde_json::from_str(options).unwrap_or_else(|e| panic!("{e}: {options}"));
        let origin = url::Url::parse(origin).unwrap();
        self.client
            .authenticate(&origin, options, DefaultClientData)
            .await
            .map(|answer| serde_json::to_string(&answer).unwrap())
            .map_err(|e| format!("{e:?}"))
    }
}

/// The options of the passkey form on a page (its `data-options`, unescaped).
pub fn form_options(html: &str) -> String {
    let marker = r#"data-options=""#;
    let start = html.find(marker).unwrap_or_else(|| panic!("no passkey form in {html}")) + marker.len();
    let raw = &html[start..start + html[start..].find('"').unwrap()];
    raw.replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}
