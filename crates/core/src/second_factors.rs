//! People's second factors, as pure functions: one-time codes (TOTP, RFC 6238: SHA-1, six
//! digits, 30-second steps, one step of skew either way, what every authenticator app reads),
//! recovery codes (shown once, kept as digests), the sealing of a TOTP secret at rest
//! (AES-256-GCM under the platform's key, bound to the person it belongs to), and the
//! authentication context a sign-in reaches (`acr`, RFC 8176 `amr`).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use totp_rs::{Algorithm, Builder, Totp};

/// Seconds one code lasts.
pub const STEP_SECS: u64 = 30;

/// How many recovery codes an enrollment hands out.
pub const RECOVERY_CODES: usize = 10;

/// The `acr` of a sign-in with one factor: a password, or an upstream provider's word.
pub const ACR_ONE_FACTOR: &str = "urn:kauth:acr:1fa";
/// The `acr` of a sign-in with a password and a second factor.
pub const ACR_MFA: &str = "urn:kauth:acr:mfa";
/// Every `acr` kauth can vouch for, weakest first (`acr_values_supported`).
pub const ACR_VALUES: [&str; 2] = [ACR_ONE_FACTOR, ACR_MFA];

/// The `acr` a sign-in with these `amr` values reached.
pub fn acr_of(amr: &[String]) -> &'static str {
    if amr.iter().any(|m| m == "mfa") {
        ACR_MFA
    } else {
        ACR_ONE_FACTOR
    }
}

/// Who the platform requires a second factor of (besides clients and requests that ask).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Every local person.
    pub everyone: bool,
    /// Local people in any of these groups.
    pub groups: Vec<String>,
}

impl Policy {
    /// Whether a person in `groups` must prove a second factor.
    pub fn requires(&self, groups: &[String]) -> bool {
        self.everyone || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// The `amr` (RFC 8176) of a sign-in with a passkey, after a password or without one. A
/// passkey proves possession of a key and, since kauth requires user verification, a PIN or
/// biometric on the device: two factors in itself (`mfa`). A passkey the authenticator may
/// back up (synced through a cloud keychain) is a software key (`swk`); one bound to its
/// device, a hardware key (`hwk`).
pub fn passkey_amr(backup_eligible: bool, after_password: bool) -> Vec<String> {
    let key = if backup_eligible { "swk" } else { "hwk" };
    let methods: &[&str] = if after_password {
        &["pwd", key, "mfa"]
    } else {
        &[key, "mfa"]
    };
    methods.iter().map(|m| m.to_string()).collect()
}

/// Whether a sign-in that reached `acr` satisfies a demand for `wanted` (unknown values are
/// never satisfied: kauth does not vouch for what it does not know).
pub fn satisfies(acr: &str, wanted: &str) -> bool {
    let rank = |v: &str| ACR_VALUES.iter().position(|a| *a == v);
    matches!((rank(acr), rank(wanted)), (Some(have), Some(want)) if have >= want)
}

/// A person's TOTP secret (160 random bits, as RFC 4226 recommends).
pub fn new_totp_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    aws_lc_rs::rand::fill(&mut secret).expect("the system's random source");
    secret
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.to_vec())
        // The otpauth label may not hold ':'; an authenticator app shows these two.
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .ok()
}

/// The `otpauth://` URI an authenticator app enrolls from (and the secret in base32, for
/// typing in).
pub fn otpauth(secret: &[u8], issuer: &str, account: &str) -> Option<(String, String)> {
    let t = totp(secret, issuer, account)?;
    Some((t.to_url().ok()?, t.secret().to_base32()))
}

/// The time step `code` was made for at `now` (this step or one either side), if it is right.
/// A step is good once: the caller records it and refuses it or any earlier one after.
pub fn matching_step(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "kauth", "check")?.check(&code, now)
}

/// A secret as an authenticator app is given it to type in (base32).
pub fn secret_from_base32(text: &str) -> Option<Vec<u8>> {
    Some(totp_rs::Secret::try_from_base32(text.trim()).ok()?.as_bytes().to_vec())
}

/// The code for `now` (tests and `kauth` tooling compute what an app shows).
pub fn code_at(secret: &[u8], now: u64) -> String {
    totp(secret, "kauth", "check")
        .map(|t| t.generate(now).to_string())
        .unwrap_or_default()
}

/// Fresh recovery codes: three groups of four letters and digits from a 32-character
/// alphabet (no 0/o, 1/l/i), 60 bits each, drawn without bias (256 is a multiple of 32).
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz234567890";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 12];
            aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
            let chars: String = bytes.iter().map(|b| ALPHABET[*b as usize % 32] as char).collect();
            format!("{}-{}-{}", &chars[..4], &chars[4..8], &chars[8..])
        })
        .collect()
}

/// A recovery code as typed, read leniently: case, spaces and dashes do not matter.
fn normal_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The platform's key for second-factor secrets at rest.
pub struct SealingKey {
    key: LessSafeKey,
    /// Keys the digests of recovery codes, so the database alone cannot test guesses.
    digests: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// A key from 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        // The digest key is derived, so one secret (the platform's key file) serves both.
        let derived = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes),
            b"kauth recovery-code digests",
        );
        Self {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES key")),
            digests: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// `secret` sealed for `owner`: a random nonce and the ciphertext, base64url. Opening it
    /// for anyone else fails, so a row copied to another person is useless.
    pub fn seal(&self, secret: &[u8], owner: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system's random source");
        let mut sealed = secret.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM seals any length kauth uses");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The digest `owner`'s recovery `code` is kept under: an HMAC under this key, so neither
    /// the code nor a way to test guesses at it is in the database alone.
    pub fn recovery_digest(&self, owner: &str, code: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.digests, format!("{owner}\n{}", normal_code(code)).as_bytes());
        URL_SAFE_NO_PAD.encode(tag)
    }

    /// A stable, opaque handle for `subject` under this key (16 bytes): what a passkey stores
    /// as its user id, so an authenticator never holds the username itself, and nobody without
    /// the key can tell whose handle it is.
    pub fn person_handle(&self, subject: &str) -> [u8; 16] {
        let tag = aws_lc_rs::hmac::sign(&self.digests, format!("webauthn user\n{subject}").as_bytes());
        let mut handle = [0u8; 16];
        handle.copy_from_slice(&tag.as_ref()[..16]);
        handle
    }

    /// The secret sealed for `owner`, if this key sealed it for them.
    pub fn open(&self, sealed: &str, owner: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_test_vector() {
        // RFC 6238 Appendix B, SHA-1, T = 59 s: 94287082 (the last six digits for six).
        assert_eq!(code_at(b"12345678901234567890", 59), "287082");
        assert_eq!(matching_step(b"12345678901234567890", "287082", 59), Some(1));
    }

    #[test]
    fn a_code_is_good_one_step_either_side_and_no_further() {
        let secret = new_totp_secret();
        let now = 1_800_000_000;
        let code = code_at(&secret, now);
        let step = now / STEP_SECS;
        assert_eq!(matching_step(&secret, &code, now), Some(step));
        assert_eq!(matching_step(&secret, &code, now + STEP_SECS), Some(step));
        assert_eq!(matching_step(&secret, &code, now - STEP_SECS), Some(step));
        assert_eq!(matching_step(&secret, &code, now + 2 * STEP_SECS), None);
        assert_eq!(
            matching_step(&secret, &format!(" {} {} ", &code[..3], &code[3..]), now),
            Some(step)
        );
        let (uri, base32) = otpauth(&secret, "kauth example", "alice").unwrap();
        assert!(uri.starts_with("otpauth://totp/") && uri.contains(&base32), "{uri}");
        assert_eq!(secret_from_base32(&base32), Some(secret.clone()));
        for junk in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"] {
            assert_eq!(matching_step(&secret, junk, now), None, "{junk}");
        }
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_owner_under_its_key() {
        let key = SealingKey::new(&[7; 32]);
        let sealed = key.seal(b"the secret", "alice");
        assert!(!sealed.contains("the secret"));
        assert_eq!(key.open(&sealed, "alice").as_deref(), Some(&b"the secret"[..]));
        assert_eq!(key.open(&sealed, "bob"), None);
        assert_eq!(SealingKey::new(&[8; 32]).open(&sealed, "alice"), None);
        assert_ne!(key.seal(b"the secret", "alice"), sealed, "a fresh nonce each time");
        for junk in ["", "AAAA", "!!"] {
            assert_eq!(key.open(junk, "alice"), None);
        }
    }

    #[test]
    fn recovery_codes_are_distinct_and_their_digests_keyed_and_lenient() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        assert!(
            codes.iter().all(|c| c.len() == 14 && c.matches('-').count() == 2),
            "{codes:?}"
        );
        let key = SealingKey::new(&[3; 32]);
        let code = &codes[0];
        let digest = key.recovery_digest("alice", code);
        assert_eq!(
            digest,
            key.recovery_digest("alice", &code.to_uppercase().replace('-', " "))
        );
        assert_ne!(digest, key.recovery_digest("alice", &codes[1]));
        assert_ne!(digest, key.recovery_digest("bob", code), "per person");
        assert_ne!(
            digest,
            SealingKey::new(&[4; 32]).recovery_digest("alice", code),
            "per key"
        );
        let plain = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, normal_code(code).as_bytes());
        assert_ne!(digest, URL_SAFE_NO_PAD.encode(plain), "not a plain hash");
    }

    #[test]
    fn person_handles_are_stable_per_key_and_person() {
        let key = SealingKey::new(&[3; 32]);
        assert_eq!(key.person_handle("alice"), key.person_handle("alice"));
        assert_ne!(key.person_handle("alice"), key.person_handle("bob"));
        assert_ne!(
            key.person_handle("alice"),
            SealingKey::new(&[4; 32]).person_handle("alice")
        );
    }

    #[test]
    fn the_policy_requires_everyone_or_the_listed_groups() {
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let policy = Policy {
            everyone: false,
            groups: groups(&["admins"]),
        };
        assert!(policy.requires(&groups(&["staff", "admins"])));
        assert!(!policy.requires(&groups(&["staff"])) && !policy.requires(&[]));
        assert!(
            Policy {
                everyone: true,
                groups: vec![]
            }
            .requires(&[])
        );
        assert!(!Policy::default().requires(&groups(&["admins"])));
    }

    #[test]
    fn acr_ranks() {
        assert_eq!(acr_of(&["pwd".into()]), ACR_ONE_FACTOR);
        assert_eq!(acr_of(&["pwd".into(), "otp".into(), "mfa".into()]), ACR_MFA);
        assert!(satisfies(ACR_MFA, ACR_ONE_FACTOR));
        assert!(!satisfies(ACR_ONE_FACTOR, ACR_MFA));
        assert!(!satisfies(ACR_MFA, "urn:other:gold"));
        assert_eq!(passkey_amr(false, false), ["hwk", "mfa"]);
        assert_eq!(passkey_amr(true, true), ["pwd", "swk", "mfa"]);
        assert_eq!(acr_of(&passkey_amr(true, false)), ACR_MFA);
    }
}
