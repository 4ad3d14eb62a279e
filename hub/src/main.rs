//! The `hub` command: parse the command line, load the configuration, start logging, and
//! hand over to the library. Errors print with their causes and exit non-zero.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use hub::config::Config;

/// Hearth: a local-first home hub.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); see hub.example.toml.
    #[arg(long, short, env = "HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, env = "HUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Run,
    /// Manage devices in the data directory.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Check that the consent access log's hash chain is intact (exit 1 if not). Works
    /// while the hub runs.
    VerifyLog {
        /// Also hold the log to a checkpoint a data subject kept (the file downloaded from
        /// the Sharing page, or its `jws` alone): a log rewritten since no longer matches.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Add a device and print its credentials (shown once).
    Add { name: String },
    /// List devices.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,webrtc_dtls=error,webrtc_util=error")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let listeners = hub::Listeners::bind(&config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            hub::run(config, listeners, hub::clock::Clock::system(), shutdown).await
        }
        Command::Device { command } => device_command(&config, command).await,
        Command::VerifyLog { checkpoint } => {
            let store = hub::open_store(&config, hub::clock::Clock::system().now_ms()).await?;
            let checkpoint = match checkpoint {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)?;
                    // The file as downloaded (JSON with `jws`), or the JWS alone.
                    let jws = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["jws"].as_str().map(str::to_owned))
                        .unwrap_or(text);
                    let public = store.receipt_signer(hub::clock::Clock::system().now_ms()).await?.public_key();
                    Some(hub::consent::log::Checkpoint::read(&jws, &public)?)
                }
                None => None,
            };
            let check = store.verify_access_log(checkpoint.as_ref()).await?;
            store.close().await;
            let n = check.chain?;
            println!("access log intact: {n} entries verified");
            if let (Some(held), Some(checkpoint)) = (check.checkpoint, &checkpoint) {
                held?;
                println!("and it matches the checkpoint (entry {})", checkpoint.seq);
            }
            Ok(())
        }
    }
}

async fn device_command(config: &Config, command: DeviceCommand) -> anyhow::Result<()> {
    let store = hub::open_store(config, hub::clock::Clock::system().now_ms()).await?;
    match command {
        DeviceCommand::Add { name } => {
            let creds = hub::devices::add(&store, &name, hub::clock::Clock::system().now_ms()).await?;
            println!("device id: {}\nsecret:    {}", creds.id, creds.secret.as_str());
            println!("(the secret is shown once; regenerate it in the UI if it is lost)");
            let (port, cafile) = match config.mqtt.tls {
                true => (
                    config.mqtt.tls_listen.port(),
                    format!(" --cafile {}", config.data_dir.join("tls/ca.pem").display()),
                ),
                false => (config.mqtt.listen.port(), String::new()),
            };
            println!(
                "try: mosquitto_pub -h HUB_ADDRESS -p {port}{cafile} -u {} -P '{}' -q 1 -t hearth/{}/temperature -m 21.5",
                creds.id,
                creds.secret.as_str(),
                creds.id
            );
        }
        DeviceCommand::List => {
            for d in store.devices().await? {
                println!("{}\t{}", d.id, d.name);
            }
        }
    }
    store.close().await;
    Ok(())
}

/// Ctrl-C or SIGTERM: stop taking input, commit what was accepted, exit.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else { return };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping: finishing in-flight commits");
    shutdown.cancel();
}
