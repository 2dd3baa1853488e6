//! Exact conversion between yuan decimal strings and integer fen.
//!
//! The payment provider reports money in two ways: JSON amounts are integer
//! fen (1 yuan = 100 fen), bills are yuan with two decimals (`"12.30"`). This
//! module converts between them without ever touching floating point.
//!
//! Accepted grammar for [`parse_yuan`] (ASCII only, nothing else allowed):
//!
//! ```text
//! amount   = ["-"] digits ["." frac]
//! digits   = 1*DIGIT
//! frac     = 1*2DIGIT
//! ```
//!
//! So `"12"`, `"0.5"`, `"1.23"`, `"-0.01"` and `"007.10"` are accepted; `""`,
//! `"+1"`, `"1."`, `".5"`, `"1.234"`, `"1e2"`, `" 1"`, `"1 000"`, `"１"`
//! (full-width digit) and anything outside the `i64` fen range are rejected.

use thiserror::Error;

/// Why a yuan string could not be converted to fen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    /// The input was the empty string (or only a sign).
    #[error("amount is empty")]
    Empty,
    /// A character that is not an ASCII digit, a leading `-` or a single `.`.
    #[error("invalid character {found:?} at byte {index} in amount")]
    InvalidCharacter {
        /// The offending character.
        found: char,
        /// Its byte offset in the input.
        index: usize,
    },
    /// More than two digits after the decimal point.
    #[error("amount has more than 2 decimal places")]
    TooManyDecimals,
    /// Structurally wrong: missing digits before or after the `.`, or a
    /// second `.`.
    #[error("malformed amount")]
    Malformed,
    /// The value does not fit in an `i64` number of fen.
    #[error("amount out of range")]
    Overflow,
}

/// Parses a yuan decimal string (`"1.23"`) into integer fen (`123`).
///
/// See the module documentation for the exact grammar.
pub fn parse_yuan(input: &str) -> Result<i64, MoneyError> {
    let (negative, rest) = match input.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    if rest.is_empty() {
        return Err(MoneyError::Empty);
    }
    // Offset of `rest` inside `input`, for error positions.
    let base = input.len() - rest.len();

    let mut int_digits: usize = 0;
    let mut frac_digits: usize = 0;
    let mut seen_dot = false;
    // Magnitude in fen, accumulated as u64 so that i64::MIN is reachable.
    let mut magnitude: u64 = 0;

    for (offset, ch) in rest.char_indices() {
        match ch {
            '0'..='9' => {
                let digit = u64::from(ch as u8 - b'0');
                if seen_dot {
                    frac_digits += 1;
                    if frac_digits > 2 {
                        return Err(MoneyError::TooManyDecimals);
                    }
                } else {
                    int_digits += 1;
                }
                magnitude = magnitude
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(digit))
                    .ok_or(MoneyError::Overflow)?;
            }
            '.' => {
                if seen_dot || int_digits == 0 {
                    return Err(MoneyError::Malformed);
                }
                seen_dot = true;
            }
            other => {
                return Err(MoneyError::InvalidCharacter {
                    found: other,
                    index: base + offset,
                })
            }
        }
    }
    if int_digits == 0 || (seen_dot && frac_digits == 0) {
        return Err(MoneyError::Malformed);
    }
    // Scale the magnitude up to fen for the decimals that were not written.
    for _ in frac_digits..2 {
        magnitude = magnitude.checked_mul(10).ok_or(MoneyError::Overflow)?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
            .ok_or(MoneyError::Overflow)
    } else {
        i64::try_from(magnitude).map_err(|_| MoneyError::Overflow)
    }
}

/// Formats integer fen as a yuan string with exactly two decimals:
/// `123 -> "1.23"`, `-5 -> "-0.05"`, `0 -> "0.00"`.
///
/// The output is always accepted by [`parse_yuan`] and parses back to the same
/// value, for every `i64` including `i64::MIN`.
pub fn format_yuan(fen: i64) -> String {
    let magnitude = fen.unsigned_abs();
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_values() {
        assert_eq!(parse_yuan("1.23"), Ok(123));
        assert_eq!(parse_yuan("0.5"), Ok(50));
        assert_eq!(parse_yuan("12"), Ok(1200));
        assert_eq!(parse_yuan("-0.01"), Ok(-1));
        assert_eq!(parse_yuan("0"), Ok(0));
        assert_eq!(parse_yuan("-0"), Ok(0));
        assert_eq!(parse_yuan("0.10"), Ok(10));
        assert_eq!(parse_yuan("0.01"), Ok(1));
        assert_eq!(parse_yuan("1234567.89"), Ok(123_456_789));
        assert_eq!(parse_yuan("007.10"), Ok(710));
    }

    #[test]
    fn parses_extremes() {
        assert_eq!(parse_yuan("92233720368547758.07"), Ok(i64::MAX));
        assert_eq!(parse_yuan("-92233720368547758.08"), Ok(i64::MIN));
        assert_eq!(
            parse_yuan("92233720368547758.08"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            parse_yuan("-92233720368547758.09"),
            Err(MoneyError::Overflow)
        );
        // Overflow during the final x100 scaling.
        assert_eq!(parse_yuan("92233720368547759"), Err(MoneyError::Overflow));
        // Overflow of the u64 accumulator itself.
        assert_eq!(
            parse_yuan("99999999999999999999999999"),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_yuan(""), Err(MoneyError::Empty));
        assert_eq!(parse_yuan("-"), Err(MoneyError::Empty));
        assert_eq!(parse_yuan("1.234"), Err(MoneyError::TooManyDecimals));
        assert_eq!(parse_yuan("0.001"), Err(MoneyError::TooManyDecimals));
        assert_eq!(parse_yuan("1."), Err(MoneyError::Malformed));
        assert_eq!(parse_yuan(".5"), Err(MoneyError::Malformed));
        assert_eq!(parse_yuan("-.5"), Err(MoneyError::Malformed));
        assert_eq!(parse_yuan("1.2.3"), Err(MoneyError::Malformed));
        assert_eq!(
            parse_yuan("+1"),
            Err(MoneyError::InvalidCharacter {
                found: '+',
                index: 0
            })
        );
        assert_eq!(
            parse_yuan("--1"),
            Err(MoneyError::InvalidCharacter {
                found: '-',
                index: 1
            })
        );
        assert_eq!(
            parse_yuan("1e2"),
            Err(MoneyError::InvalidCharacter {
                found: 'e',
                index: 1
            })
        );
        assert_eq!(
            parse_yuan("1 000"),
            Err(MoneyError::InvalidCharacter {
                found: ' ',
                index: 1
            })
        );
        assert_eq!(
            parse_yuan(" 1"),
            Err(MoneyError::InvalidCharacter {
                found: ' ',
                index: 0
            })
        );
        assert_eq!(
            parse_yuan("1 "),
            Err(MoneyError::InvalidCharacter {
                found: ' ',
                index: 1
            })
        );
        assert_eq!(
            parse_yuan("1,00"),
            Err(MoneyError::InvalidCharacter {
                found: ',',
                index: 1
            })
        );
        // Full-width and Arabic-Indic digits are not ASCII digits.
        assert_eq!(
            parse_yuan("１"),
            Err(MoneyError::InvalidCharacter {
                found: '１',
                index: 0
            })
        );
        assert_eq!(
            parse_yuan("1.٥"),
            Err(MoneyError::InvalidCharacter {
                found: '٥',
                index: 2
            })
        );
        assert!(matches!(
            parse_yuan("NaN"),
            Err(MoneyError::InvalidCharacter { found: 'N', .. })
        ));
        assert!(matches!(
            parse_yuan("`1.00"),
            Err(MoneyError::InvalidCharacter { found: '`', .. })
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(format_yuan(123), "1.23");
        assert_eq!(format_yuan(-5), "-0.05");
        assert_eq!(format_yuan(0), "0.00");
        assert_eq!(format_yuan(10), "0.10");
        assert_eq!(format_yuan(1200), "12.00");
        assert_eq!(format_yuan(-100), "-1.00");
        assert_eq!(format_yuan(123_456_789), "1234567.89");
        assert_eq!(format_yuan(i64::MAX), "92233720368547758.07");
        assert_eq!(format_yuan(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn round_trips() {
        let mut values = vec![i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1];
        values.extend(-1_000..=1_000);
        let mut v: i64 = 1;
        while let Some(next) = v.checked_mul(7) {
            values.push(next);
            values.push(-next);
            values.push(next + 3);
            v = next;
        }
        for fen in values {
            assert_eq!(parse_yuan(&format_yuan(fen)), Ok(fen), "fen={fen}");
        }
    }
}
