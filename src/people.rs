//! Local people: the accounts kauth signs in itself, read from a `users.yaml` document (a
//! key of a Kubernetes Secret, mounted as a file; standalone reads the Secret manifest).
//! Passwords are argon2id hashes; kauth never sees or stores a clear password at rest.

use std::collections::HashMap;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::connectors::Connectors;

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
    /// A disabled person cannot sign in, and loses their sessions and refresh tokens.
    #[serde(default)]
    disabled: bool,
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
    /// Kept in the file but not allowed in: sessions and refresh tokens end.
    pub disabled: bool,
    password_hash: String,
}

impl LocalUser {
    /// Which password this is, without revealing it: sessions remember it, and a new password
    /// (a new hash) ends the sessions started with the old one.
    pub fn credential(&self) -> String {
        crate::store::handle_digest(&self.password_hash)[..16].to_string()
    }

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
    /// Read from a file (not the empty stand-in before the first read): only then does a
    /// missing account mean that the person left.
    loaded: bool,
    /// Usernames of entries that could not be read: they cannot sign in, and kauth cannot tell
    /// whether they left, so what they hold stays until their entry is fixed or removed.
    unreadable: std::collections::HashSet<String>,
    /// What was wrong with the file, entry by entry (never quoting a value).
    problems: Vec<String>,
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
    /// Parses `users.yaml`. A document that cannot be read at all is an error naming only
    /// where (line and column: a value there may be a password typed in by mistake). An entry
    /// that cannot be read is skipped and named by its position and username, never by its
    /// values; every other entry signs in as before.
    pub fn parse(text: &str) -> Result<Self, String> {
        let document: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| match e.location() {
            Some(at) => format!(
                "{USERS_KEY} is not valid YAML (line {}, column {})",
                at.line(),
                at.column()
            ),
            None => format!("{USERS_KEY} is not valid YAML"),
        })?;
        let entries = match document.get("users") {
            Some(serde_json::Value::Array(entries)) => entries,
            _ => return Err(format!("{USERS_KEY}: a top-level `users:` list is required")),
        };
        let mut dir = Self {
            loaded: true,
            ..Self::default()
        };
        for (i, entry) in entries.iter().enumerate() {
            // The username, when it is one, names the entry; nothing else of it is quoted.
            let username = entry
                .get("username")
                .and_then(serde_json::Value::as_str)
                .filter(|u| valid_username(u));
            let at = match username {
                Some(u) => format!("users[{i}] ({u})"),
                None => format!("users[{i}]"),
            };
            match Self::entry(entry) {
                Ok(user) => {
                    let key = user.username.to_lowercase();
                    if dir.users.contains_key(&key) || dir.unreadable.contains(&key) {
                        dir.problems
                            .push(format!("{at}: the username is listed twice; this entry is skipped"));
                        continue;
                    }
                    dir.users.insert(key, user);
                }
                Err(why) => {
                    if let Some(u) = username {
                        let key = u.to_lowercase();
                        // The entry before it with this name stays out too: which is meant?
                        dir.users.remove(&key);
                        dir.unreadable.insert(key);
                    }
                    dir.problems.push(format!("{at}: {why}; this entry is skipped"));
                }
            }
        }
        Ok(dir)
    }

    /// One entry, or what is wrong with it (naming fields, never values).
    fn entry(entry: &serde_json::Value) -> Result<LocalUser, String> {
        let u: UserEntry = serde_path_to_error::deserialize(entry).map_err(|e| {
            let field = e.path().to_string();
            let what = e.inner().to_string();
            // serde names an unknown field and what was expected, and may quote the value
            // given: only the first two are repeated.
            // A field's name is not repeated either: a password may have been typed as a key.
            if what.starts_with("unknown field") {
                "a field it does not know (fields: username, passwordHash, email, emailVerified, name, groups, disabled)".to_string()
            } else if what.starts_with("missing field") {
                what
            } else if field == "." {
                "not a mapping of fields".to_string()
            } else {
                format!("field {field} has the wrong type")
            }
        })?;
        if !valid_username(&u.username) {
            return Err("username: letters, digits and . _ - @ only (1 to 128)".into());
        }
        match PasswordHash::new(&u.password_hash) {
            Ok(h) if h.algorithm.as_str() == "argon2id" => {}
            // The algorithm's name is the hash's first part: a typed password could be it.
            Ok(_) => return Err("passwordHash: not an argon2id hash".into()),
            Err(_) => {
                return Err("passwordHash: not a PHC string; make one with `kauth hash-password`".into());
            }
        }
        Ok(LocalUser {
            username: u.username,
            email: u.email,
            email_verified: u.email_verified.unwrap_or(false),
            name: u.name,
            groups: u.groups,
            disabled: u.disabled,
            password_hash: u.password_hash,
        })
    }

    /// What was wrong with the file, one line per skipped entry.
    pub fn problems(&self) -> &[String] {
        &self.problems
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
        self.verify_with(username, password, &mut CheckMemory::new())
    }

    /// As [`Directory::verify`], hashing in `memory` (grown to the hash's size once, then
    /// reused): a check allocates nothing, so a burst of sign-ins cannot leave the allocator
    /// holding a copy of the 19 MiB per thread that ever ran one.
    pub fn verify_with(&self, username: &str, password: &str, memory: &mut CheckMemory) -> Option<&LocalUser> {
        let user = self.users.get(&username.to_lowercase());
        let hash = user.map_or(DECOY_HASH.as_str(), |u| u.password_hash.as_str());
        let ok = password_matches(hash, password, memory);
        user.filter(|u| ok && !u.disabled)
    }
}

/// The working memory of one argon2id check.
pub type CheckMemory = Vec<argon2::Block>;

/// Whether `password` matches the argon2id PHC string `phc`, computed in `memory`.
fn password_matches(phc: &str, password: &str, memory: &mut CheckMemory) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(params), Some(expected), Some(salt)) = (argon2::Params::try_from(&parsed), parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(argon2::Version::V0x13), argon2::Version::try_from)
    else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    memory.resize(params.block_count(), argon2::Block::default());
    let mut out = vec![0u8; expected.len()];
    Argon2::new(Algorithm::Argon2id, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .is_ok()
        && aws_lc_rs::constant_time::verify_slices_are_equal(&out, expected.as_bytes()).is_ok()
}

/// Whether a person may keep what they hold (sessions, refresh tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Still allowed, or kauth cannot tell yet (its people or connectors are not read).
    Stays,
    /// Removed, disabled, or their upstream provider is no longer configured.
    Left,
    /// Their password changed since `credential`: that session ends, the person stays.
    NewPassword,
}

/// The standing of `subject` (a local username, or `<connector>:<sub>`), for a session started
/// with `credential` (None: a refresh family, which a new password does not end).
pub fn standing(people: &Directory, connectors: &Connectors, subject: &str, credential: Option<&str>) -> Standing {
    if let Some((connector, _)) = subject.split_once(':') {
        return if !connectors.loaded || connectors.get(connector).is_some() {
            Standing::Stays
        } else {
            Standing::Left
        };
    }
    if !people.loaded || people.unreadable.contains(&subject.to_lowercase()) {
        return Standing::Stays;
    }
    match people.user(subject) {
        None => Standing::Left,
        Some(u) if u.disabled => Standing::Left,
        Some(u) if credential.is_some_and(|c| c != u.credential()) => Standing::NewPassword,
        Some(_) => Standing::Stays,
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
        // Reused working memory: a smaller hash after a bigger one, and back.
        let small = Argon2::new(
            Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(b"tiny", &SaltString::encode_b64(b"sixteen byte slt").unwrap())
        .unwrap()
        .to_string();
        let mut memory = CheckMemory::new();
        assert!(password_matches(&hash, "correct horse", &mut memory));
        assert!(password_matches(&small, "tiny", &mut memory));
        assert!(!password_matches(&small, "tinY", &mut memory));
        assert!(password_matches(&hash, "correct horse", &mut memory));
        assert_eq!(alice.claims()["email_verified"], true);
        assert!(dir.verify("alice", "wrong").is_none());
        assert!(dir.verify("bob", "correct horse").is_none());

        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, argon2::Version::V0x13, argon2::Params::default())
            .hash_password(b"x", &salt)
            .unwrap()
            .to_string();
        let bad = Directory::parse(&format!(
            "users:\n- username: 'a:b'\n  passwordHash: '{hash}'\n- username: b\n  passwordHash: plain-secret\n- username: c\n  passwordHash: '{argon2i}'\n- username: alice\n  passwordHash: '{hash}'\n- username: ALICE\n  passwordHash: '{hash}'\n- username: d\n  password: hunter2\n  passwordHash: '{hash}'\n- username: e\n  passwordHash: '{hash}'\n  disabled: hunter3\n"
        ))
        .expect("bad entries are skipped, not the file");
        let problems = bad.problems().join("\n");
        for part in [
            "users[0]: username",
            "users[1] (b): passwordHash: not a PHC",
            "users[2] (c): passwordHash: not an argon2id hash",
            "users[4] (ALICE): the username is listed twice",
            "users[5] (d): a field it does not know",
            "users[6] (e): field disabled has the wrong type",
        ] {
            assert!(problems.contains(part), "{part} in {problems}");
        }
        for value in ["plain-secret", "hunter2", "hunter3", "a:b"] {
            assert!(!problems.contains(value), "{value} is quoted in {problems}");
        }
        assert!(
            bad.verify("alice", "correct horse").is_some(),
            "the good entries sign in"
        );
        assert_eq!(bad.len(), 1);
        // A broken entry's person can neither sign in nor be told apart from one who left:
        // what they hold stays until the entry is fixed.
        let none = Connectors::default();
        assert!(bad.verify("d", "correct horse").is_none());
        assert_eq!(standing(&bad, &none, "d", None), Standing::Stays);
        let unreadable = Directory::parse("users:\n- username: a\n  passwordHash: \"hunter2\n").unwrap_err();
        assert!(
            unreadable.contains("line") && !unreadable.contains("hunter2"),
            "{unreadable}"
        );
    }

    #[test]
    fn removed_disabled_and_re_passworded_people_leave() {
        let old = hash_password("old");
        let new = hash_password("new");
        let people = |hash: &str, disabled: bool| {
            Directory::parse(&format!(
                "users:\n- username: alice\n  passwordHash: '{hash}'\n  disabled: {disabled}\n"
            ))
            .unwrap()
        };
        let before = people(&old, false);
        let credential = before.user("alice").unwrap().credential();
        let none = Connectors::default();
        let with = |dir: &Directory, cred: Option<&str>| standing(dir, &none, "alice", cred);
        assert_eq!(with(&before, Some(&credential)), Standing::Stays);
        assert_eq!(with(&people(&new, false), Some(&credential)), Standing::NewPassword);
        assert_eq!(
            with(&people(&new, false), None),
            Standing::Stays,
            "families outlive a new password"
        );
        let disabled = people(&old, true);
        assert_eq!(with(&disabled, None), Standing::Left);
        assert!(
            disabled.verify("alice", "old").is_none(),
            "a disabled person cannot sign in"
        );
        let empty = Directory::parse("users: []").unwrap();
        assert_eq!(with(&empty, None), Standing::Left, "removed");
        assert_eq!(
            with(&Directory::default(), None),
            Standing::Stays,
            "not read yet: nobody is thrown out"
        );
        let corp = Connectors::parse(
            "connectors:\n- {id: corp, name: Corp, issuer: 'https://idp.example.com', clientId: k, clientSecretRef: {name: s, key: k}}\n",
            |_, _| Some("x".into()),
        )
        .unwrap();
        assert_eq!(standing(&empty, &corp, "corp:123", None), Standing::Stays);
        let gone = Connectors::parse("connectors: []", |_, _| None).unwrap();
        assert_eq!(
            standing(&empty, &gone, "corp:123", None),
            Standing::Left,
            "connector removed"
        );
        assert_eq!(standing(&empty, &none, "corp:123", None), Standing::Stays);
    }
}
