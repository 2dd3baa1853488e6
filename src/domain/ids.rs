//! Identifiers. Every id is 128 random bits, shown as a kind prefix and 22
//! base64url characters (`g_3q2-7wEjRZKm0f9o2xq1lQ`), so an id of one kind can
//! never be mistaken for another and a malformed id is refused at the edge.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// 16 random bytes from the OS generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // getrandom only fails when the OS has no entropy source at all; there is
    // nothing sensible to do then but stop.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut b).expect("the operating system's random generator failed");
    b
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{given}` is not a valid {kind} id (expected `{prefix}` followed by 22 base64url characters)"
)]
pub struct BadId {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub given: String,
}

macro_rules! id_type {
    ($name:ident, $prefix:literal, $kind:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn random() -> Self {
                Self(random_bytes())
            }

            pub fn parse(s: &str) -> Result<Self, BadId> {
                let bad = || BadId {
                    kind: $kind,
                    prefix: $prefix,
                    given: s.chars().take(64).collect(),
                };
                let rest = s.strip_prefix($prefix).ok_or_else(bad)?;
                if rest.len() != 22 {
                    return Err(bad());
                }
                let bytes = URL_SAFE_NO_PAD.decode(rest).map_err(|_| bad())?;
                let arr: [u8; 16] = bytes.try_into().map_err(|_| bad())?;
                Ok(Self(arr))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, URL_SAFE_NO_PAD.encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[A-Za-z0-9_-]{22}$")))
                    .examples([concat!($prefix, "AAAAAAAAAAAAAAAAAAAAAA")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

id_type!(UserId, "u_", "user");
id_type!(GroupId, "g_", "group");
id_type!(InviteId, "i_", "invitation");
id_type!(RequestId, "r_", "join request");
id_type!(TransferId, "t_", "transfer");
id_type!(PayoutId, "p_", "payout");
id_type!(PacketId, "rp_", "red packet");

impl TransferId {
    /// A transfer id derived from an id chosen elsewhere (an earning's
    /// `event_id`, a payout's idempotency key), so a retry of the same thing
    /// names the same transfer. `domain` keeps derivations of different
    /// kinds apart.
    pub fn derive(domain: &str, parts: &[&[u8]]) -> TransferId {
        let mut h = blake3::Hasher::new_derive_key(&format!("qrgate transfer id {domain}"));
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        TransferId(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kind_checks() {
        let g = GroupId::random();
        let s = g.to_string();
        assert_eq!(s.len(), 24);
        assert_eq!(GroupId::parse(&s), Ok(g));
        assert!(UserId::parse(&s).is_err(), "a group id is not a user id");
        assert!(GroupId::parse("g_short").is_err());
        assert!(GroupId::parse("g_!!!!!!!!!!!!!!!!!!!!!!").is_err());
        assert!(GroupId::parse("").is_err());
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<GroupId>(&json).unwrap(), g);
    }
}
