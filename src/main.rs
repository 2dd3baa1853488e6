use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use qrgate::config::Config;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "qrgate",
    version,
    about = "QR invitations and the join workflow behind a scan"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve {
        /// Config file (default: ./config.toml if present, else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check the config file (with the environment's overrides) and exit: 0
    /// when the server would start with it, 1 with the reason.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create a new signing key in the data dir; it signs new invitations from
    /// the next start, and older keys keep verifying until their invitations expire.
    Keygen {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Drive load against a server (see docs/capacity.md).
    Load(Box<qrgate_load::LoadArgs>),
    /// Fill a data dir straight through storage, for the load harness's
    /// memory scenario (prints the group ids).
    #[command(hide = true)]
    Seed(qrgate::seed::SeedArgs),
    /// Run the payment-provider simulator (tests and local development).
    Paysim(qrgate_paysim::PaysimArgs),
    /// Match the provider's daily bill against our payouts (calls a running
    /// server's admin API); exit status 2 when there are breaks.
    Reconcile(qrgate::admin_cli::ReconcileArgs),
    /// Check a closed red packet's split: its revealed seed against the
    /// commitment, and every claim against the share the seed gives.
    VerifyPacket(qrgate::admin_cli::VerifyPacketArgs),
    /// Back up a running server (calls its admin API): a consistent copy
    /// of its data into DIR on its host, without stopping writes.
    Backup(qrgate::admin_cli::BackupArgs),
    /// Put a backup in place as a new data dir, checking it first.
    Restore(qrgate::backup::RestoreArgs),
    /// Check a data dir offline (no server running on it): journal frames,
    /// checkpoint against journal, ledger hash chain and books. Exit 0
    /// clean, 2 findings, 1 when it cannot run.
    CheckData(qrgate::backup::CheckDataArgs),
    /// Export operator reports from a running server.
    #[command(subcommand)]
    Report(qrgate::admin_cli::ReportKind),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,actix_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(None),
        Some(Command::Serve { config }) => serve(config),
        Some(Command::Keygen { config }) => keygen(config),
        Some(Command::CheckConfig { config }) => Config::load(config.as_deref())
            .map(|_| println!("config ok"))
            .map_err(|e| e.to_string()),
        Some(Command::Load(args)) => qrgate_load::run(*args),
        Some(Command::Seed(args)) => qrgate::seed::run(args),
        Some(Command::Reconcile(args)) => match qrgate::admin_cli::reconcile(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(2),
            Err(e) => Err(e),
        },
        Some(Command::Report(kind)) => qrgate::admin_cli::report(kind),
        Some(Command::Backup(args)) => qrgate::admin_cli::backup(args),
        Some(Command::Restore(args)) => match qrgate::backup::restore_cmd(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(2),
            Err(e) => Err(e),
        },
        Some(Command::CheckData(args)) => match qrgate::backup::check_data_cmd(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(2),
            Err(e) => Err(e),
        },
        Some(Command::VerifyPacket(args)) => qrgate::admin_cli::verify_packet(args),
        Some(Command::Paysim(args)) => qrgate_paysim::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qrgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(path: Option<PathBuf>) -> Result<(), String> {
    let cfg = Config::load(path.as_deref()).map_err(|e| e.to_string())?;
    let kid = qrgate::keys::generate(&cfg.data_dir).map_err(|e| e.to_string())?;
    println!(
        "new signing key {kid} in {}; it becomes active at the next start",
        cfg.data_dir.display()
    );
    Ok(())
}

fn serve(path: Option<PathBuf>) -> Result<(), String> {
    let cfg = Config::load(path.as_deref()).map_err(|e| e.to_string())?;
    actix_web::rt::System::new().block_on(async move {
        let app = qrgate::startup::build(cfg).map_err(|e| e.to_string())?;
        // Tests and scripts read this line to find the port when binding to :0.
        println!("qrgate listening on http://{}", app.addr);
        let _ = std::io::stdout().flush();
        tracing::info!(addr = %app.addr, "serving");
        let result = app.server.await.map_err(|e| e.to_string());
        // Scan counts are kept in memory for up to a second.
        if let Err(e) = app.codes.flush_scans().await {
            tracing::warn!(error = %e, "scan counts not stored at shutdown");
        }
        app.storage.close().map_err(|e| e.to_string())?;
        tracing::info!("stopped cleanly");
        result
    })
}
