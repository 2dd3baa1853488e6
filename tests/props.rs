//! Property tests (proptest) of everything that reads outside input, and of
//! the red packet split: no input makes them panic, and what they promise
//! holds for any input. `PROPTEST_CASES=100000 cargo test --test props` for a
//! longer run.

use proptest::prelude::*;
use qrgate::domain::packet::{self, Mode};
use qrgate_provider::{bill, money, notify};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn token_parsing_never_panics(s in ".{0,300}") {
        let _ = qrgate::domain::token::parse(&s);
    }

    #[test]
    fn token_parsing_of_base64ish_text_never_panics(s in "[A-Za-z0-9_-]{0,200}") {
        if let Ok(p) = qrgate::domain::token::parse(&s) {
            let _ = p.tag(&[7; 32]);
            let _ = p.verify(|_| None);
        }
    }

    #[test]
    fn bill_parsing_never_panics(s in "(`?[-0-9A-Za-z.:, ]{0,20}[,\n]){0,40}") {
        if let Ok(b) = bill::parse_bill(&s) {
            let _ = b.summary();
        }
    }

    #[test]
    fn bill_parsing_of_any_text_never_panics(s in ".{0,2000}") {
        let _ = bill::parse_bill(&s);
    }

    #[test]
    fn yuan_parsing_is_exact_or_refused(s in "-?[0-9]{0,14}(\\.[0-9]{0,3})?") {
        if let Ok(fen) = money::parse_yuan(&s) {
            // What parses formats back to the same amount.
            prop_assert_eq!(money::parse_yuan(&money::format_yuan(fen)).ok(), Some(fen));
        }
    }

    #[test]
    fn notification_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = notify::parse_and_decrypt(&[1; 32], &body);
    }

    #[test]
    fn notification_envelopes_with_garbage_resources_never_panic(
        ct in "[A-Za-z0-9+/=]{0,300}", nonce in ".{0,20}", ad in ".{0,20}"
    ) {
        let body = serde_json::json!({
            "id": "x", "create_time": "2026-01-01T00:00:00+08:00",
            "resource_type": "encrypt-resource", "event_type": "MCHTRANSFER.BILL.FINISHED",
            "summary": "s",
            "resource": {"algorithm": "AEAD_AES_256_GCM", "ciphertext": ct, "nonce": nonce,
                         "associated_data": ad, "original_type": "mch_payment"}
        });
        let _ = notify::parse_and_decrypt(&[1; 32], body.to_string().as_bytes());
    }

    #[test]
    fn every_split_pays_the_total_with_no_share_below_the_minimum(
        seed in any::<[u8; 32]>(), count in 1u32..300, min in 1u64..5, extra in 0u64..100_000, fixed in any::<bool>()
    ) {
        let mut total = min * u64::from(count) + extra;
        if fixed {
            total -= total % u64::from(count);
        }
        let mode = if fixed { Mode::Fixed } else { Mode::Lucky };
        let v = packet::shares(mode, &seed, total, count, min);
        prop_assert_eq!(v.len(), count as usize);
        prop_assert_eq!(v.iter().sum::<u64>(), total);
        prop_assert!(v.iter().all(|x| *x >= min));
        let c = packet::commitment(&seed);
        prop_assert!(packet::verify_claims(mode, &seed, &c, total, count, min, &v).is_ok());
    }

    #[test]
    fn scan_code_parsing_never_panics_and_accepts_only_what_was_encoded(
        s in ".{0,64}", t in "[A-Za-z0-9_-]{24}", id in any::<[u8; 12]>()
    ) {
        use qrgate::domain::code;
        let key = [9u8; 32];
        let _ = code::parse(&key, &s);
        // A random 24-character code checks only with a 2^-48 chance.
        let _ = code::parse(&key, &t);
        let c = code::encode(&key, &code::CodeId(id));
        prop_assert!(c.len() <= 32);
        prop_assert_eq!(code::parse(&key, &c).map(|i| *i.as_bytes()).ok(), Some(id));
        prop_assert!(code::parse(&[8u8; 32], &c).is_err(), "another key refuses it");
    }

    #[test]
    fn packet_checks_never_panic(total in any::<u64>(), count in any::<u32>(), used in any::<u64>(), lucky in any::<bool>()) {
        let l = packet::Limits { min_share_fen: 1, max_total_fen: 20_000, max_shares: 1000, daily_max_fen: 100_000 };
        let mode = if lucky { Mode::Lucky } else { Mode::Fixed };
        if packet::check(total, count, mode, used, &l).is_ok() {
            prop_assert!(count >= 1 && total <= 20_000 && total >= u64::from(count));
        }
    }

    #[test]
    fn challenge_ids_never_panic_and_open_only_what_was_sealed(
        s in ".{0,200}",
        b64 in "ch_[A-Za-z0-9_-]{0,200}",
        ids in any::<[[u8; 16]; 3]>(),
        times in any::<(i64, i64, u32)>(),
        extra in any::<([u8; 8], u8, u8, u8)>(),
        solution in ".{0,80}",
        point in (-90.0f64..90.0, -180.0f64..180.0),
    ) {
        use qrgate::domain::challenge::{pow_solves, Challenge, Subject};
        use qrgate::domain::ids::{GroupId, InviteId, PacketId, UserId};
        use qrgate::domain::risk::ChallengeKind;
        let key = [5u8; 32];
        let _ = Challenge::open(&s, &key);
        let _ = Challenge::open(&b64, &key);
        let _ = pow_solves(&s, &solution, extra.1 % 33);
        let c = Challenge {
            kind: if extra.3 % 2 == 0 { ChallengeKind::Pow } else { ChallengeKind::Captcha },
            bits: extra.1,
            subject: match extra.2 % 3 {
                0 => Subject::Join { group: GroupId(ids[0]), invite: InviteId(ids[1]), epoch: times.2 },
                1 => Subject::NewAccount,
                _ => Subject::Claim {
                    packet: PacketId(ids[0]),
                    at: (extra.1 % 2 == 0).then_some(point),
                    referrer: (extra.3 % 3 == 0).then_some(UserId(ids[1])),
                },
            },
            user: UserId(ids[2]),
            issued_at: times.0,
            expires_at: times.1,
            salt: extra.0,
            score: extra.2,
            reasons: extra.3,
        };
        let (id, tag) = c.seal(&key);
        let opened = Challenge::open(&id, &key);
        prop_assert_eq!(opened.as_ref().map(|(c, _)| c.clone()).ok(), Some(c.clone()));
        prop_assert_eq!(opened.map(|(_, t)| t).ok(), Some(tag));
        prop_assert!(Challenge::open(&id, &[6u8; 32]).is_err(), "another key refuses it");
    }

    #[test]
    fn risk_scores_stay_in_range(
        age in any::<i64>(), joins in any::<u32>(), devices in any::<u32>(),
        last in any::<u64>(), counts in any::<[u32; 6]>(),
    ) {
        use qrgate::domain::risk::{assess, Bucket, Policy, Signals};
        let p = Policy::default();
        let w = Bucket {
            attempts: u64::from(counts[0]),
            joins: u64::from(counts[1]),
            requests: u64::from(counts[2]),
            new_accounts: u64::from(counts[3]),
            removed: u64::from(counts[4]),
            refusals: [("group_full".to_string(), u64::from(counts[5]))].into(),
            ..Bucket::default()
        };
        let a = assess(&Signals { account_age_seconds: age, user_recent_joins: joins, device_accounts: devices, invite_last_minute: last, invite_window: w }, &p);
        prop_assert!(a.score <= 100);
        prop_assert_eq!(a.score == 0, a.reasons.is_empty());
    }
}
