//! The provider's daily transfer bill (WeChat Pay bill text shape).
//!
//! # Layout
//!
//! UTF-8 text, lines separated by `\n` (a `\r\n` line end and a leading UTF-8
//! BOM are tolerated on input, as are trailing empty lines). Every data field
//! is prefixed with a backtick (`` ` ``) — the provider does this so that
//! spreadsheet software keeps long numeric ids as text — and fields are
//! separated by `,` with no quoting, so no field may contain `,` or a control
//! character.
//!
//! ```text
//! line 1      transfer_time,mchid,appid,partner_trade_no,transfer_bill_no,openid,amount,status,description,fail_reason
//! lines 2..   `2024-01-05 10:00:00,`1900000001,`wx8888888888888888,`T20240105001,`1330000071100999991182020050700019480001,`o-MYE42l80oelYMDE34nYD456Xoy,`1.23,`SUCCESS,`提现,`
//! then        total_count,total_amount,success_count,success_amount
//! last        `3,`12.34,`2,`10.00
//! ```
//!
//! Row columns (header line 1, one row per transfer, zero rows allowed):
//!
//! | # | column             | content                                                     |
//! |---|--------------------|-------------------------------------------------------------|
//! | 1 | `transfer_time`    | `YYYY-MM-DD HH:MM:SS`, provider local time (Beijing, UTC+8) |
//! | 2 | `mchid`            | merchant id, non-empty                                       |
//! | 3 | `appid`            | app id, non-empty                                            |
//! | 4 | `partner_trade_no` | our transfer id (v3 `out_bill_no`), non-empty, unique        |
//! | 5 | `transfer_bill_no` | provider transfer id, non-empty, unique                      |
//! | 6 | `openid`           | receiving user, non-empty                                    |
//! | 7 | `amount`           | yuan with 2 decimals (`"0.10"`), strictly positive           |
//! | 8 | `status`           | a v3 transfer state: `SUCCESS`, `FAIL`, `CANCELLED`, ...     |
//! | 9 | `description`      | transfer remark, may be empty                                |
//! |10 | `fail_reason`      | failure code, empty when none                                |
//!
//! Summary (the line after the rows must be exactly the summary header,
//! followed by exactly one summary row and nothing else):
//!
//! | column           | content                                        |
//! |------------------|------------------------------------------------|
//! | `total_count`    | number of rows                                 |
//! | `total_amount`   | sum of all row amounts, yuan                   |
//! | `success_count`  | number of rows with status `SUCCESS`           |
//! | `success_amount` | sum of `SUCCESS` row amounts, yuan             |
//!
//! [`parse_bill`] checks all four against the rows. Line numbers in errors
//! are 1-based and count the header line.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chrono::NaiveDateTime;
use thiserror::Error;

use super::money::{format_yuan, parse_yuan, MoneyError};
use super::notify::TransferState;

/// Header line of the rows section.
pub const ROW_HEADER: &str = "transfer_time,mchid,appid,partner_trade_no,transfer_bill_no,openid,amount,status,description,fail_reason";
/// Header line of the summary section.
pub const SUMMARY_HEADER: &str = "total_count,total_amount,success_count,success_amount";
/// Format of `transfer_time`.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

const ROW_COLUMNS: [&str; 10] = [
    "transfer_time",
    "mchid",
    "appid",
    "partner_trade_no",
    "transfer_bill_no",
    "openid",
    "amount",
    "status",
    "description",
    "fail_reason",
];
const SUMMARY_COLUMNS: [&str; 4] = [
    "total_count",
    "total_amount",
    "success_count",
    "success_amount",
];

/// What is wrong with one line (or, for [`BillError::Unwritable`], one row).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    /// Line 1 is not [`ROW_HEADER`].
    #[error("header line is not {ROW_HEADER:?}")]
    BadHeader,
    /// Wrong number of comma-separated fields.
    #[error("expected {expected} fields, found {found}")]
    FieldCount {
        /// Fields required.
        expected: usize,
        /// Fields present.
        found: usize,
    },
    /// A field does not start with a backtick.
    #[error("field {column} does not start with '`'")]
    MissingBacktick {
        /// Column name.
        column: &'static str,
    },
    /// A required field is empty.
    #[error("field {column} is empty")]
    EmptyField {
        /// Column name.
        column: &'static str,
    },
    /// A field contains a comma or a control character.
    #[error("field {column} contains a comma or control character")]
    ForbiddenCharacter {
        /// Column name.
        column: &'static str,
    },
    /// An amount is not a valid yuan amount.
    #[error("field {column}: {source}")]
    BadAmount {
        /// Column name.
        column: &'static str,
        /// Why it did not parse.
        source: MoneyError,
    },
    /// A row amount is zero or negative, or a summary amount is negative.
    #[error("field {column} is out of range")]
    AmountOutOfRange {
        /// Column name.
        column: &'static str,
    },
    /// A count is not a plain non-negative integer.
    #[error("field {column} is not a valid count")]
    BadCount {
        /// Column name.
        column: &'static str,
    },
    /// `transfer_time` is not `YYYY-MM-DD HH:MM:SS`.
    #[error("transfer_time is not YYYY-MM-DD HH:MM:SS")]
    BadTime,
    /// `status` is not a known transfer state.
    #[error("unknown status {0:?}")]
    BadStatus(String),
    /// An empty line between the header and the summary row.
    #[error("blank line")]
    BlankLine,
    /// Content after the summary row.
    #[error("unexpected content after the summary row")]
    UnexpectedLine,
}

/// Errors of [`parse_bill`] and [`write_bill`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BillError {
    /// The text has no lines at all.
    #[error("bill is empty")]
    Empty,
    /// A malformed line (1-based line number).
    #[error("line {line}: {kind}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        kind: LineError,
    },
    /// The summary header or the summary row is missing.
    #[error("summary section is missing")]
    MissingSummary,
    /// A summary count disagrees with the rows.
    #[error("summary {field} is {declared}, but the rows give {computed}")]
    CountMismatch {
        /// `total_count` or `success_count`.
        field: &'static str,
        /// Value in the summary row.
        declared: u64,
        /// Value computed from the rows.
        computed: u64,
    },
    /// A summary amount (fen) disagrees with the rows.
    #[error("summary {field} is {declared} fen, but the rows give {computed} fen")]
    AmountMismatch {
        /// `total_amount` or `success_amount`.
        field: &'static str,
        /// Value in the summary row, fen.
        declared: i64,
        /// Value computed from the rows, fen.
        computed: i64,
    },
    /// Two rows share a `partner_trade_no`.
    #[error("duplicate partner_trade_no {id:?} on line {line} (first on line {first_line})")]
    DuplicatePartnerTradeNo {
        /// The repeated id.
        id: String,
        /// Line of the repeat.
        line: usize,
        /// Line of the first occurrence.
        first_line: usize,
    },
    /// Two rows share a `transfer_bill_no`.
    #[error("duplicate transfer_bill_no {id:?} on line {line} (first on line {first_line})")]
    DuplicateTransferBillNo {
        /// The repeated id.
        id: String,
        /// Line of the repeat.
        line: usize,
        /// Line of the first occurrence.
        first_line: usize,
    },
    /// The sum of the row amounts does not fit in `i64` fen.
    #[error("sum of amounts overflows")]
    TotalOverflow,
    /// [`write_bill`] was given a row it cannot write so that it parses back
    /// (0-based index into `Bill::rows`).
    #[error("row {row} cannot be written: {kind}")]
    Unwritable {
        /// 0-based row index.
        row: usize,
        /// What is wrong.
        kind: LineError,
    },
}

/// One transfer in the bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRow {
    /// Provider local time (UTC+8) of the transfer.
    pub transfer_time: NaiveDateTime,
    /// Merchant id.
    pub mchid: String,
    /// App id.
    pub appid: String,
    /// Our transfer id.
    pub partner_trade_no: String,
    /// The provider's transfer id.
    pub transfer_bill_no: String,
    /// Receiving user.
    pub openid: String,
    /// Amount in fen (written as yuan), strictly positive.
    pub amount: i64,
    /// Transfer state (never [`TransferState::Unknown`]).
    pub status: TransferState,
    /// Transfer remark (may be empty).
    pub description: String,
    /// Failure code; `Some("")` is written like `None`.
    pub fail_reason: Option<String>,
}

/// The summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BillSummary {
    /// Number of rows.
    pub total_count: u64,
    /// Sum of all amounts, fen.
    pub total_amount: i64,
    /// Number of `SUCCESS` rows.
    pub success_count: u64,
    /// Sum of `SUCCESS` amounts, fen.
    pub success_amount: i64,
}

/// A parsed bill. The summary is not stored: it is always derived from the
/// rows ([`Bill::summary`]), and [`parse_bill`] has checked the text's
/// summary equals it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bill {
    /// Rows in file order.
    pub rows: Vec<BillRow>,
}

impl Bill {
    /// Count and totals of the rows.
    pub fn summary(&self) -> Result<BillSummary, BillError> {
        let mut s = BillSummary::default();
        for row in &self.rows {
            s.total_count += 1;
            s.total_amount = s
                .total_amount
                .checked_add(row.amount)
                .ok_or(BillError::TotalOverflow)?;
            if row.status == TransferState::Success {
                s.success_count += 1;
                s.success_amount = s
                    .success_amount
                    .checked_add(row.amount)
                    .ok_or(BillError::TotalOverflow)?;
            }
        }
        Ok(s)
    }
}

fn has_forbidden(value: &str) -> bool {
    value.chars().any(|c| c == ',' || c.is_control())
}

/// Checks the invariants that both parsing and writing enforce.
fn validate_row(row: &BillRow) -> Result<(), LineError> {
    let text_fields: [(&'static str, &str, bool); 7] = [
        ("mchid", &row.mchid, true),
        ("appid", &row.appid, true),
        ("partner_trade_no", &row.partner_trade_no, true),
        ("transfer_bill_no", &row.transfer_bill_no, true),
        ("openid", &row.openid, true),
        ("description", &row.description, false),
        (
            "fail_reason",
            row.fail_reason.as_deref().unwrap_or(""),
            false,
        ),
    ];
    for (column, value, required) in text_fields {
        if required && value.is_empty() {
            return Err(LineError::EmptyField { column });
        }
        if has_forbidden(value) {
            return Err(LineError::ForbiddenCharacter { column });
        }
    }
    if row.amount <= 0 {
        return Err(LineError::AmountOutOfRange { column: "amount" });
    }
    if row.status == TransferState::Unknown {
        return Err(LineError::BadStatus(row.status.as_str().to_owned()));
    }
    Ok(())
}

/// Splits a data line into exactly `N` backtick-prefixed fields and strips
/// the backticks.
fn split_fields<'a, const N: usize>(
    line: &'a str,
    columns: &[&'static str; N],
) -> Result<[&'a str; N], LineError> {
    let found = line.split(',').count();
    if found != N {
        return Err(LineError::FieldCount { expected: N, found });
    }
    let mut out = [""; N];
    for ((slot, raw), column) in out.iter_mut().zip(line.split(',')).zip(columns.iter()) {
        *slot = raw
            .strip_prefix('`')
            .ok_or(LineError::MissingBacktick { column })?;
        if slot.chars().any(char::is_control) {
            return Err(LineError::ForbiddenCharacter { column });
        }
    }
    Ok(out)
}

fn parse_row(line: &str) -> Result<BillRow, LineError> {
    let [time, mchid, appid, partner_trade_no, transfer_bill_no, openid, amount, status, description, fail_reason] =
        split_fields(line, &ROW_COLUMNS)?;
    let transfer_time =
        NaiveDateTime::parse_from_str(time, TIME_FORMAT).map_err(|_| LineError::BadTime)?;
    let amount = parse_yuan(amount).map_err(|source| LineError::BadAmount {
        column: "amount",
        source,
    })?;
    let status =
        TransferState::from_wire(status).ok_or_else(|| LineError::BadStatus(status.to_owned()))?;
    let row = BillRow {
        transfer_time,
        mchid: mchid.to_owned(),
        appid: appid.to_owned(),
        partner_trade_no: partner_trade_no.to_owned(),
        transfer_bill_no: transfer_bill_no.to_owned(),
        openid: openid.to_owned(),
        amount,
        status,
        description: description.to_owned(),
        fail_reason: (!fail_reason.is_empty()).then(|| fail_reason.to_owned()),
    };
    validate_row(&row)?;
    Ok(row)
}

fn parse_count(value: &str, column: &'static str) -> Result<u64, LineError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::BadCount { column });
    }
    value.parse().map_err(|_| LineError::BadCount { column })
}

fn parse_summary_amount(value: &str, column: &'static str) -> Result<i64, LineError> {
    let amount = parse_yuan(value).map_err(|source| LineError::BadAmount { column, source })?;
    if amount < 0 {
        return Err(LineError::AmountOutOfRange { column });
    }
    Ok(amount)
}

fn parse_summary(line: &str) -> Result<BillSummary, LineError> {
    let [total_count, total_amount, success_count, success_amount] =
        split_fields(line, &SUMMARY_COLUMNS)?;
    Ok(BillSummary {
        total_count: parse_count(total_count, "total_count")?,
        total_amount: parse_summary_amount(total_amount, "total_amount")?,
        success_count: parse_count(success_count, "success_count")?,
        success_amount: parse_summary_amount(success_amount, "success_amount")?,
    })
}

/// Records `id` at `line`; returns the first line if it was already seen.
fn first_seen<'a>(seen: &mut HashMap<&'a str, usize>, id: &'a str, line: usize) -> Option<usize> {
    match seen.entry(id) {
        Entry::Occupied(first) => Some(*first.get()),
        Entry::Vacant(slot) => {
            slot.insert(line);
            None
        }
    }
}

fn check_unique<'a>(rows: impl Iterator<Item = (usize, &'a BillRow)>) -> Result<(), BillError> {
    let mut trade_nos: HashMap<&str, usize> = HashMap::new();
    let mut bill_nos: HashMap<&str, usize> = HashMap::new();
    for (line, row) in rows {
        if let Some(first_line) = first_seen(&mut trade_nos, &row.partner_trade_no, line) {
            return Err(BillError::DuplicatePartnerTradeNo {
                id: row.partner_trade_no.clone(),
                line,
                first_line,
            });
        }
        if let Some(first_line) = first_seen(&mut bill_nos, &row.transfer_bill_no, line) {
            return Err(BillError::DuplicateTransferBillNo {
                id: row.transfer_bill_no.clone(),
                line,
                first_line,
            });
        }
    }
    Ok(())
}

/// Parses a bill; see the module documentation for the layout and checks.
pub fn parse_bill(text: &str) -> Result<Bill, BillError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<(usize, &str)> = text
        .split('\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
        .collect();
    while lines.last().is_some_and(|(_, line)| line.is_empty()) {
        lines.pop();
    }
    let mut lines = lines.into_iter();

    match lines.next() {
        None => return Err(BillError::Empty),
        Some((_, header)) if header == ROW_HEADER => {}
        Some((line, _)) => {
            return Err(BillError::Line {
                line,
                kind: LineError::BadHeader,
            })
        }
    }

    let mut rows: Vec<(usize, BillRow)> = Vec::new();
    let mut saw_summary_header = false;
    for (line, text) in lines.by_ref() {
        if text == SUMMARY_HEADER {
            saw_summary_header = true;
            break;
        }
        if text.is_empty() {
            return Err(BillError::Line {
                line,
                kind: LineError::BlankLine,
            });
        }
        let row = parse_row(text).map_err(|kind| BillError::Line { line, kind })?;
        rows.push((line, row));
    }
    if !saw_summary_header {
        return Err(BillError::MissingSummary);
    }
    let declared = match lines.next() {
        None => return Err(BillError::MissingSummary),
        Some((line, text)) => parse_summary(text).map_err(|kind| BillError::Line { line, kind })?,
    };
    if let Some((line, _)) = lines.next() {
        return Err(BillError::Line {
            line,
            kind: LineError::UnexpectedLine,
        });
    }

    check_unique(rows.iter().map(|(line, row)| (*line, row)))?;
    let bill = Bill {
        rows: rows.into_iter().map(|(_, row)| row).collect(),
    };
    let computed = bill.summary()?;
    for (field, declared, computed) in [
        ("total_count", declared.total_count, computed.total_count),
        (
            "success_count",
            declared.success_count,
            computed.success_count,
        ),
    ] {
        if declared != computed {
            return Err(BillError::CountMismatch {
                field,
                declared,
                computed,
            });
        }
    }
    for (field, declared, computed) in [
        ("total_amount", declared.total_amount, computed.total_amount),
        (
            "success_amount",
            declared.success_amount,
            computed.success_amount,
        ),
    ] {
        if declared != computed {
            return Err(BillError::AmountMismatch {
                field,
                declared,
                computed,
            });
        }
    }
    Ok(bill)
}

/// Writes a bill in the layout of the module documentation (LF line ends,
/// trailing newline, no BOM), with the summary computed from the rows.
///
/// Fails with [`BillError::Unwritable`] for a row that [`parse_bill`] would
/// reject (empty ids, a `,` or control character in a field, non-positive
/// amount, [`TransferState::Unknown`]), with a duplicate-id error for repeated
/// ids (line numbers as they would be in the output), and with
/// [`BillError::TotalOverflow`]. Whatever it returns parses back to an equal
/// [`Bill`] (modulo `fail_reason: Some("")`, which reads back as `None`).
pub fn write_bill(bill: &Bill) -> Result<String, BillError> {
    for (row_index, row) in bill.rows.iter().enumerate() {
        validate_row(row).map_err(|kind| BillError::Unwritable {
            row: row_index,
            kind,
        })?;
    }
    check_unique(bill.rows.iter().enumerate().map(|(i, row)| (i + 2, row)))?;
    let summary = bill.summary()?;

    let mut out = String::with_capacity(ROW_HEADER.len() + 160 * bill.rows.len() + 96);
    out.push_str(ROW_HEADER);
    out.push('\n');
    for row in &bill.rows {
        let time = row.transfer_time.format(TIME_FORMAT).to_string();
        let amount = format_yuan(row.amount);
        let fields: [&str; 10] = [
            &time,
            &row.mchid,
            &row.appid,
            &row.partner_trade_no,
            &row.transfer_bill_no,
            &row.openid,
            &amount,
            row.status.as_str(),
            &row.description,
            row.fail_reason.as_deref().unwrap_or(""),
        ];
        push_fields(&mut out, &fields);
    }
    out.push_str(SUMMARY_HEADER);
    out.push('\n');
    let total_count = summary.total_count.to_string();
    let total_amount = format_yuan(summary.total_amount);
    let success_count = summary.success_count.to_string();
    let success_amount = format_yuan(summary.success_amount);
    push_fields(
        &mut out,
        &[&total_count, &total_amount, &success_count, &success_amount],
    );
    Ok(out)
}

fn push_fields(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('`');
        out.push_str(field);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, TIME_FORMAT).expect("time")
    }

    fn row(n: u32, amount: i64, status: TransferState) -> BillRow {
        BillRow {
            transfer_time: time(&format!("2024-01-05 10:00:{:02}", n % 60)),
            mchid: "1900000001".into(),
            appid: "wx8888888888888888".into(),
            partner_trade_no: format!("T{n:04}"),
            transfer_bill_no: format!("13300000711009999911820200507{n:011}"),
            openid: format!("o-user{n}"),
            amount,
            status,
            description: "提现".into(),
            fail_reason: (status == TransferState::Fail).then(|| "PAYEE_ACCOUNT_ABNORMAL".into()),
        }
    }

    fn sample() -> Bill {
        Bill {
            rows: vec![
                row(1, 123, TransferState::Success),
                row(2, 10, TransferState::Success),
                row(3, 123_456_789, TransferState::Fail),
                row(4, 1, TransferState::Cancelled),
            ],
        }
    }

    const TEXT: &str = "\
transfer_time,mchid,appid,partner_trade_no,transfer_bill_no,openid,amount,status,description,fail_reason
`2024-01-05 10:00:00,`1900000001,`wx1,`T1,`P1,`o-a,`0.10,`SUCCESS,`提现 红包,`
`2024-01-05 10:00:01,`1900000001,`wx1,`T2,`P2,`o-b,`1234567.89,`SUCCESS,`,`
`2024-01-05 10:00:02,`1900000001,`wx1,`T3,`P3,`o-c,`5,`FAIL,`x,`NAME_MISMATCH
total_count,total_amount,success_count,success_amount
`3,`1234572.99,`2,`1234567.99
";

    fn replace_line(text: &str, line: usize, new: &str) -> String {
        text.lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == line { new } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn line_err(text: &str) -> (usize, LineError) {
        match parse_bill(text) {
            Err(BillError::Line { line, kind }) => (line, kind),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn parses_handwritten_text() {
        let bill = parse_bill(TEXT).expect("parse");
        assert_eq!(bill.rows.len(), 3);
        let r = &bill.rows[0];
        assert_eq!(r.transfer_time, time("2024-01-05 10:00:00"));
        assert_eq!(r.partner_trade_no, "T1");
        assert_eq!(r.transfer_bill_no, "P1");
        assert_eq!(r.amount, 10);
        assert_eq!(r.status, TransferState::Success);
        assert_eq!(r.description, "提现 红包");
        assert_eq!(r.fail_reason, None);
        assert_eq!(bill.rows[1].amount, 123_456_789);
        assert_eq!(bill.rows[1].description, "");
        assert_eq!(bill.rows[2].amount, 500);
        assert_eq!(bill.rows[2].fail_reason.as_deref(), Some("NAME_MISMATCH"));
        assert_eq!(
            bill.summary().expect("summary"),
            BillSummary {
                total_count: 3,
                total_amount: 123_457_299,
                success_count: 2,
                success_amount: 123_456_799,
            }
        );
    }

    #[test]
    fn round_trip() {
        let bill = sample();
        let text = write_bill(&bill).expect("write");
        assert!(text.starts_with(ROW_HEADER));
        assert!(text.contains("`1234567.89,`FAIL,"));
        assert!(text.contains("`0.10,`SUCCESS,"));
        assert!(text.ends_with(&format!("{SUMMARY_HEADER}\n`4,`1234569.23,`2,`1.33\n")));
        assert_eq!(parse_bill(&text).expect("parse"), bill);

        // Writing what was parsed reproduces the text byte for byte.
        let normalised = TEXT.replace("`5,`FAIL", "`5.00,`FAIL");
        assert_eq!(
            write_bill(&parse_bill(TEXT).expect("parse")).expect("write"),
            normalised
        );
    }

    #[test]
    fn empty_bill_round_trip() {
        let text = write_bill(&Bill::default()).expect("write");
        assert_eq!(
            text,
            format!("{ROW_HEADER}\n{SUMMARY_HEADER}\n`0,`0.00,`0,`0.00\n")
        );
        assert_eq!(parse_bill(&text).expect("parse"), Bill::default());
    }

    #[test]
    fn tolerates_bom_crlf_and_trailing_newlines() {
        let crlf = format!("\u{feff}{}", TEXT.replace('\n', "\r\n"));
        assert_eq!(
            parse_bill(&crlf).expect("crlf"),
            parse_bill(TEXT).expect("lf")
        );
        let no_final_newline = TEXT.trim_end_matches('\n');
        assert_eq!(
            parse_bill(no_final_newline).expect("no newline"),
            parse_bill(TEXT).expect("lf")
        );
        let extra = format!("{TEXT}\n\r\n");
        assert_eq!(
            parse_bill(&extra).expect("extra"),
            parse_bill(TEXT).expect("lf")
        );
    }

    #[test]
    fn summary_mismatch_detected() {
        let t = TEXT.replace("`3,`1234572.99", "`4,`1234572.99");
        assert_eq!(
            parse_bill(&t),
            Err(BillError::CountMismatch {
                field: "total_count",
                declared: 4,
                computed: 3
            })
        );
        let t = TEXT.replace("`1234572.99", "`1234573.00");
        assert_eq!(
            parse_bill(&t),
            Err(BillError::AmountMismatch {
                field: "total_amount",
                declared: 123_457_300,
                computed: 123_457_299
            })
        );
        let t = TEXT.replace("`2,`1234567.99", "`3,`1234567.99");
        assert_eq!(
            parse_bill(&t),
            Err(BillError::CountMismatch {
                field: "success_count",
                declared: 3,
                computed: 2
            })
        );
        let t = TEXT.replace("`2,`1234567.99", "`2,`1234567.98");
        assert_eq!(
            parse_bill(&t),
            Err(BillError::AmountMismatch {
                field: "success_amount",
                declared: 123_456_798,
                computed: 123_456_799
            })
        );
        // A changed row amount is caught by the summary.
        let t = TEXT.replace("`0.10,`SUCCESS", "`0.11,`SUCCESS");
        assert!(matches!(
            parse_bill(&t),
            Err(BillError::AmountMismatch {
                field: "total_amount",
                ..
            })
        ));
        // A dropped row is caught too.
        let t = replace_line(TEXT, 3, "").replace("\n\n", "\n");
        assert!(matches!(
            parse_bill(&t),
            Err(BillError::CountMismatch {
                field: "total_count",
                declared: 3,
                computed: 2
            })
        ));
    }

    #[test]
    fn malformed_lines_report_line_numbers() {
        // Header.
        assert_eq!(
            line_err(&replace_line(TEXT, 1, "time,mchid")),
            (1, LineError::BadHeader)
        );
        assert_eq!(line_err("garbage"), (1, LineError::BadHeader));
        // Missing backtick in a row.
        assert_eq!(
            line_err(&TEXT.replace("`T2,", "T2,")),
            (
                3,
                LineError::MissingBacktick {
                    column: "partner_trade_no"
                }
            )
        );
        // Field count.
        assert_eq!(
            line_err(&TEXT.replace("`x,`NAME_MISMATCH", "`x,y,`NAME_MISMATCH")),
            (
                4,
                LineError::FieldCount {
                    expected: 10,
                    found: 11
                }
            )
        );
        // Bad amounts.
        assert_eq!(
            line_err(&TEXT.replace("`0.10,", "`0.101,")),
            (
                2,
                LineError::BadAmount {
                    column: "amount",
                    source: MoneyError::TooManyDecimals
                }
            )
        );
        assert!(matches!(
            line_err(&TEXT.replace("`0.10,", "`1e1,")),
            (
                2,
                LineError::BadAmount {
                    column: "amount",
                    source: MoneyError::InvalidCharacter { found: 'e', .. }
                }
            )
        ));
        assert_eq!(
            line_err(&TEXT.replace("`0.10,", "`0.00,")),
            (2, LineError::AmountOutOfRange { column: "amount" })
        );
        assert_eq!(
            line_err(&TEXT.replace("`0.10,", "`-0.10,")),
            (2, LineError::AmountOutOfRange { column: "amount" })
        );
        // Bad time and status.
        assert_eq!(
            line_err(&TEXT.replace("`2024-01-05 10:00:01", "`2024-01-05T10:00:01")),
            (3, LineError::BadTime)
        );
        assert_eq!(
            line_err(&TEXT.replace("`2024-01-05 10:00:01", "`2024-02-30 10:00:01")),
            (3, LineError::BadTime)
        );
        assert_eq!(
            line_err(&TEXT.replace("`FAIL", "`FAILED")),
            (4, LineError::BadStatus("FAILED".into()))
        );
        // Empty required field.
        assert_eq!(
            line_err(&TEXT.replace("`o-b,", "`,")),
            (3, LineError::EmptyField { column: "openid" })
        );
        // Control character inside a field.
        assert_eq!(
            line_err(&TEXT.replace("`x,", "`x\ty,")),
            (
                4,
                LineError::ForbiddenCharacter {
                    column: "description"
                }
            )
        );
        // Blank line in the middle.
        assert_eq!(
            line_err(&TEXT.replace(
                "`P2,`o-b,`1234567.89,`SUCCESS,`,`\n",
                "`P2,`o-b,`1234567.89,`SUCCESS,`,`\n\n"
            )),
            (4, LineError::BlankLine)
        );
        // Summary row.
        assert_eq!(
            line_err(&TEXT.replace("`3,`1234572.99", "3,`1234572.99")),
            (
                6,
                LineError::MissingBacktick {
                    column: "total_count"
                }
            )
        );
        assert_eq!(
            line_err(&TEXT.replace("`3,`1234572.99", "`+3,`1234572.99")),
            (
                6,
                LineError::BadCount {
                    column: "total_count"
                }
            )
        );
        assert_eq!(
            line_err(&TEXT.replace("`3,`1234572.99", "`3,`1234572.991")),
            (
                6,
                LineError::BadAmount {
                    column: "total_amount",
                    source: MoneyError::TooManyDecimals
                }
            )
        );
        assert_eq!(
            line_err(&TEXT.replace("`3,`1234572.99,`2,`1234567.99", "`3,`1234572.99,`2")),
            (
                6,
                LineError::FieldCount {
                    expected: 4,
                    found: 3
                }
            )
        );
        // Content after the summary row.
        assert_eq!(
            line_err(&format!("{TEXT}`extra\n")),
            (7, LineError::UnexpectedLine)
        );
        // Line numbers count CRLF lines the same and ignore the BOM.
        let crlf = format!(
            "\u{feff}{}",
            TEXT.replace('\n', "\r\n").replace("`FAIL", "`NOPE")
        );
        assert_eq!(line_err(&crlf), (4, LineError::BadStatus("NOPE".into())));
    }

    #[test]
    fn missing_sections() {
        assert_eq!(parse_bill(""), Err(BillError::Empty));
        assert_eq!(parse_bill("\u{feff}\r\n\n"), Err(BillError::Empty));
        let no_summary: String = TEXT.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert_eq!(parse_bill(&no_summary), Err(BillError::MissingSummary));
        let no_summary_row: String = TEXT.lines().take(5).map(|l| format!("{l}\n")).collect();
        assert_eq!(parse_bill(&no_summary_row), Err(BillError::MissingSummary));
        assert_eq!(parse_bill(ROW_HEADER), Err(BillError::MissingSummary));
    }

    #[test]
    fn duplicates_rejected() {
        let t = TEXT.replace("`T3,", "`T1,");
        assert_eq!(
            parse_bill(&t),
            Err(BillError::DuplicatePartnerTradeNo {
                id: "T1".into(),
                line: 4,
                first_line: 2
            })
        );
        let t = TEXT.replace("`P3,", "`P2,");
        assert_eq!(
            parse_bill(&t),
            Err(BillError::DuplicateTransferBillNo {
                id: "P2".into(),
                line: 4,
                first_line: 3
            })
        );
        let mut bill = sample();
        let dup = bill.rows[0].partner_trade_no.clone();
        bill.rows[2].partner_trade_no = dup.clone();
        assert_eq!(
            write_bill(&bill),
            Err(BillError::DuplicatePartnerTradeNo {
                id: dup,
                line: 4,
                first_line: 2
            })
        );
    }

    #[test]
    fn amount_precision() {
        for (yuan, fen) in [
            ("0.10", 10),
            ("0.01", 1),
            ("0.99", 99),
            ("1234567.89", 123_456_789),
            ("92233720368547758.07", i64::MAX),
        ] {
            let text = format!(
                "{ROW_HEADER}\n`2024-01-05 10:00:00,`m,`a,`T,`P,`o,`{yuan},`SUCCESS,`,`\n{SUMMARY_HEADER}\n`1,`{yuan},`1,`{yuan}\n"
            );
            let bill = parse_bill(&text).expect(yuan);
            assert_eq!(bill.rows[0].amount, fen, "{yuan}");
            assert_eq!(write_bill(&bill).expect("write"), text);
        }
        // 0.1 + 0.2 in floating point is not 0.3; here it is exact.
        let text = format!(
            "{ROW_HEADER}\n`2024-01-05 10:00:00,`m,`a,`T1,`P1,`o,`0.1,`SUCCESS,`,`\n`2024-01-05 10:00:00,`m,`a,`T2,`P2,`o,`0.2,`SUCCESS,`,`\n{SUMMARY_HEADER}\n`2,`0.30,`2,`0.30\n"
        );
        assert_eq!(
            parse_bill(&text)
                .expect("exact")
                .summary()
                .expect("s")
                .total_amount,
            30
        );
    }

    #[test]
    fn total_overflow_detected() {
        let text = format!(
            "{ROW_HEADER}\n`2024-01-05 10:00:00,`m,`a,`T1,`P1,`o,`92233720368547758.07,`SUCCESS,`,`\n`2024-01-05 10:00:00,`m,`a,`T2,`P2,`o,`0.01,`SUCCESS,`,`\n{SUMMARY_HEADER}\n`2,`0.00,`2,`0.00\n"
        );
        assert_eq!(parse_bill(&text), Err(BillError::TotalOverflow));
        let bill = Bill {
            rows: vec![
                row(1, i64::MAX, TransferState::Fail),
                row(2, 1, TransferState::Fail),
            ],
        };
        assert_eq!(write_bill(&bill), Err(BillError::TotalOverflow));
    }

    #[test]
    fn write_rejects_unwritable_rows() {
        type Mutation = fn(&mut BillRow);
        let cases: [(Mutation, LineError); 6] = [
            (
                |r| r.description = "a,b".into(),
                LineError::ForbiddenCharacter {
                    column: "description",
                },
            ),
            (
                |r| r.openid = "o\nx".into(),
                LineError::ForbiddenCharacter { column: "openid" },
            ),
            (
                |r| r.mchid.clear(),
                LineError::EmptyField { column: "mchid" },
            ),
            (
                |r| r.amount = 0,
                LineError::AmountOutOfRange { column: "amount" },
            ),
            (
                |r| r.status = TransferState::Unknown,
                LineError::BadStatus("UNKNOWN".into()),
            ),
            (
                |r| r.fail_reason = Some("a\r".into()),
                LineError::ForbiddenCharacter {
                    column: "fail_reason",
                },
            ),
        ];
        for (mutate, kind) in cases {
            let mut bill = sample();
            mutate(&mut bill.rows[1]);
            assert_eq!(
                write_bill(&bill),
                Err(BillError::Unwritable { row: 1, kind })
            );
        }
        // Backticks inside a field survive: only the first one is the prefix.
        let mut bill = sample();
        bill.rows[0].description = "`quoted`".into();
        let text = write_bill(&bill).expect("write");
        assert!(text.contains(",``quoted`,"));
        assert_eq!(parse_bill(&text).expect("parse"), bill);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let inputs = [
            "\u{feff}",
            "\r",
            "\n\n\n",
            ",,,,",
            "`",
            "transfer_time",
            "é,ü,`ß",
            "\u{feff}\u{feff}",
        ];
        for input in inputs {
            assert!(parse_bill(input).is_err(), "{input:?}");
        }
        // Every prefix of a valid bill either parses or errors, never panics.
        for end in 0..=TEXT.len() {
            if let Some(prefix) = TEXT.get(..end) {
                let _ = parse_bill(prefix);
            }
        }
    }
}
