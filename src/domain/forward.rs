//! A request one node forwards to the node that owns its entity (cluster
//! mode), signed with the cluster's shared secret so that the owner can
//! tell a forward from another node from one forged by anybody else.
//!
//! The signature is a keyed blake3 MAC (the keyed mode of blake3 is a PRF,
//! which is what HMAC provides for SHA-2) over a length-prefixed encoding of
//! everything the owner acts on: the method, the path with its query, the
//! forwarded headers (lower-case names, in the order given), a hash of the
//! body, the sending node, when it was sent and how many hops it made. A
//! forward is refused when its signature does not match, when it was sent
//! outside the allowed clock skew (a replay later on), or when it already
//! made its one hop.

/// Forwards make at most this many hops (the owner never forwards again).
pub const MAX_HOPS: u8 = 1;

/// What a forward signs.
pub struct Forward<'a> {
    pub method: &'a str,
    /// Path and query, as received.
    pub target: &'a str,
    /// The headers the owner reads (authorization, content-type,
    /// idempotency-key, ...), lower-case names.
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
    pub from_node: &'a str,
    /// When the forwarding node sent it (unix ms).
    pub sent_ms: i64,
    pub hops: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the forward's signature does not match")]
    BadSignature,
    #[error("the forward was sent outside the allowed clock skew")]
    Stale,
    #[error("the forward made too many hops")]
    TooManyHops,
}

fn put(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The signature of `f` under `secret`, hex.
pub fn sign(secret: &[u8; 32], f: &Forward) -> String {
    let mut h = blake3::Hasher::new_keyed(secret);
    put(&mut h, b"qrgate forward v1");
    put(&mut h, f.method.as_bytes());
    put(&mut h, f.target.as_bytes());
    h.update(&(f.headers.len() as u64).to_le_bytes());
    for (name, value) in f.headers {
        put(&mut h, name.as_bytes());
        put(&mut h, value);
    }
    put(&mut h, blake3::hash(f.body).as_bytes());
    put(&mut h, f.from_node.as_bytes());
    h.update(&f.sent_ms.to_le_bytes());
    h.update(&[f.hops]);
    h.finalize().to_hex().to_string()
}

/// Whether `signature` is `f`'s under `secret`, sent within `max_skew_ms`
/// of `now_ms`, and within the hop limit.
pub fn verify(
    secret: &[u8; 32],
    f: &Forward,
    signature: &str,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<(), Refusal> {
    let expected = blake3::Hash::from_hex(sign(secret, f)).map_err(|_| Refusal::BadSignature)?;
    let given = blake3::Hash::from_hex(signature).map_err(|_| Refusal::BadSignature)?;
    // blake3::Hash compares in constant time.
    if expected != given {
        return Err(Refusal::BadSignature);
    }
    if (now_ms - f.sent_ms).abs() > max_skew_ms {
        return Err(Refusal::Stale);
    }
    if f.hops > MAX_HOPS {
        return Err(Refusal::TooManyHops);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    fn forward<'a>(headers: &'a [(&'a str, &'a [u8])], body: &'a [u8]) -> Forward<'a> {
        Forward {
            method: "POST",
            target: "/v1/join",
            headers,
            body,
            from_node: "node-a",
            sent_ms: 1_000_000,
            hops: 1,
        }
    }

    #[test]
    fn a_signed_forward_verifies_and_any_change_is_refused() {
        let headers: &[(&str, &[u8])] = &[("authorization", b"Bearer qrs_x")];
        let f = forward(headers, b"{\"token\":\"t\"}");
        let sig = sign(&SECRET, &f);
        assert_eq!(verify(&SECRET, &f, &sig, 1_000_500, 30_000), Ok(()));

        let other_headers: &[(&str, &[u8])] = &[("authorization", b"Bearer qrs_y")];
        let changed = [
            Forward {
                method: "GET",
                ..forward(headers, b"{\"token\":\"t\"}")
            },
            Forward {
                target: "/v1/join?x=1",
                ..forward(headers, b"{\"token\":\"t\"}")
            },
            forward(other_headers, b"{\"token\":\"t\"}"),
            forward(headers, b"{\"token\":\"u\"}"),
            Forward {
                from_node: "node-b",
                ..forward(headers, b"{\"token\":\"t\"}")
            },
            Forward {
                sent_ms: 1_000_001,
                ..forward(headers, b"{\"token\":\"t\"}")
            },
            Forward {
                hops: 0,
                ..forward(headers, b"{\"token\":\"t\"}")
            },
        ];
        for c in &changed {
            assert_eq!(
                verify(&SECRET, c, &sig, 1_000_500, 30_000),
                Err(Refusal::BadSignature)
            );
        }
        assert_eq!(
            verify(&[8; 32], &f, &sig, 1_000_500, 30_000),
            Err(Refusal::BadSignature),
            "another secret"
        );
        assert_eq!(
            verify(&SECRET, &f, "not hex", 1_000_500, 30_000),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_replay_later_and_a_second_hop_are_refused() {
        let f = forward(&[], b"");
        let sig = sign(&SECRET, &f);
        assert_eq!(
            verify(&SECRET, &f, &sig, 1_000_000 + 30_001, 30_000),
            Err(Refusal::Stale)
        );
        let twice = Forward {
            hops: 2,
            ..forward(&[], b"")
        };
        let sig = sign(&SECRET, &twice);
        assert_eq!(
            verify(&SECRET, &twice, &sig, 1_000_000, 30_000),
            Err(Refusal::TooManyHops)
        );
    }

    #[test]
    fn header_boundaries_are_part_of_what_is_signed() {
        // The same bytes split differently between name and value differ.
        let a: &[(&str, &[u8])] = &[("ab", b"c")];
        let b: &[(&str, &[u8])] = &[("a", b"bc")];
        assert_ne!(
            sign(&SECRET, &forward(a, b"")),
            sign(&SECRET, &forward(b, b""))
        );
    }
}
