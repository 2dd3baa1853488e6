//! Human-verification challenges, stateless until answered.
//!
//! A challenge id is `ch_` + base64url(payload || tag), the tag being a
//! 16-byte keyed blake3 MAC of the payload. The payload binds the challenge
//! to one user, a deadline and its [`Subject`] (a join through one
//! invitation, a new account from one network, or one claim on a packet),
//! so issuing one writes nothing: a bot wave cannot fill storage with
//! challenges. Answering one is single-use: the group (or the account
//! creation) records the tag of a passed challenge in the same write as
//! the join it admitted; a claim is single-use by itself (one share per
//! user and packet).
//!
//! The built-in kind is proof of work: find a `solution` (1 to 64 printable
//! ASCII characters) such that SHA-256(`id` ":" `solution`) starts with
//! `bits` zero bits. Browsers compute SHA-256 natively (WebCrypto), so the
//! landing page solves it without any script from elsewhere.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::ids::{GroupId, InviteId, PacketId, UserId};
use super::risk::{ChallengeKind, ChallengePolicy};

pub const PREFIX: &str = "ch_";
const VERSION: u8 = 2;
/// version, subject, kind, bits, user, issued_at, expires_at, salt, score, reasons.
const HEAD: usize = 1 + 1 + 1 + 1 + 16 + 8 + 8 + 8 + 1 + 1;
const JOIN: usize = 16 + 16 + 4;
/// flags, packet, lat, lon, referrer.
const CLAIM: usize = 1 + 16 + 8 + 8 + 16;
const TAG: usize = 16;
pub const MAX_SOLUTION: usize = 64;

/// What answering the challenge admits.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A join through `invite` of `group`, at the group's `epoch` (a ban
    /// in between burns it).
    Join {
        group: GroupId,
        invite: InviteId,
        epoch: u32,
    },
    /// A new account from a network: the challenge's `user` is the
    /// network's keyed tag ([`new_account_tag`]).
    NewAccount,
    /// A claim on a packet, with the claim's own fields, so that answering
    /// the challenge completes the claim as it was asked.
    Claim {
        packet: PacketId,
        at: Option<(f64, f64)>,
        referrer: Option<UserId>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub kind: ChallengeKind,
    /// Proof-of-work difficulty (leading zero bits).
    pub bits: u8,
    pub subject: Subject,
    pub user: UserId,
    pub issued_at: i64,
    pub expires_at: i64,
    /// Random, so two challenges issued in one second differ.
    pub salt: [u8; 8],
    /// The assessment of the attempt that was challenged, recorded with
    /// the join it completes: score, reasons (bit set, see
    /// `Reason::to_bits`; bit 7: the account was new).
    pub score: u8,
    pub reasons: u8,
}

/// What a client is told in a `challenge_required` problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Offer {
    /// Answer with `POST /v1/challenges/{id}`.
    pub id: String,
    pub kind: ChallengeKind,
    /// `pow`: find `solution` such that SHA-256(`id` ":" `solution`) starts
    /// with `pow_bits` zero bits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pow_bits: Option<u8>,
    /// `captcha`: the provider's site key for its widget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_key: Option<String>,
    /// RFC 3339.
    pub expires_at: String,
    /// Where to send the answer.
    pub answer_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed, forged, or issued to someone else.
    Invalid,
    Expired,
    /// Already answered and used for a join.
    Used,
    /// The answer is wrong.
    Failed,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid_challenge",
            Refusal::Expired => "challenge_expired",
            Refusal::Used => "challenge_used",
            Refusal::Failed => "challenge_failed",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Refusal::Invalid => {
                "the challenge id is malformed, forged or was issued to someone else"
            }
            Refusal::Expired => "the challenge has expired; join again to get a new one",
            Refusal::Used => "the challenge was already used",
            Refusal::Failed => "the answer does not solve the challenge",
        }
    }
}

fn kind_byte(k: ChallengeKind) -> u8 {
    match k {
        ChallengeKind::Pow => 1,
        ChallengeKind::Captcha => 2,
    }
}

fn mac(key: &[u8; 32], payload: &[u8]) -> [u8; TAG] {
    let h = blake3::keyed_hash(key, payload);
    let mut t = [0u8; TAG];
    t.copy_from_slice(&h.as_bytes()[..TAG]);
    t
}

impl Challenge {
    fn payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(HEAD + CLAIM);
        p.push(VERSION);
        p.push(match self.subject {
            Subject::Join { .. } => 1,
            Subject::NewAccount => 2,
            Subject::Claim { .. } => 3,
        });
        p.push(kind_byte(self.kind));
        p.push(self.bits);
        p.extend_from_slice(&self.user.0);
        p.extend_from_slice(&self.issued_at.to_be_bytes());
        p.extend_from_slice(&self.expires_at.to_be_bytes());
        p.extend_from_slice(&self.salt);
        p.push(self.score);
        p.push(self.reasons);
        match &self.subject {
            Subject::Join {
                group,
                invite,
                epoch,
            } => {
                p.extend_from_slice(&group.0);
                p.extend_from_slice(&invite.0);
                p.extend_from_slice(&epoch.to_be_bytes());
            }
            Subject::NewAccount => {}
            Subject::Claim {
                packet,
                at,
                referrer,
            } => {
                p.push(u8::from(at.is_some()) | u8::from(referrer.is_some()) << 1);
                p.extend_from_slice(&packet.0);
                let (lat, lon) = at.unwrap_or((0.0, 0.0));
                p.extend_from_slice(&lat.to_be_bytes());
                p.extend_from_slice(&lon.to_be_bytes());
                p.extend_from_slice(&referrer.map_or([0; 16], |r| r.0));
            }
        }
        p
    }

    /// The challenge id, and its tag (what a passed challenge is remembered by).
    pub fn seal(&self, key: &[u8; 32]) -> (String, [u8; TAG]) {
        let mut p = self.payload();
        let t = mac(key, &p);
        p.extend_from_slice(&t);
        (format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&p)), t)
    }

    /// Decode and authenticate a challenge id (nothing about time or use).
    pub fn open(id: &str, key: &[u8; 32]) -> Result<(Challenge, [u8; TAG]), Refusal> {
        let b64 = id.strip_prefix(PREFIX).ok_or(Refusal::Invalid)?;
        if b64.len() > 2 * (HEAD + CLAIM + TAG) {
            return Err(Refusal::Invalid);
        }
        let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|_| Refusal::Invalid)?;
        if raw.len() < HEAD + TAG {
            return Err(Refusal::Invalid);
        }
        let (p, t) = raw.split_at(raw.len() - TAG);
        let want = mac(key, p);
        // blake3::Hash equality is constant-time; pad the tags into hashes.
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        a[..TAG].copy_from_slice(&want);
        b[..TAG].copy_from_slice(t);
        if blake3::Hash::from(a) != blake3::Hash::from(b) || p[0] != VERSION {
            return Err(Refusal::Invalid);
        }
        let kind = match p[2] {
            1 => ChallengeKind::Pow,
            2 => ChallengeKind::Captcha,
            _ => return Err(Refusal::Invalid),
        };
        let id16 = |at: usize| -> [u8; 16] {
            let mut x = [0u8; 16];
            x.copy_from_slice(&p[at..at + 16]);
            x
        };
        let be8 = |at: usize| -> [u8; 8] {
            let mut x = [0u8; 8];
            x.copy_from_slice(&p[at..at + 8]);
            x
        };
        let rest = p.len() - HEAD;
        let subject = match p[1] {
            1 if rest == JOIN => {
                let mut e = [0u8; 4];
                e.copy_from_slice(&p[HEAD + 32..HEAD + 36]);
                Subject::Join {
                    group: GroupId(id16(HEAD)),
                    invite: InviteId(id16(HEAD + 16)),
                    epoch: u32::from_be_bytes(e),
                }
            }
            2 if rest == 0 => Subject::NewAccount,
            3 if rest == CLAIM => {
                let flags = p[HEAD];
                let at = (flags & 1 != 0).then(|| {
                    (
                        f64::from_be_bytes(be8(HEAD + 17)),
                        f64::from_be_bytes(be8(HEAD + 25)),
                    )
                });
                Subject::Claim {
                    packet: PacketId(id16(HEAD + 1)),
                    at,
                    referrer: (flags & 2 != 0).then(|| UserId(id16(HEAD + 33))),
                }
            }
            _ => return Err(Refusal::Invalid),
        };
        Ok((
            Challenge {
                kind,
                bits: p[3],
                subject,
                user: UserId(id16(4)),
                issued_at: i64::from_be_bytes(be8(20)),
                expires_at: i64::from_be_bytes(be8(28)),
                salt: be8(36),
                score: p[44],
                reasons: p[45],
            },
            want,
        ))
    }

    /// The proof of work asked of a new account from `network` (an address,
    /// or an IPv6 /64) while account creations from it burst: bound to the
    /// network by a keyed tag in place of the user, with no group.
    pub fn for_new_account(
        key: &[u8; 32],
        network: std::net::IpAddr,
        bits: u8,
        now: i64,
        ttl_seconds: i64,
    ) -> Challenge {
        Challenge {
            kind: ChallengeKind::Pow,
            bits,
            subject: Subject::NewAccount,
            user: new_account_tag(key, network),
            issued_at: now,
            expires_at: now + ttl_seconds,
            salt: super::ids::random_bytes(),
            score: 0,
            reasons: 0,
        }
    }

    /// Seal it and say what the client must solve, and where to answer.
    pub fn offer(&self, key: &[u8; 32], p: &ChallengePolicy) -> Offer {
        let (id, _) = self.seal(key);
        Offer {
            answer_url: format!("/v1/challenges/{id}"),
            id,
            kind: self.kind,
            pow_bits: (self.kind == ChallengeKind::Pow).then_some(self.bits),
            site_key: match self.kind {
                ChallengeKind::Captcha => p.captcha.as_ref().map(|c| c.site_key.clone()),
                ChallengeKind::Pow => None,
            },
            expires_at: crate::clock::rfc3339(self.expires_at),
        }
    }

    /// Whether `user` may answer it at `now` (the answer itself is checked apart).
    pub fn admits(&self, user: UserId, now: i64) -> Result<(), Refusal> {
        if self.user != user {
            return Err(Refusal::Invalid);
        }
        if now >= self.expires_at {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

/// What a new-account challenge names in place of a user: a keyed tag of
/// the network it was issued to.
pub fn new_account_tag(key: &[u8; 32], network: std::net::IpAddr) -> UserId {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"new account\0");
    match network {
        std::net::IpAddr::V4(a) => h.update(&a.octets()),
        std::net::IpAddr::V6(a) => h.update(&a.octets()),
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    UserId(id)
}

fn leading_zero_bits(h: &[u8]) -> u32 {
    let mut n = 0;
    for b in h {
        if *b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// Whether `solution` solves the proof of work of challenge `id`.
pub fn pow_solves(id: &str, solution: &str, bits: u8) -> bool {
    if solution.is_empty()
        || solution.len() > MAX_SOLUTION
        || !solution.bytes().all(|b| b.is_ascii_graphic())
    {
        return false;
    }
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(b":");
    h.update(solution.as_bytes());
    leading_zero_bits(&h.finalize()) >= u32::from(bits)
}

/// Find a solution (what a client does; used by tests and the load harness).
pub fn pow_solve(id: &str, bits: u8) -> String {
    let mut base = Sha256::new();
    base.update(id.as_bytes());
    base.update(b":");
    let mut n: u64 = 0;
    loop {
        let s = n.to_string();
        let mut h = base.clone();
        h.update(s.as_bytes());
        if leading_zero_bits(&h.finalize()) >= u32::from(bits) {
            return s;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn ch() -> Challenge {
        Challenge {
            kind: ChallengeKind::Pow,
            bits: 8,
            subject: Subject::Join {
                group: GroupId([1; 16]),
                invite: InviteId([2; 16]),
                epoch: 4,
            },
            user: UserId([3; 16]),
            issued_at: 1_000,
            expires_at: 1_300,
            salt: [9; 8],
            score: 60,
            reasons: 0b1000_0011,
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let (id, tag) = ch().seal(&KEY);
        assert!(id.starts_with(PREFIX));
        assert!(id.len() < 140, "fits a URL path comfortably: {}", id.len());
        let (back, t) = Challenge::open(&id, &KEY).expect("opens");
        assert_eq!(back, ch());
        assert_eq!(t, tag);
        for subject in [
            Subject::NewAccount,
            Subject::Claim {
                packet: PacketId([5; 16]),
                at: Some((31.2304, 121.4737)),
                referrer: Some(UserId([6; 16])),
            },
            Subject::Claim {
                packet: PacketId([5; 16]),
                at: None,
                referrer: None,
            },
        ] {
            let c = Challenge { subject, ..ch() };
            let (id, _) = c.seal(&KEY);
            assert!(id.len() < 170, "fits a URL path comfortably: {}", id.len());
            assert_eq!(Challenge::open(&id, &KEY).expect("opens").0, c);
        }
    }

    #[test]
    fn forged_or_altered_ids_are_invalid() {
        let (id, _) = ch().seal(&KEY);
        assert_eq!(Challenge::open(&id, &[8; 32]), Err(Refusal::Invalid));
        // flip one payload character
        let mut b = id.clone().into_bytes();
        b[10] = if b[10] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(b).expect("ascii");
        assert_eq!(Challenge::open(&altered, &KEY), Err(Refusal::Invalid));
        for bad in ["", "ch_", "ch_!!!", "xx_AAAA", &id[..id.len() - 2]] {
            assert_eq!(Challenge::open(bad, &KEY), Err(Refusal::Invalid), "{bad}");
        }
        let long = format!("ch_{}", "A".repeat(10_000));
        assert_eq!(Challenge::open(&long, &KEY), Err(Refusal::Invalid));
    }

    #[test]
    fn bound_to_user_and_deadline() {
        let c = ch();
        assert_eq!(c.admits(UserId([3; 16]), 1_299), Ok(()));
        assert_eq!(c.admits(UserId([3; 16]), 1_300), Err(Refusal::Expired));
        assert_eq!(c.admits(UserId([4; 16]), 1_000), Err(Refusal::Invalid));
    }

    #[test]
    fn proof_of_work() {
        let (id, _) = ch().seal(&KEY);
        let s = pow_solve(&id, 12);
        assert!(pow_solves(&id, &s, 12));
        assert!(pow_solves(&id, &s, 0));
        // the check hashes the id: the same solution does not solve another one
        let (other, _) = Challenge {
            salt: [1; 8],
            ..ch()
        }
        .seal(&KEY);
        assert!(!pow_solves(&other, &s, 12));
        for bad in ["", " ", "a b", &"9".repeat(65), "é"] {
            assert!(!pow_solves(&id, bad, 0), "{bad:?}");
        }
    }

    #[test]
    fn zero_bits_counting() {
        assert_eq!(leading_zero_bits(&[0, 0, 0x80]), 16);
        assert_eq!(leading_zero_bits(&[0, 0x01]), 15);
        assert_eq!(leading_zero_bits(&[0xff]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }
}
