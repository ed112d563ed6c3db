//! API keys: with `API_KEYS` set, every /api/v1 call needs `Authorization: Bearer <key>` or
//! `X-API-Key: <key>`; reads need a read or write key, changes a write key.
//!
//! Keys are kept only as SHA-256 digests and compared in constant time against every
//! configured key (no early exit), so neither timing nor a memory dump gives one away.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.keys.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// `key:role,key:role` with role `read` or `write` (a key without a role is `write`).
    pub fn parse(spec: &str) -> Result<ApiKeys, String> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, role) = match entry.rsplit_once(':') {
                Some((key, "read")) => (key, Role::Read),
                Some((key, "write")) => (key, Role::Write),
                Some((_, other)) => {
                    return Err(format!(
                        "API_KEYS: unknown role {other:?} (use read or write)"
                    ))
                }
                None => (entry, Role::Write),
            };
            if key.len() < 16 {
                return Err("API_KEYS: every key must be at least 16 characters".into());
            }
            keys.push((digest(key), role));
        }
        Ok(ApiKeys { keys })
    }

    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The role of `presented`, if it is a configured key.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let d = digest(presented);
        let mut found: Option<Role> = None;
        for (key, role) in &self.keys {
            if bool::from(key.ct_eq(&d)) {
                found = Some(found.map_or(*role, |r| r.max(*role)));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_roles_and_unknown_keys_have_none() {
        let keys =
            ApiKeys::parse("reader-key-0123456789:read, writer-key-0123456789:write").unwrap();
        assert_eq!(keys.role_of("reader-key-0123456789"), Some(Role::Read));
        assert_eq!(keys.role_of("writer-key-0123456789"), Some(Role::Write));
        assert_eq!(keys.role_of("writer-key-012345678"), None);
        assert_eq!(keys.role_of(""), None);
    }

    #[test]
    fn short_keys_and_unknown_roles_are_refused() {
        assert!(ApiKeys::parse("short:read").is_err());
        assert!(ApiKeys::parse("long-enough-key-123:admin").is_err());
        assert!(!ApiKeys::parse("").unwrap().is_enabled());
    }

    #[test]
    fn debug_output_shows_no_key() {
        let keys = ApiKeys::parse("secret-key-0123456789:read").unwrap();
        assert_eq!(format!("{keys:?}"), "ApiKeys(1 configured)");
    }
}
