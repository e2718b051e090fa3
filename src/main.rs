//! `byok-proxy`: serve, check a config, hash a gateway key, or re-seal a
//! database store's secrets under the current master key.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A bring-your-own-key gateway for LLM providers.
#[derive(Parser)]
#[command(name = "byok-proxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM/SIGINT; SIGHUP or a change of the file reloads it.
    Serve(ConfigArg),
    /// Validate a config: exit 0, or non-zero naming each bad entry.
    Check(ConfigArg),
    /// Read one gateway key from stdin and print its SHA-256 hash for the config.
    HashKey,
    /// Re-seal every credential of the config's database store under
    /// BYOK_MASTER_KEY (reading those sealed under BYOK_MASTER_KEY_PREVIOUS),
    /// and say whether the previous key is still needed.
    Reseal(ConfigArg),
}

#[derive(Args)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short, env = "BYOK_PROXY_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(arg) => serve(arg.config),
        Command::Check(arg) => check(arg.config),
        Command::HashKey => hash_key(),
        Command::Reseal(arg) => reseal(arg.config),
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let filter = EnvFilter::try_from_env("BYOK_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("BYOK_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // The access log is buffered per thread and written in batches (every
    // 50 ms at most), any other line at once; `_flush` writes out what is
    // left when serve returns.
    let (writer, _flush) = byok_proxy::server::logs::Logs::stderr();
    let logs = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter);
    if json {
        // One JSON object per line, fields flattened: for log shippers.
        logs.json().flatten_event(true).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    // The control plane (signals, reloads, the admin API, the store): the
    // proxy's requests are served on threads of their own, one a core.
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread().worker_threads(1))
    else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(byok_proxy::server::run(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds a runtime with every driver, or says why not on stderr.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("byok-proxy: cannot start the runtime: {e}"))
        .ok()
}

fn check(path: PathBuf) -> ExitCode {
    match byok_proxy::Config::load(&path)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            byok_proxy::Snapshot::from_config(&c).map_err(|e| e.to_string())?;
            Ok(c)
        }) {
        Ok(config) => {
            let (api_keys, credentials) = config.counts();
            println!(
                "{}: ok ({api_keys} api keys, {credentials} credentials)",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: invalid config\n{e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn reseal(path: PathBuf) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("BYOK_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let done = match runtime.block_on(byok_proxy::server::reseal(&path)) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("byok-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "re-sealed {} credentials under master key {}; {} already were",
        done.resealed, done.key_id, done.current
    );
    if done.refused.is_empty() {
        println!("every credential is sealed under BYOK_MASTER_KEY: BYOK_MASTER_KEY_PREVIOUS can be removed");
        return ExitCode::SUCCESS;
    }
    for e in &done.refused {
        eprintln!("byok-proxy: {e}");
    }
    eprintln!(
        "byok-proxy: {} credentials do not open and were not re-sealed; they are not used",
        done.refused.len()
    );
    ExitCode::FAILURE
}

fn hash_key() -> ExitCode {
    let mut raw = zeroize::Zeroizing::new(Vec::new());
    if let Err(e) = std::io::stdin().read_to_end(&mut raw) {
        eprintln!("byok-proxy: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let key = raw
        .strip_suffix(b"\r\n")
        .or_else(|| raw.strip_suffix(b"\n"))
        .unwrap_or(&raw);
    if key.is_empty() {
        eprintln!("byok-proxy: no key on stdin");
        return ExitCode::FAILURE;
    }
    println!("{}", byok_proxy::KeyHash::of(key).to_hex());
    ExitCode::SUCCESS
}

/// jemalloc, set up by `.cargo/config.toml`: freed pages go back to the system
/// within a second or so, where glibc kept what every reload freed.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
