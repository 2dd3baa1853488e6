//! Backups of a running server, their restore, and the offline check of a
//! data dir (`qrgate backup`, `qrgate restore`, `qrgate check-data`).
//!
//! A backup is a directory:
//!
//! | path | what it is |
//! |---|---|
//! | `state.snap` | sled's checkpoint, as one file (`storage/snapshot.rs`) |
//! | `journal/*.log` | the journal from before the checkpoint to the backup's position |
//! | `secret.key`, `keys/*.ed25519`, `admin.token` | the data dir's secrets (mode 0600) |
//! | `MANIFEST.json` | format, positions, and every file's size and blake3; written last |
//!
//! A backup without its manifest is one that did not finish (a crash, a
//! full disk): restore refuses it, as it refuses one whose files do not
//! match the manifest.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::domain::books;
use crate::storage::backup::{self as store, FileCopy};
use crate::storage::{Finding, Storage};

pub const MANIFEST: &str = "MANIFEST.json";
const FORMAT: &str = "qrgate-backup/1";

/// What a backup holds; `MANIFEST.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// Unix seconds when it finished.
    pub created_at: i64,
    /// The server version that wrote it.
    pub version: String,
    /// The journal position it is consistent at: every write acknowledged
    /// up to here, nothing after.
    pub position: u64,
    /// The checkpoint within it.
    pub checkpoint: u64,
    pub files: Vec<FileCopy>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("a backup is running; one at a time")]
    Running,
    #[error("{0} is not empty: a backup goes into an empty or new directory")]
    TargetNotEmpty(String),
    #[error("{0}")]
    BadTarget(String),
    #[error("backups are not available here: {0}")]
    Unsupported(String),
    #[error("the backup failed (nothing usable was left in the target): {0}")]
    Failed(String),
}

static RUNNING: Mutex<()> = Mutex::new(());

/// Whether `dir` is missing, or an empty directory.
fn is_empty_dir(dir: &Path) -> Result<bool, String> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// Create `dir` (and missing parents) as 0700 if it does not exist.
fn make_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Remove everything in `dir` (which was empty before we wrote to it).
fn clear(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// The data dir's secrets as (path under it, contents): the key ring,
/// checked, and the generated admin token if there is one.
fn secret_files(data_dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut files = crate::keys::ring_files(data_dir).map_err(|e| e.to_string())?;
    let token = crate::keys::admin_token_path(data_dir);
    match std::fs::read_to_string(&token) {
        Ok(t) => files.push(("admin.token".into(), t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", token.display())),
    }
    Ok(files)
}

fn write_secrets(dir: &Path, files: &[(String, String)]) -> Result<Vec<FileCopy>, String> {
    make_private_dir(&dir.join("keys"))?;
    let mut out = Vec::new();
    for (name, text) in files {
        crate::keys::write_secret_file(&dir.join(name), text).map_err(|e| e.to_string())?;
        out.push(FileCopy {
            path: name.clone(),
            bytes: text.len() as u64,
            blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
        });
    }
    Ok(out)
}

/// Back up the running server's `storage` and the secrets of `data_dir`
/// into `target` (absolute; created 0700 if missing, else it must be
/// empty). Writes go on meanwhile. One at a time.
pub fn run(storage: &Storage, data_dir: &Path, target: &Path) -> Result<Manifest, BackupError> {
    if !target.is_absolute() {
        return Err(BackupError::BadTarget(format!(
            "`dir` must be an absolute path on the server's host, not {}",
            target.display()
        )));
    }
    if storage.is_cluster() {
        return Err(BackupError::Unsupported(
            "a cluster node keeps no journal of its own: the NATS stream is the store of record, and backing it up is the NATS operator's job".into(),
        ));
    }
    let _one = RUNNING.try_lock().map_err(|_| BackupError::Running)?;
    if !is_empty_dir(target).map_err(BackupError::BadTarget)? {
        return Err(BackupError::TargetNotEmpty(target.display().to_string()));
    }
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if target.starts_with(&data) {
        return Err(BackupError::BadTarget(format!(
            "{} is inside the data dir",
            target.display()
        )));
    }
    let secrets = secret_files(data_dir).map_err(BackupError::Failed)?;
    make_private_dir(target).map_err(BackupError::Failed)?;
    let started = std::time::Instant::now();
    let result = (|| -> Result<Manifest, BackupError> {
        let copied = storage
            .backup_into(target)
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        let mut files = copied.files;
        files.extend(write_secrets(target, &secrets).map_err(BackupError::Failed)?);
        crate::storage::crash_point("backup_before_manifest");
        let manifest = Manifest {
            format: FORMAT.into(),
            created_at: crate::clock::now(),
            version: env!("CARGO_PKG_VERSION").into(),
            position: copied.position,
            checkpoint: copied.checkpoint,
            files,
        };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        // Written last, atomically and durably: a backup without it did not finish.
        crate::keys::write_secret_file(&target.join(MANIFEST), &text)
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        Ok(manifest)
    })();
    match &result {
        Ok(m) => {
            crate::metrics::BACKUPS.with_label_values(&["ok"]).inc();
            crate::metrics::BACKUP_LAST_SUCCESS.set(m.created_at);
            crate::metrics::BACKUP_SECONDS.observe(started.elapsed().as_secs_f64());
            tracing::info!(
                dir = %target.display(),
                position = m.position,
                mb = m.bytes() as f64 / 1e6,
                ms = started.elapsed().as_millis() as u64,
                "backup written"
            );
        }
        Err(e) => {
            crate::metrics::BACKUPS.with_label_values(&["failed"]).inc();
            tracing::error!(dir = %target.display(), error = %e, "backup failed");
            // The target was empty: what is in it now is this backup's.
            clear(target);
        }
    }
    result
}

/// Read and check a backup: its manifest, and every file against it.
pub fn verify(from: &Path) -> Result<Manifest, String> {
    let path = from.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} has no {MANIFEST}: not a complete backup (one that was interrupted has none)",
                from.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a backup manifest: {e}", path.display()))?;
    if m.format != FORMAT {
        return Err(format!(
            "{}: format {:?}, this qrgate reads {FORMAT:?}",
            path.display(),
            m.format
        ));
    }
    for f in &m.files {
        let ok_name = !f.path.is_empty()
            && Path::new(&f.path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !ok_name {
            return Err(format!("{}: names {:?}", path.display(), f.path));
        }
        let p = from.join(&f.path);
        let mut file = std::fs::File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut h = blake3::Hasher::new();
        let n = std::io::copy(&mut file, &mut h).map_err(|e| format!("{}: {e}", p.display()))?;
        if n != f.bytes || h.finalize().to_hex().as_str() != f.blake3 {
            return Err(format!(
                "{}: does not match the manifest (damaged or changed since the backup)",
                p.display()
            ));
        }
    }
    if !m.files.iter().any(|f| f.path == "secret.key") {
        return Err(format!("{}: names no secret.key", path.display()));
    }
    Ok(m)
}

/// `qrgate restore`: check the backup in `from`, then put it in place as
/// `data_dir` (missing or empty), then check the result as `check-data`
/// does. A failure leaves `data_dir` as empty as it was.
pub fn restore(from: &Path, data_dir: &Path) -> Result<(Manifest, DataCheck), String> {
    let m = verify(from)?;
    if !is_empty_dir(data_dir)? {
        return Err(format!(
            "{} is not empty: restore into a new or empty data dir",
            data_dir.display()
        ));
    }
    make_private_dir(data_dir)?;
    let result = (|| {
        store::restore(from, data_dir, m.position).map_err(|e| e.to_string())?;
        let secrets: Vec<(String, String)> = m
            .files
            .iter()
            .filter(|f| {
                f.path == "secret.key" || f.path == "admin.token" || f.path.starts_with("keys/")
            })
            .map(|f| {
                let p = from.join(&f.path);
                std::fs::read_to_string(&p)
                    .map(|t| (f.path.clone(), t))
                    .map_err(|e| format!("{}: {e}", p.display()))
            })
            .collect::<Result<_, _>>()?;
        write_secrets(data_dir, &secrets)?;
        // sled lets go of the directory's lock from a background thread a
        // moment after it is closed.
        let mut tries = 0;
        loop {
            match check_data(data_dir) {
                Err(e) if e.contains("is in use") && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                r => return r,
            }
        }
    })();
    match result {
        Ok(check) => Ok((m, check)),
        Err(e) => {
            clear(data_dir);
            Err(e)
        }
    }
}

/// What `qrgate check-data` found.
#[derive(Debug, Serialize)]
pub struct DataCheck {
    pub clean: bool,
    pub data_dir: PathBuf,
    /// The position sled's checkpoint holds.
    pub checkpoint: u64,
    pub journal_first: Option<u64>,
    pub journal_last: Option<u64>,
    pub journal_segments: usize,
    /// Frames after the checkpoint (what a start replays).
    pub replayed_frames: u64,
    pub accounts: usize,
    pub entries: usize,
    pub transfers: usize,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
}

/// Where a books finding is: its account's record, when it names one.
fn books_place(finding: &str) -> String {
    match finding
        .strip_prefix("account ")
        .and_then(|r| r.split_once(": "))
    {
        Some((account, _)) => format!("key la/{account}"),
        None => "the ledger".into(),
    }
}

/// `qrgate check-data`: check a data dir no server has open. `Err` when
/// the check cannot run at all (not a data dir, in use, unreadable).
pub fn check_data(data_dir: &Path) -> Result<DataCheck, String> {
    let key = crate::keys::journal_key(data_dir)
        .map_err(|e| format!("cannot read the data dir's secret: {e}"))?;
    let mut findings = Vec::new();
    if let Err(e) = crate::keys::ring_files(data_dir) {
        findings.push(Finding::new("keys", e.to_string()));
    }
    let i = store::inspect(data_dir, key).map_err(|e| e.to_string())?;
    findings.extend(i.findings);
    let report = books::check(&books::Books {
        accounts: &i.books.accounts,
        entries: &i.books.entries,
        journal: &i.books.journal,
        in_flight: &i.books.in_flight,
    });
    findings.extend(i.books.chain_findings);
    findings.extend(
        report
            .findings
            .iter()
            .map(|f| Finding::new(books_place(f), f.clone())),
    );
    Ok(DataCheck {
        clean: findings.is_empty(),
        data_dir: data_dir.to_path_buf(),
        checkpoint: i.checkpoint,
        journal_first: i.journal.map(|j| j.0),
        journal_last: i.journal.map(|j| j.1),
        journal_segments: i.segments,
        replayed_frames: i.replayed,
        accounts: report.accounts,
        entries: report.entries,
        transfers: report.transfers,
        findings,
        notes: i.notes,
    })
}

/// The report as people read it.
pub fn render(c: &DataCheck) -> String {
    let mut s = format!(
        "data dir {}\ncheckpoint at position {}; journal {}; {} frame(s) after the checkpoint\nledger: {} account(s), {} entr{}, {} transfer(s)\n",
        c.data_dir.display(),
        c.checkpoint,
        match (c.journal_first, c.journal_last) {
            (Some(f), Some(l)) => format!("{f}..={l} in {} segment(s)", c.journal_segments),
            _ => format!("empty ({} segment(s))", c.journal_segments),
        },
        c.replayed_frames,
        c.accounts,
        c.entries,
        if c.entries == 1 { "y" } else { "ies" },
        c.transfers,
    );
    for n in &c.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    for f in &c.findings {
        s.push_str(&format!("FINDING {f}\n"));
    }
    s.push_str(if c.clean {
        "clean\n"
    } else {
        "findings: the data dir does not hold together\n"
    });
    s
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup directory (written by `qrgate backup`).
    #[arg(long)]
    pub from: PathBuf,
    /// The data dir to create: missing or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct CheckDataArgs {
    /// The data dir to check (no server may have it open).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `qrgate restore`: `Ok(true)` restored and clean, `Ok(false)` restored
/// but `check-data` finds something in it (printed).
pub fn restore_cmd(a: RestoreArgs) -> Result<bool, String> {
    let (m, check) = restore(&a.from, &a.data_dir)?;
    println!(
        "restored {} into {}: journal position {}, {} files, {:.1} MB",
        a.from.display(),
        a.data_dir.display(),
        m.position,
        m.files.len(),
        m.bytes() as f64 / 1e6
    );
    print!("{}", render(&check));
    Ok(check.clean)
}

/// `qrgate check-data`: `Ok(true)` clean, `Ok(false)` findings (printed).
pub fn check_data_cmd(a: CheckDataArgs) -> Result<bool, String> {
    let c = check_data(&a.data_dir)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&c).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render(&c));
    }
    Ok(c.clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backup_runs_at_a_time() {
        let storage = Storage::in_memory().expect("store");
        let _held = RUNNING.lock().expect("lock");
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("b");
        let r = run(&storage, Path::new("/nonexistent"), &target);
        assert!(matches!(r, Err(BackupError::Running)), "{r:?}");
        assert!(!target.exists(), "nothing written");
    }

    #[test]
    fn a_books_finding_names_its_accounts_record() {
        assert_eq!(
            books_place("account wallet:u_x: totals differ"),
            "key la/wallet:u_x"
        );
        assert_eq!(books_place("posted totals sum to 1"), "the ledger");
    }

    #[test]
    fn a_backup_without_its_manifest_or_with_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = verify(dir.path()).expect_err("no manifest");
        assert!(err.contains("not a complete backup"), "{err}");
        std::fs::write(dir.path().join("secret.key"), "k").expect("write");
        let m = Manifest {
            format: FORMAT.into(),
            created_at: 0,
            version: "0".into(),
            position: 0,
            checkpoint: 0,
            files: vec![FileCopy {
                path: "secret.key".into(),
                bytes: 1,
                blake3: blake3::hash(b"k").to_hex().to_string(),
            }],
        };
        let write = |m: &Manifest| {
            std::fs::write(
                dir.path().join(MANIFEST),
                serde_json::to_vec(m).expect("json"),
            )
            .expect("write")
        };
        write(&m);
        assert!(verify(dir.path()).is_ok());
        std::fs::write(dir.path().join("secret.key"), "j").expect("write");
        let err = verify(dir.path()).expect_err("changed");
        assert!(err.contains("does not match the manifest"), "{err}");
        let mut outside = m.clone();
        outside.files[0].path = "../secret.key".into();
        write(&outside);
        assert!(verify(dir.path()).is_err(), "paths stay inside the backup");
    }
}
