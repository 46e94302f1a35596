//! Local people: the accounts kauth signs in itself, read from a `users.yaml` document (a
//! key of a Kubernetes Secret, mounted as a file; standalone reads the Secret manifest).
//! Passwords are argon2id hashes; kauth never sees or stores a clear password at rest.

use std::collections::HashMap;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use serde::Deserialize;
use serde_json::{Value, json};

/// The Secret key holding the document.
pub const USERS_KEY: &str = "users.yaml";
/// The Secret (in kauth's namespace) the chart mounts and standalone reads.
pub const USERS_SECRET: &str = "kauth-users";

/// One local account as written in `users.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserEntry {
    username: String,
    password_hash: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<UserEntry>,
}

/// A local account.
#[derive(Clone, Debug)]
pub struct LocalUser {
    /// Sign-in name, also the OIDC `sub`.
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    password_hash: String,
}

impl LocalUser {
    /// The claims kauth knows about this person (ID token and userinfo pick by scope).
    pub fn claims(&self) -> Value {
        json!({
            "preferred_username": self.username,
            "name": self.name,
            "email": self.email,
            "email_verified": self.email.as_ref().map(|_| self.email_verified),
            "groups": self.groups,
        })
    }
}

/// The local accounts, by lower-cased username.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    users: HashMap<String, LocalUser>,
}

/// A hash nobody's password matches: verifying against it for unknown names costs the same
/// time as for a real account, so response times do not reveal which names exist.
static DECOY_HASH: LazyLock<String> = LazyLock::new(|| hash_password("decoy password that matches no one"));

fn argon2id() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, argon2::Params::default())
}

/// An argon2id PHC string for `password` with a fresh random salt.
pub fn hash_password(password: &str) -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the OS random number generator is available");
    let salt = SaltString::encode_b64(&bytes).expect("16 bytes make a valid salt");
    argon2id()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password")
        .to_string()
}

/// Usernames are the OIDC subject of local people: no ':' so they never collide with the
/// `<connector>:<subject>` of federated people.
fn valid_username(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

impl Directory {
    /// Parses `users.yaml`, naming every problem (the entry and field).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = serde_saphyr::from_str(text).map_err(|e| format!("{USERS_KEY}: {e}"))?;
        let mut users = HashMap::new();
        let mut problems = Vec::new();
        for (i, u) in file.users.into_iter().enumerate() {
            let at = format!("users[{i}]");
            if !valid_username(&u.username) {
                problems.push(format!(
                    "{at}.username '{}': letters, digits and . _ - @ only (1 to 128)",
                    u.username
                ));
                continue;
            }
            match PasswordHash::new(&u.password_hash) {
                Ok(h) if h.algorithm.as_str() == "argon2id" => {}
                Ok(h) => {
                    problems.push(format!("{at}.passwordHash: {} is not argon2id", h.algorithm));
                    continue;
                }
                Err(e) => {
                    problems.push(format!(
                        "{at}.passwordHash: not a PHC string ({e}); make one with `kauth hash-password`"
                    ));
                    continue;
                }
            }
            let key = u.username.to_lowercase();
            if users.contains_key(&key) {
                problems.push(format!("{at}.username '{}' is listed twice", u.username));
                continue;
            }
            users.insert(
                key,
                LocalUser {
                    username: u.username,
                    email: u.email,
                    email_verified: u.email_verified.unwrap_or(false),
                    name: u.name,
                    groups: u.groups,
                    password_hash: u.password_hash,
                },
            );
        }
        if problems.is_empty() {
            Ok(Self { users })
        } else {
            Err(problems.join("; "))
        }
    }

    /// How many accounts there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The account `subject` (a username), if it exists.
    pub fn user(&self, subject: &str) -> Option<&LocalUser> {
        self.users.get(&subject.to_lowercase())
    }

    /// The account when `password` is right. Slow on purpose (argon2id): call it off the
    /// async threads.
    pub fn verify(&self, username: &str, password: &str) -> Option<&LocalUser> {
        let user = self.users.get(&username.to_lowercase());
        let hash = user.map_or(DECOY_HASH.as_str(), |u| u.password_hash.as_str());
        let parsed = PasswordHash::new(hash).ok()?;
        let ok = argon2id().verify_password(password.as_bytes(), &parsed).is_ok();
        user.filter(|_| ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_argon2id_passwords_and_names_bad_entries() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"));
        let dir = Directory::parse(&format!(
            "users:\n- username: Alice\n  passwordHash: '{hash}'\n  email: alice@example.com\n  emailVerified: true\n  groups: [admins]\n"
        ))
        .unwrap();
        let alice = dir.verify("alice", "correct horse").expect("case-insensitive name");
        assert_eq!(alice.claims()["email_verified"], true);
        assert!(dir.verify("alice", "wrong").is_none());
        assert!(dir.verify("bob", "correct horse").is_none());

        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, argon2::Version::V0x13, argon2::Params::default())
            .hash_password(b"x", &salt)
            .unwrap()
            .to_string();
        let bad = Directory::parse(&format!(
            "users:\n- username: 'a:b'\n  passwordHash: '{hash}'\n- username: b\n  passwordHash: plain\n- username: c\n  passwordHash: '{argon2i}'\n- username: alice\n  passwordHash: '{hash}'\n- username: ALICE\n  passwordHash: '{hash}'\n"
        ))
        .unwrap_err();
        for part in [
            "users[0].username",
            "users[1].passwordHash: not a PHC",
            "users[2].passwordHash: argon2i is not argon2id",
            "users[4].username 'ALICE' is listed twice",
        ] {
            assert!(bad.contains(part), "{part} in {bad}");
        }
        assert!(
            Directory::parse("users:\n- username: a\n  password: x\n").is_err(),
            "unknown fields are refused"
        );
    }
}
